"""The study measures itself (issue 19): phase times, the model's busy share, MLflow's
system metrics on the parent run, and MLflow's telemetry off in vampstudy's processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from studies.periodic import PeriodicIntervalStudy
from vampstudy.execute import TrialResult
from vampstudy.phases import PHASE_METRICS, PhaseClock, phase_summary, process_start_time
from vampstudy.runner import prepare_clips, run_study
from vampstudy.testing import InstantBackend
from vampstudy.tracking import Tracker


class TimedStudy(PeriodicIntervalStudy):
    """The periodic study noting, on its own clock, when each model stage ran."""

    name = "periodic"

    def model_stage(self, trial, backend):
        began = time.time()
        staged = super().model_stage(trial, backend)
        self.__dict__.setdefault("_spans", []).append((began, time.time()))
        return staged


@pytest.fixture(scope="module")
def timed(tmp_path_factory, music_3s):
    tmp = tmp_path_factory.mktemp("phases")
    backend = InstantBackend(device="cpu", delay=0.05)
    tracker = Tracker(f"sqlite:///{tmp / 'mlflow.db'}")
    study = TimedStudy(intervals=[3, 7])
    study.controls = False
    clips = prepare_clips(backend, [str(music_3s)])
    called = time.time()
    result = run_study(study, backend, tracker, clips=clips, seeds=[0, 1],
                       executor="sequential", system_metrics=True)
    run = tracker.get_run(result.parent_run_id)
    return study, tracker, result, run, called


def test_phases_against_the_studys_own_clock(timed):
    study, _, result, run, called = timed
    m = run.data.metrics
    assert set(PHASE_METRICS) <= set(m)
    spans = study.__dict__["_spans"]
    assert len(spans) == 4 == m["n_finished"]
    # the executor's model time encloses each model stage the study timed itself
    own = sum(end - began for began, end in spans)
    assert m["phase_model_s"] >= own >= 4 * 0.05
    assert m["model_busy_fraction"] == pytest.approx(m["phase_model_s"] / m["wall_seconds"])
    # sequential: model, measure and analysis follow each other in one thread, within the
    # wall time; recording runs beside them in the recording thread (vampstudy.patience)
    assert m["phase_model_s"] + m["phase_measure_s"] + m["phase_analysis_s"] <= m["wall_seconds"]
    assert m["phase_record_s"] + m["phase_analysis_s"] <= m["wall_seconds"]
    assert min(m[k] for k in PHASE_METRICS) > 0
    # start-up ends where the first model call starts, after run_study was called
    started = process_start_time()
    first = min(began for began, _ in spans)
    tick = 0.05   # both start times are read from /proc in clock ticks (10 ms)
    assert called - started - tick <= m["phase_startup_s"] <= first - started + tick


def test_process_start_time_is_this_process(timed):
    started = process_start_time()
    assert started is not None and started <= time.time()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        before = time.time()
        assert abs(process_start_time(child.pid) - before) < 2.0
        assert process_start_time(child.pid) > started
    finally:
        child.kill()
        child.wait()


def test_untimed_results_leave_model_phases_out():
    clock = PhaseClock(process_started=100.0)
    clock.add_trial(TrialResult(planned=None, seconds=1.0), record_s=0.5)   # e.g. from Ray
    out = clock.metrics(10.0)
    assert out == {"phase_record_s": 0.5, "phase_analysis_s": 0.0}
    timed = PhaseClock(process_started=100.0)
    timed.add_trial(TrialResult(planned=None, model_started=103.0, model_s=2.0, measure_s=1.0), 0.5)
    timed.add_trial(TrialResult(planned=None, model_started=102.0, model_s=4.0, measure_s=1.0), 0.5)
    out = timed.metrics(12.0)
    assert out["phase_startup_s"] == 2.0 and out["phase_model_s"] == 6.0
    assert out["model_busy_fraction"] == 0.5 and out["phase_measure_s"] == 2.0


def test_show_prints_the_phases(timed, cli):
    _, tracker, result, run, _ = timed
    out = cli("show", result.parent_run_id, "--tracking-uri", tracker.uri).output
    line = next(ln for ln in out.splitlines() if ln.startswith("time: "))
    assert f"model {run.data.metrics['phase_model_s']:.1f} s" in line
    assert f"wall {run.data.metrics['wall_seconds']:.1f} s" in line
    assert "model busy" in line and "start-up" in line
    assert phase_summary({"wall_seconds": 3.0}) is None


def test_system_metrics_on_the_parent(timed, tmp_path, music_3s):
    _, tracker, result, run, _ = timed
    assert "system/cpu_utilization_percentage" in run.data.metrics
    assert "system/system_memory_usage_megabytes" in run.data.metrics
    children = tracker.find_runs(result.experiment_id, {"mlflow.parentRunId": result.parent_run_id})
    assert children and not any(k.startswith("system/") for c in children for k in c.data.metrics)
    # off unless asked for
    other = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    backend = InstantBackend(device="cpu")
    plain = run_study(PeriodicIntervalStudy(intervals=[3]), backend, other,
                      clips=prepare_clips(backend, [str(music_3s)]), executor="sequential")
    metrics = other.get_run(plain.parent_run_id).data.metrics
    assert "phase_model_s" in metrics
    assert not any(k.startswith("system/") for k in metrics)


TELEMETRY = ("import os, vampstudy.tracking; "
             "from mlflow.environment_variables import MLFLOW_DISABLE_TELEMETRY as v; "
             "print(os.environ['MLFLOW_DISABLE_TELEMETRY'], v.get())")


@pytest.mark.parametrize("given, expected", [(None, "true True"), ("false", "false False"),
                                             ("1", "1 True")])
def test_telemetry_off_unless_the_user_set_it(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_DISABLE_TELEMETRY"}
    if given is not None:
        env["MLFLOW_DISABLE_TELEMETRY"] = given
    out = subprocess.run([sys.executable, "-c", TELEMETRY], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert " ".join(out[-2:]) == expected
