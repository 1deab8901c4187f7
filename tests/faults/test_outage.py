"""A tracking store that stops answering mid-study, with MLflow's default settings.

No MLFLOW_HTTP_REQUEST_* variable is set here (a user has none): the study must say so
within seconds, keep going, and record everything when the store is back — or stop with
one line after ``--tracking-patience``. Every step waits for the study to reach a point
(conditions recorded, the outage line printed); the outage length is imposed, and the
outcome does not depend on it.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import sqlite3
import subprocess
import threading
import time

import pytest

from vampstudy.patience import PatientSink, StoreOutage

from harness import INTERVALS, census, freeze_after_finished, run_to_the_end, study_cmd

OUTAGE = "the tracking store does not answer since"
BACK = "the tracking store answers again"


@pytest.fixture(autouse=True)
def mlflow_defaults(monkeypatch):
    for key in list(os.environ):
        if key.startswith("MLFLOW_HTTP_REQUEST"):
            monkeypatch.delenv(key)


class Lines:
    """What a study process prints (stdout and stderr), line by line, as it comes."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.seen, self._q = proc, [], queue.Queue()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, needle: str, timeout: float = 300) -> str:
        """The first line holding ``needle``; fails if the process ends (or time runs out) first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._q.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.seen.append(line)
            if needle in line:
                return line
        pytest.fail(f"no line with {needle!r}; stderr so far:\n" + "\n".join(self.seen[-40:]))

    def rest(self, timeout: float = 600) -> list[str]:
        self.proc.wait(timeout=timeout)
        self._t.join(timeout=30)
        while not self._q.empty():
            line = self._q.get()
            if line is not None:
                self.seen.append(line)
        return self.seen


def _start(cmd, cwd) -> tuple[subprocess.Popen, Lines]:
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1",
                                                 "PYTHONFAULTHANDLER": "1"})
    return proc, Lines(proc)


def _stop(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, music_3s):
    """Metrics of the uninterrupted study (a real process)."""
    tmp = tmp_path_factory.mktemp("reference")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    return run_to_the_end(study_cmd(uri, str(music_3s)), tmp, uri).metrics


def _one_outage_line_then_one_error(proc, seen: list[str]) -> str:
    """The study gave up: exit 1, no traceback, one outage line, then one ``Error:`` line
    (returned)."""
    assert proc.returncode == 1, "\n".join(seen[-40:])
    assert "Traceback" not in "\n".join(seen)
    outage = [i for i, s in enumerate(seen) if OUTAGE in s]
    errors = [i for i, s in enumerate(seen) if s.startswith("Error:")]
    assert len(outage) == 1 and len(errors) == 1 and outage[0] < errors[0], seen
    return seen[errors[0]]


def _until(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


# ------------------------------------------------------------ the mechanism
def test_patient_sink_records_in_order_bounded_and_gives_up_after_patience():
    away = threading.Event()
    away.set()
    recorded = []

    def record(item):
        if away.is_set():
            raise ConnectionError("refused")
        recorded.append(item)

    lines = []
    sink = PatientSink(record, lambda: "no answer" if away.is_set() else None, patience=60,
                       max_waiting=3, notify=lines.append, notice_after=0.2)
    for i in range(3):
        sink(i)
    _until(lambda: any(OUTAGE in line for line in lines), "the outage line")
    full = threading.Thread(target=sink, args=(3,), daemon=True)
    full.start()
    full.join(1.0)
    assert full.is_alive(), "a 4th result was taken although 3 already wait (the memory bound)"
    assert len(sink.waiting) == 3 and recorded == []
    away.clear()                      # the store is back
    full.join(60)
    sink.drain()
    assert recorded == [0, 1, 2, 3]  # everything, in order
    assert sink.most_waiting == 3
    assert any(BACK in line for line in lines), lines
    sink.close()

    gone = PatientSink(lambda item: (_ for _ in ()).throw(ConnectionError("refused")),
                       lambda: "no answer", patience=1.0, max_waiting=2, notify=lines.append)
    gone("a")
    with pytest.raises(StoreOutage, match=r"has not answered since .*\(1 s, --tracking-patience\)"):
        gone.drain()
    gone.close()


def test_a_real_error_while_the_store_answers_propagates_at_once():
    def record(item):
        raise OSError(28, "No space left on device")

    sink = PatientSink(record, lambda: None, patience=300)
    sink("x")
    started = time.monotonic()
    with pytest.raises(OSError, match="No space left"):
        sink.drain()
    assert time.monotonic() - started < 30   # not retried for the patience
    sink.close()


# ------------------------------------------------------------ sqlite
def test_a_vanished_or_replaced_database_file_takes_no_write_and_is_named(tmp_path):
    import shutil

    from vampstudy.tracking import Tracker

    path = tmp_path / "mlflow.db"
    tracker = Tracker(f"sqlite:///{path}")
    exp = tracker.experiment_id("x")
    run = tracker.start_run(exp, "a", {})
    away = tmp_path / "away.db"
    os.rename(path, away)
    assert tracker.probe() == f"its database file {path} is gone"
    with pytest.raises(Exception, match="refused a write: its database file .* is gone"):
        tracker.start_run(exp, "b", {})
    assert not path.exists(), "an empty database was created in the vanished one's place"
    shutil.copy(away, path)                 # another file at the path: not the store's
    assert "was replaced" in tracker.probe()
    with pytest.raises(Exception, match="was replaced"):
        tracker.finish(run)
    os.replace(away, path)                  # the original is back
    assert tracker.probe() is None
    tracker.finish(run)
    assert tracker.start_run(exp, "b", {}) and len(tracker.find_runs(exp, {})) == 2
    assert tracker.get_run(run).info.status == "FINISHED"


def _lock_between_trials(path, proc, k) -> sqlite3.Connection:
    """An exclusive lock on the database, taken once ``k`` conditions are recorded (the study
    frozen meanwhile, so it has not finished); the study is let go on, locked out."""
    while True:
        n = freeze_after_finished(f"sqlite:///{path}", proc, k)
        assert k <= n < len(INTERVALS), "the study ended before the store was locked"
        db = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        try:
            db.execute("BEGIN EXCLUSIVE")
            return db
        except sqlite3.OperationalError:   # frozen inside a write: let it finish, try again
            db.close()
        finally:
            os.kill(proc.pid, signal.SIGCONT)


def test_locked_sqlite_store_is_reported_and_the_study_finishes_by_itself(tmp_path, music_3s,
                                                                        reference):
    path = tmp_path / "mlflow.db"
    proc, lines = _start(study_cmd(f"sqlite:///{path}", str(music_3s)), tmp_path)
    try:
        db = _lock_between_trials(path, proc, 1)
        try:
            line = lines.wait_for(OUTAGE)
        finally:
            db.execute("ROLLBACK")
            db.close()
        assert "its database is locked" in line and "--tracking-patience" in line
        seen = lines.rest()
    finally:
        _stop(proc)
    assert proc.returncode == 0, "\n".join(seen[-40:])
    assert any(BACK in s for s in seen), seen
    assert not [s for s in seen if s.startswith("Error:") or "Traceback" in s]
    found = census(f"sqlite:///{path}", len(INTERVALS))
    assert found.intact and found.metrics == reference, found


def _vanish_between_trials(path, proc, k):
    """Move the database file away (``os.rename``) once ``k`` conditions are recorded, the
    study frozen meanwhile; returns the new place and how many were FINISHED."""
    n = freeze_after_finished(f"sqlite:///{path}", proc, k)
    assert k <= n < len(INTERVALS), "the study ended before the database was moved away"
    away = path.with_name("moved-away.db")
    try:
        os.rename(path, away)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    return away, n


def test_vanished_sqlite_file_is_reported_and_the_study_finishes_when_it_is_back(
        tmp_path, music_3s, reference):
    path = tmp_path / "mlflow.db"
    proc, lines = _start(study_cmd(f"sqlite:///{path}", str(music_3s)), tmp_path)
    try:
        away, _ = _vanish_between_trials(path, proc, 1)
        line = lines.wait_for(OUTAGE)
        assert f"its database file {path} is gone" in line and "--tracking-patience" in line
        assert not path.exists(), "an empty database was created in the vanished one's place"
        os.rename(away, path)   # the file is back (a remounted share, a restored backup)
        seen = lines.rest()
    finally:
        _stop(proc)
    assert proc.returncode == 0, "\n".join(seen[-40:])
    assert len([s for s in seen if OUTAGE in s]) == 1 and any(BACK in s for s in seen), seen
    assert not [s for s in seen if s.startswith("Error:") or "Traceback" in s], seen
    found = census(f"sqlite:///{path}", len(INTERVALS))
    assert found.intact and found.metrics == reference, found


def test_vanished_sqlite_file_never_back_one_error_line_nothing_lost(tmp_path, music_3s,
                                                                    reference):
    path = tmp_path / "mlflow.db"
    cmd = study_cmd(f"sqlite:///{path}", str(music_3s), "--tracking-patience", "5")
    proc, lines = _start(cmd, tmp_path)
    try:
        away, n = _vanish_between_trials(path, proc, 1)
        seen = lines.rest()
    finally:
        _stop(proc)
    error = _one_outage_line_then_one_error(proc, seen)
    assert f"its database file {path} is gone" in error and "(5 s, --tracking-patience)" in error
    assert error.endswith(" --resume"), error
    assert not path.exists(), "an empty database was created in the vanished one's place"
    # nothing written after the file went is lost silently: what was recorded is in the moved
    # file, the rest is redone by --resume once the file is back
    # (n + 1 if the study was frozen inside the commit of a condition's last write)
    assert census(f"sqlite:///{away}", len(INTERVALS)).finished in (n, n + 1)
    os.rename(away, path)
    found = run_to_the_end(cmd + ["--resume"], tmp_path, f"sqlite:///{path}")
    assert found.intact and found.metrics == reference, found


# ------------------------------------------------------------ a real server
@pytest.fixture()
def server_store(tmp_path):
    from servers import free_port, start_mlflow_server

    store = f"sqlite:///{tmp_path / 'server.db'}"
    port = free_port()
    servers = []

    def start():
        servers.append(start_mlflow_server(store, tmp_path / "artifacts", port=port))
        return servers[-1]
    yield store, start
    for s in servers:
        s.stop()


def test_server_back_after_20_s_the_study_finishes_by_itself(tmp_path, music_3s, server_store,
                                                               reference):
    """The server is SIGKILLed between two recorded trials and restarted 20 s after the study
    said so; the study records everything and ends FINISHED, no --resume."""
    store, start = server_store
    server = start()
    proc, lines = _start(study_cmd(server.url, str(music_3s)), tmp_path)
    try:
        n = freeze_after_finished(store, proc, 1)
        assert 1 <= n < len(INTERVALS), "the study ended before the server was killed"
        server.kill()
        os.kill(proc.pid, signal.SIGCONT)
        line = lines.wait_for(OUTAGE)
        assert "no answer" in line
        time.sleep(20)   # the outage's length (imposed; the outcome does not depend on it)
        server = start()
        seen = lines.rest()
    finally:
        _stop(proc)
    assert proc.returncode == 0, "\n".join(seen[-40:])
    assert any(BACK in s for s in seen)
    assert not [s for s in seen if s.startswith("Error:") or "Traceback" in s], seen
    assert not [s for s in seen if "View run" in s or "View experiment" in s], seen  # quiet
    found = census(server.url, len(INTERVALS))
    assert found.intact and found.metrics == reference, found


def test_server_gone_for_good_one_line_after_the_patience_then_resume(tmp_path, music_3s,
                                                                     server_store, reference):
    store, start = server_store
    server = start()
    cmd = study_cmd(server.url, str(music_3s), "--tracking-patience", "5")
    proc, lines = _start(cmd, tmp_path)
    try:
        n = freeze_after_finished(store, proc, 1)
        assert 1 <= n < len(INTERVALS), "the study ended before the server was killed"
        server.kill()
        os.kill(proc.pid, signal.SIGCONT)
        seen = lines.rest(timeout=600)
    finally:
        _stop(proc)
    error = _one_outage_line_then_one_error(proc, seen)
    assert "(5 s, --tracking-patience)" in error, error
    # n were FINISHED in the store when it went; the study counts one fewer if the answer to
    # its last call was lost with the server (that run is found again by --resume)
    recorded = re.search(rf"(\d+) of {len(INTERVALS)} conditions are recorded and kept", error)
    assert recorded and n - 1 <= int(recorded.group(1)) <= n, error
    assert error.endswith(" --resume") and "continue with:  vampstudy run periodic" in error

    server = start()
    found = run_to_the_end(cmd + ["--resume"], tmp_path, server.url)
    assert found.intact and found.metrics == reference, found


def test_ray_workers_hand_trials_to_the_driver_while_the_server_is_away(
        tmp_path, music_3s, server_store, reference):
    """``--executor ray``: workers that cannot record do not sit in MLflow's retries; the
    driver says so within seconds, keeps their trials (bounded) and records them once the
    server is back (same port, same backend store): FINISHED, every child run once."""
    pytest.importorskip("ray", reason="--executor ray needs Ray: pip install 'vampstudy[ray]'")
    store, start = server_store
    server = start()
    cmd = study_cmd(server.url, str(music_3s), "--executor", "ray", "--workers", "2")
    proc, lines = _start(cmd, tmp_path)
    try:
        n = freeze_after_finished(store, proc, 1)
        assert 1 <= n < len(INTERVALS), "the study ended before the server was killed"
        server.kill()
        os.kill(proc.pid, signal.SIGCONT)
        line = lines.wait_for(OUTAGE)   # (how soon: benchmarks/faults.py --outages)
        assert "no answer" in line, line
        server = start()
        seen = lines.rest()
    finally:
        _stop(proc)
    assert proc.returncode == 0, "\n".join(seen[-40:])
    assert any(BACK in s for s in seen), seen
    assert not [s for s in seen if s.startswith("Error:") or "Traceback" in s], seen
    found = census(server.url, len(INTERVALS))
    assert found.intact and found.metrics.keys() == reference.keys(), found
    for interval, metrics in reference.items():
        # audio metrics are float32 sums whose last digits depend on torch's thread count (a
        # Ray worker computes with one thread; test_ray.py); token metrics are exact
        assert found.metrics[interval] == pytest.approx(metrics, rel=1e-4, abs=1e-6), interval
        assert {k: v for k, v in found.metrics[interval].items() if "changed_pct" in k} == {
            k: v for k, v in metrics.items() if "changed_pct" in k}, interval
