"""Shared by the fault tests and ``benchmarks/faults.py``: run a study as a real process,
wait for it to reach a point, and count what the store holds afterwards."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass

from vampstudy.tracking import Tracker

INTERVALS = (2, 5, 9, 13)


def one_line_error(result, *needles, code=1):
    """Exit ``code``, no traceback, exactly one ``Error:`` line holding every needle."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def study_cmd(uri: str, audio: str, *extra: str, intervals=INTERVALS,
              experiment: str = "periodic") -> list[str]:
    """``vampstudy run periodic`` on the reference backend as a command line (without the
    control runs: the census counts conditions; controls resume like any trial)."""
    return [sys.executable, "-m", "vampstudy.cli", "run", "periodic", "--backend", "reference",
            "--intervals", ",".join(map(str, intervals)), "--tracking-uri", uri,
            "--audio", audio, "--experiment", experiment, "--no-controls", *extra]


def wait_for_finished(uri: str, proc: subprocess.Popen, at_least: int, timeout: float = 300,
                      experiment: str = "periodic") -> int:
    """Poll the store until ``at_least`` condition runs are FINISHED; -1 if the process ended
    (or the time ran out) first."""
    deadline = time.time() + timeout
    tracker = None
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            tracker = tracker or Tracker(uri)
            exp = tracker.experiment_id(experiment, create=False)
            if exp is None:
                continue
            n = len(tracker.find_runs(exp, {"vampstudy.role": "condition"}, ("FINISHED",)))
        except Exception:
            continue
        if n >= at_least:
            return n
    return -1


def _finished_in_sqlite(path: str, experiment: str) -> int:
    """FINISHED condition runs of ``experiment`` read straight from MLflow's sqlite tables
    (a short lock timeout: the study process may be frozen holding a write lock)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.2) as db:
        return db.execute(
            "SELECT count(*) FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
            "JOIN tags t ON t.run_uuid = r.run_uuid WHERE e.name = ? AND r.status = 'FINISHED' "
            "AND r.lifecycle_stage = 'active' AND t.key = 'vampstudy.role' "
            "AND t.value = 'condition'", (experiment,)).fetchone()[0]


def freeze_after_finished(uri: str, proc: subprocess.Popen, at_least: int, timeout: float = 300,
                          experiment: str = "periodic") -> int:
    """Stop (SIGSTOP) the study process at a moment when ``at_least`` of its conditions are
    FINISHED in the sqlite store ``uri``, and return how many are: the count is read while the
    process is frozen, so it is exactly what the store holds when the caller's signal lands.

    The moment depends on the study's progress, not on the machine's speed. The process is left
    stopped (send SIGKILL, or SIGINT then SIGCONT); -1 when it ended (or the time ran out) first.
    A process that leads its own process group (``start_new_session=True``) is stopped with
    its whole group: the study's measuring process, which records, included.
    """
    path = uri[len("sqlite:///"):]
    deadline = time.time() + timeout
    send = os.killpg if os.getpgid(proc.pid) == proc.pid else os.kill
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            send(proc.pid, signal.SIGSTOP)
        except ProcessLookupError:
            break
        try:
            n = _finished_in_sqlite(path, experiment) if os.path.exists(path) else 0
        except sqlite3.Error:   # no tables yet, or frozen inside a write: look again
            n = -1
        if n >= at_least:
            return n
        send(proc.pid, signal.SIGCONT)
    return -1


@dataclass
class Census:
    """What one experiment of a store holds after a study (and its resumes)."""

    parents: int
    parent_status: str
    finished: int
    lost: int           # planned trials without a FINISHED child
    duplicated: int     # FINISHED children beyond one per trial
    running: int        # runs left RUNNING
    metrics: dict       # interval → metrics of its FINISHED child

    @property
    def intact(self) -> bool:
        return (self.parents == 1 and self.parent_status == "FINISHED" and self.lost == 0
                and self.duplicated == 0 and self.running == 0)


def census(uri: str, n_trials: int, experiment: str = "periodic") -> Census:
    tracker = Tracker(uri)
    exp = tracker.experiment_id(experiment, create=False)
    parents = tracker.find_runs(exp, {"vampstudy.role": "study"}) if exp else []
    if not parents:
        return Census(0, "-", 0, n_trials, 0, 0, {})
    children = tracker.find_runs(exp, {"mlflow.parentRunId": parents[0].info.run_id})
    finished = [c for c in children if c.info.status == "FINISHED"]
    keys = [c.data.tags["vampstudy.trial_key"] for c in finished]
    every = tracker.client.search_runs([exp], max_results=5000)
    return Census(parents=len(parents), parent_status=parents[0].info.status,
                  finished=len(finished), lost=max(0, n_trials - len(set(keys))),
                  duplicated=len(keys) - len(set(keys)),
                  running=sum(r.info.status == "RUNNING" for r in every),
                  metrics={int(c.data.params["interval"]): c.data.metrics for c in finished})


def run_to_the_end(cmd: list[str], cwd, uri: str, timeout: float = 600,
                   env: dict | None = None) -> Census:
    """Run a study command to its end in a real process (``env``: its environment, default
    this one's); it must exit 0. What the store then holds (the caller asserts what it
    expects of it)."""
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return census(uri, len(INTERVALS))
