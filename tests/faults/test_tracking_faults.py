"""Tracking faults: bad URIs, names that look like paths, where artifacts go, read-only and
full artifact locations, `vampstudy ui` as a server command, two studies on one store.

Every failure must be one ``Error:`` line naming the input and the fix (no traceback), and
leave no RUNNING run behind.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from vampstudy.cli import main
from vampstudy.errors import ConfigError, TrackingError
from vampstudy import tracking
from vampstudy.stores import artifact_root, check_tracking_uri
from vampstudy.tracking import Tracker

from harness import one_line_error, study_cmd

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args])
    return invoke


def all_runs(uri: str) -> list:
    """Every run of a store, read with a bare MlflowClient (no write probe: the disk may be full)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, max_results=5000) if exps else []


def running_runs(uri: str) -> list:
    return [r for r in all_runs(uri) if r.info.status == "RUNNING"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ URIs
@pytest.mark.parametrize("uri,needles", [
    ("htp://x", ["'htp://x'", "unsupported scheme 'htp'", "sqlite:///"]),
    ("http://127.0.0.1:99999", ["invalid port", "1-65535"]),
    ("http://", ["names no server"]),
    ("sqlite://", ["in-memory"]),
    ("file:///tmp/old-mlruns", ["old file store", "sqlite:////tmp/old-mlruns/mlflow.db"]),
])
def test_malformed_or_unsupported_uris_are_one_line(cli, uri, needles):
    one_line_error(cli("show", "--tracking-uri", uri), *needles)


def test_a_folder_given_as_uri_says_which_sqlite_uri_to_use(cli, tmp_path):
    (tmp_path / "myruns").mkdir()
    line = one_line_error(cli("show", "--tracking-uri", "./myruns"), "is a folder",
                          f"sqlite:///{tmp_path.resolve() / 'myruns' / 'mlflow.db'}")
    assert list((tmp_path / "myruns").iterdir()) == [], line  # nothing was created there
    one_line_error(cli("show", "--tracking-uri", "runs.db"), "is a file path",
                   f"sqlite:///{tmp_path.resolve() / 'runs.db'}")


def test_unreachable_server_names_the_uri_and_the_fix(cli):
    uri = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    one_line_error(cli("show", "--tracking-uri", uri), f"cannot reach the MLflow tracking store "
                   f"at {uri}", "start the server")
    assert time.monotonic() - started < 60  # no minutes of HTTP retries


def test_check_tracking_uri_accepts_what_mlflow_accepts():
    for uri in ("sqlite:///mlruns/mlflow.db", "sqlite:////abs/x.db", "http://h:5000",
                "https://mlflow.example.org", "postgresql://u@h/db", "postgresql+psycopg://u@h/db",
                "mysql://u@h/db", "databricks"):
        assert check_tracking_uri(uri) == uri
    with pytest.raises(TrackingError):
        check_tracking_uri("databricx://x")


# ------------------------------------------------------- names and places
@pytest.mark.parametrize("name", ["../../etc", "/etc/passwd", "a/b/c", "..", "名前 with spaces ✓",
                                  "x" * 500, "C:\\temp"])
def test_experiment_names_never_become_paths(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    tracker = Tracker(uri)
    exp = tracker.experiment_id(name)
    assert tracker.experiment_id(name) == exp  # found again by name
    run = tracker.start_run(exp, "r", {})
    tracker.log_text(run, "hello", "notes/x.txt")
    root = (tmp_path / "store" / "artifacts").resolve()
    location = tracker.client.get_experiment(exp).artifact_location
    assert location == f"{root.as_uri()}/{exp}"
    written = [p for p in tmp_path.rglob("x.txt")]
    assert len(written) == 1 and written[0].resolve().is_relative_to(root / exp)
    assert not (tmp_path / "mlruns").exists()


def test_empty_and_overlong_experiment_names_are_refused(tracker, cli):
    for bad in ("", "   ", "x" * 501):
        with pytest.raises(ConfigError, match="--experiment"):
            tracker.experiment_id(bad)
    result = cli("run", "periodic", "--backend", "reference", "--experiment", "")
    one_line_error(result, "'--experiment'", "the name is empty", code=2)
    assert not (Path.cwd() / "mlruns").exists()  # refused before any store was touched


def test_artifacts_go_beside_any_sqlite_database(tmp_path, monkeypatch):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    db = tmp_path / "place" / "runs.db"
    tracker = Tracker(f"sqlite:///{db}")
    assert tracker.artifact_root == (db.parent / "artifacts").resolve().as_uri()
    assert artifact_root("sqlite:///rel/x.db") == (elsewhere / "rel" / "artifacts").resolve().as_uri()
    run = tracker.start_run(tracker.experiment_id("e"), "r", {})
    tracker.log_bytes(run, b"abc", "audio/x.bin")
    assert len(list((db.parent / "artifacts").rglob("x.bin"))) == 1
    assert list(elsewhere.iterdir()) == []  # nothing in the current folder


# ------------------------------------------------ read-only and full disks
@contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    """A real small (or read-only) file system at ``path``; None where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    ok = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode == 0
    try:
        yield path if ok else None
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_read_only_artifact_location_is_refused_up_front(cli, tmp_path):
    store = tmp_path / "ro"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    with tmpfs(store / "artifacts", "1m", read_only=True) as mounted:
        if mounted is None:
            if os.geteuid() == 0:
                pytest.skip("root without mount privileges: no way to make a read-only folder")
            (store / "artifacts").chmod(0o555)
        one_line_error(cli("show", "--tracking-uri", uri), "cannot write artifacts to",
                       str(store / "artifacts"), "read-only")


def test_artifact_location_that_is_a_file_is_refused_up_front(cli, tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "artifacts").write_text("not a folder")
    one_line_error(cli("show", "--tracking-uri", f"sqlite:///{tmp_path / 's' / 'mlflow.db'}"),
                   "cannot write artifacts to", "artifacts")


def test_full_artifact_disk_fails_in_one_line_and_leaves_nothing_running(
        cli, tmp_path, music_3s, monkeypatch):
    store = tmp_path / "full"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    with tmpfs(store / "artifacts", "400k") as mounted:
        if mounted is None:  # no mount here: the disk fills after the up-front probe
            from mlflow.store.artifact import local_artifact_repository as lar

            def full(*args, **kwargs):
                raise OSError(errno.ENOSPC, "No space left on device")
            monkeypatch.setattr(lar.LocalArtifactRepository, "log_artifact", full)
            monkeypatch.setattr(lar.LocalArtifactRepository, "log_artifacts", full)
            # an open run's files are written straight into its local artifact folder
            monkeypatch.setattr(tracking, "write_artifact_files", full)
        result = cli("run", "periodic", "--backend", "reference", "--audio", music_3s,
                     "--intervals", "3,7,13,30", "--tracking-uri", uri)
        line = one_line_error(result, "no space left")
        assert "--resume" in line
        runs = all_runs(uri)
        assert runs and {r.info.status for r in runs} <= {"FAILED", "FINISHED", "KILLED"}
        assert any(r.info.status == "FAILED" for r in runs)


# --------------------------------------------------------------- vampstudy ui
def test_ui_port_out_of_range_is_a_usage_error(cli):
    result = cli("ui", "--port", "99999")
    assert result.exit_code == 2 and "99999 is not in the range 1<=x<=65535" in result.output
    assert "open http" not in result.output


def test_ui_busy_port_is_an_error_before_any_url(cli, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("ui", "--port", port, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    one_line_error(result, f"port {port} on 127.0.0.1 is already in use", "--port")
    assert "http://" not in result.output


def _alive(pids) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to list process trees")
def test_sigterm_to_ui_stops_the_whole_server_group(tmp_path):
    port = closed_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vampstudy.cli", "ui", "--port", str(port), "--tracking-uri",
         f"sqlite:///{tmp_path / 'm.db'}"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 300
        line = ""
        while "open http" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert "open http://127.0.0.1:" in line, "vampstudy ui did not report serving"
        family = _descendants(proc.pid)
        assert family, "the MLflow server runs as a child"
        groups = {os.getpgid(p) for p in _alive(family)}
        assert os.getpgid(proc.pid) not in groups  # the server has its own process group
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        time.sleep(0.5)
        assert _alive(family) == [], "server processes survived vampstudy ui"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _alive(_descendants(proc.pid)):
            os.kill(pid, signal.SIGKILL)


def test_ui_keeps_the_server_log_off_the_terminal_and_ends_with_the_url(tmp_path):
    port = closed_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vampstudy.cli", "ui", "--port", str(port), "--tracking-uri",
         f"sqlite:///{tmp_path / 'm.db'}"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path)})
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            lines.append(proc.stdout.readline().rstrip("\n"))
            if "open http" in lines[-1]:
                break
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert lines and lines[-1].startswith(f"ready — open http://127.0.0.1:{port}/"), lines
    assert lines[-1].endswith("workflowType=machine_learning") or lines[-1].endswith(f"{port}/")
    log = tmp_path / f"vampstudy-ui-{port}.log"
    assert f"its log: {log}" in lines[0], lines
    printed = "\n".join(lines) + rest
    assert "INFO" not in printed and "uvicorn" not in printed.lower(), printed
    assert "http://127.0.0.1" not in "\n".join(lines[:-1])   # the only URL is the ready view's
    assert log.read_text().strip(), "the server's messages went nowhere"


def test_mlflow_keeps_the_log_level_the_cli_chose():
    """Importing mlflow resets its logger to INFO; vampstudy.tracking puts back the level the
    application set (the CLI: ERROR, INFO with -v), so `vampstudy run` shows no MLflow INFO."""
    code = ("import logging; logging.getLogger('mlflow').setLevel(logging.ERROR); "
            "import vampstudy.tracking; print(logging.getLogger('mlflow').level)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [str(40)]


# ------------------------------------------------------------- concurrency
def test_two_studies_at_once_on_one_new_default_store(tmp_path, music_3s):
    """Both create the store and the experiment at the same moment; both finish in full."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cmds = [study_cmd("", str(music_3s), "--seed", str(seed), intervals=(3, 13))
            for seed in (1, 2)]
    cmds = [[a for a in c if a not in ("--tracking-uri", "")] for c in cmds]  # the default store
    procs = [subprocess.Popen(c, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for c in cmds]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = tracker.experiment_id("periodic", create=False)
    parents = tracker.find_runs(exp, {"vampstudy.role": "study"}, ("FINISHED",))
    children = tracker.find_runs(exp, {"vampstudy.role": "condition"}, ("FINISHED",))
    assert len(parents) == 2 and len(children) == 4
    assert sorted(c.data.params["seed"] for c in children) == ["1", "1", "2", "2"]
    assert len(tracker.client.search_experiments()) == 2  # Default + periodic, created once
