"""``--executor process`` loses one of its two processes (SIGKILL), in a real CLI process.

* the measuring process killed once ``k`` conditions are recorded: the study ends with one
  ``Error:`` line naming it and ``--resume``, the parent run FAILED; ``--resume`` completes;
* the model process (the CLI) killed while it holds conditions still to run (the gated
  test backend: one condition recorded, the next one's model call waiting): the measuring
  process (which holds the tracking store) marks the study FAILED and exits by itself (no
  orphan, no run left RUNNING); ``--resume`` completes;
* Ctrl-C at the terminal (SIGINT to the whole process group, the measuring process
  included) once a condition is recorded: exit 130, the study KILLED with no run left
  RUNNING, ``--resume`` completes;
* the sqlite store locked for a while: the measuring process' outage lines reach the
  CLI's terminal and the study finishes by itself.

Kills land at a point of the study's progress (conditions found FINISHED in the store),
never after a sleep. Completed means one parent, one FINISHED child per condition, and
the metrics of an uninterrupted run of the same executor.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from harness import INTERVALS, census, run_to_the_end, study_cmd, wait_for_finished
from test_outage import BACK, OUTAGE, Lines

DOUBLES = Path(__file__).resolve().parents[1] / "doubles"
REPO = DOUBLES.parents[1]


def measuring_processes(parent: int, marker: str = "spawn_main") -> list[int]:
    """Pids of the ``spawn`` children of ``parent`` (``marker="resource_tracker"``: its
    shared-memory tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and marker in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float = 60) -> bool:
    """Whether ``pid`` ended within ``timeout`` s (polled; the bound only stops a hang)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


def process_cmd(uri: str, audio: str) -> list[str]:
    return study_cmd(uri, audio, "--executor", "process")


@pytest.fixture(scope="module")
def process_metrics(tmp_path_factory, music_3s):
    """Metrics of the uninterrupted study with ``--executor process`` (a real process)."""
    tmp = tmp_path_factory.mktemp("reference")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    found = run_to_the_end(process_cmd(uri, str(music_3s)), tmp, uri)
    assert found.intact, found
    return found.metrics


def _resume_completes(cmd: list[str], cwd, uri: str, metrics: dict,
                      env: dict | None = None) -> None:
    found = run_to_the_end(cmd + ["--resume"], cwd, uri, env=env)
    assert found.intact, found
    assert found.metrics == metrics


def test_killing_the_measuring_process_fails_the_study_in_one_line_then_resume(
        tmp_path, music_3s, process_metrics):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = process_cmd(uri, str(music_3s))
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        n = wait_for_finished(uri, proc, 1)
        assert 1 <= n < len(INTERVALS), "the study ended before the measuring process was killed"
        (child,) = measuring_processes(proc.pid)
        os.kill(child, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err[-2000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, err[-2000:]
    assert f"measuring process (pid {child}) died (killed by SIGKILL)" in errors[0]
    assert "--resume" in errors[0]
    found = census(uri, len(INTERVALS))
    assert found.parent_status == "FAILED" and n <= found.finished < len(INTERVALS)
    _resume_completes(cmd, tmp_path, uri, process_metrics)


def gated_cmd(uri: str, audio: str) -> list[str]:
    """The study on the gated test backend (``tests/doubles/gated``): the model process
    vamps once, then waits for the file ``$VAMPSTUDY_TEST_GATE``."""
    return process_cmd(uri, audio) + ["--backend", "gated:GatedBackend", "--device", "cpu"]


def gated_env(gate: Path) -> dict:
    return {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
            "PYTHONPATH": os.pathsep.join([str(REPO), str(DOUBLES)]),
            "VAMPSTUDY_TEST_GATE": str(gate)}


@pytest.fixture(scope="module")
def gated_metrics(tmp_path_factory, music_3s):
    """Metrics of the uninterrupted study on the gated backend, its gate open."""
    tmp = tmp_path_factory.mktemp("gated")
    (tmp / "gate").touch()
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    found = run_to_the_end(gated_cmd(uri, str(music_3s)), tmp, uri, env=gated_env(tmp / "gate"))
    assert found.intact, found
    return found.metrics


def test_killing_the_model_process_ends_the_measuring_one_then_resume(
        tmp_path, music_3s, gated_metrics):
    # The model process vamps the first condition, then holds on the closed gate: it is
    # killed while three conditions are still its to run (with an ungated model, the model
    # process may already have handed every trial over; the measuring process then finishes
    # the study, as it should, and there is nothing to fail).
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    gate = tmp_path / "gate"
    cmd, env = gated_cmd(uri, str(music_3s)), gated_env(gate)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert wait_for_finished(uri, proc, 1) == 1, "the study ended before a condition"
        children = measuring_processes(proc.pid)
        assert len(children) == 1
        children += measuring_processes(proc.pid, "resource_tracker")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    for pid in children:   # the measuring process, then the tracker of its shared memory
        assert wait_gone(pid), f"process {pid} outlived the study process"
    found = census(uri, len(INTERVALS))
    # the measuring process, which holds the store, closed the study FAILED before it ended
    assert (found.parent_status, found.running, found.finished) == ("FAILED", 0, 1), found
    gate.touch()
    _resume_completes(cmd, tmp_path, uri, gated_metrics, env)


def test_a_locked_store_is_announced_by_the_measuring_process_and_waited_out(
        tmp_path, music_3s, process_metrics):
    path = tmp_path / "mlflow.db"
    uri = f"sqlite:///{path}"
    proc = subprocess.Popen(process_cmd(uri, str(music_3s)), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = Lines(proc)
    try:
        assert 1 <= wait_for_finished(uri, proc, 1) < len(INTERVALS), "the study ended first"
        db = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        while True:   # the measuring process may be inside a write: take the lock after it
            try:
                db.execute("BEGIN EXCLUSIVE")
                break
            except sqlite3.OperationalError:
                assert proc.poll() is None, "the study ended before the store was locked"
        try:
            line = lines.wait_for(OUTAGE)
        finally:
            db.execute("ROLLBACK")
            db.close()
        assert "its database is locked" in line and "--tracking-patience" in line
        seen = lines.rest()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "\n".join(seen[-40:])
    assert any(BACK in s for s in seen), seen
    assert not [s for s in seen if s.startswith("Error:") or "Traceback" in s]
    found = census(uri, len(INTERVALS))
    assert found.intact and found.metrics == process_metrics, found


def test_ctrl_c_to_the_process_group_kills_the_study_cleanly_then_resume(
        tmp_path, music_3s, process_metrics):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = process_cmd(uri, str(music_3s))
    # its own process group, SIGINT at its default (a background test run ignores it)
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        n = wait_for_finished(uri, proc, 1)
        assert 1 <= n < len(INTERVALS), "the study ended before it was interrupted"
        children = measuring_processes(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)   # as a terminal's Ctrl-C: every process of the group
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err and "Traceback" not in err
    assert all(wait_gone(pid) for pid in children)
    found = census(uri, len(INTERVALS))
    assert found.parent_status == "KILLED" and found.running == 0 and found.finished >= n
    _resume_completes(cmd, tmp_path, uri, process_metrics)
