"""``--executor process``: the model here, measurement and recording in a measuring process.

It records exactly what ``sequential`` records (params, metrics, artifacts, run order) on
sqlite stores; results reach the sink in plan order; the analysis reads audio back from
the recorded files; Ctrl-C records what finished its model stage. Killing either process:
tests/faults/test_process_faults.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from studies.periodic import PeriodicIntervalStudy
from tests import test_executors as executor_tests
from vampstudy.errors import ConfigError, VampstudyError
from vampstudy.execute import Job, TrialResult
from vampstudy.executors import make_executor
from vampstudy.executors.process import ProcessExecutor
from vampstudy.plan import plan_study
from vampstudy.runner import StudyInterrupted, prepare_clips, run_study
from vampstudy.stored import StoredAudio
from vampstudy.tracking import Tracker


def _files(tracker: Tracker, run_id: str) -> dict:
    """Artifact path → size (PNG: just present; they embed nothing run-specific)."""
    files, todo = {}, [None]
    while todo:
        for f in tracker.client.list_artifacts(run_id, todo.pop()):
            if f.is_dir:
                todo.append(f.path)
            else:
                files[f.path] = "png" if f.path.endswith(".png") else f.file_size
    return files


def _children(tracker: Tracker, result) -> list:
    runs = tracker.find_runs(result.experiment_id, {"mlflow.parentRunId": result.parent_run_id})
    return sorted(runs, key=lambda r: (r.info.start_time, r.data.tags["vampstudy.trial_index"]))


@pytest.fixture(scope="module")
def clip(music_3s):
    from vampstudy.backends.reference import ReferenceBackend

    return prepare_clips(ReferenceBackend(device="cpu"), [str(music_3s)])


@pytest.fixture()
def one_math_thread():
    """Sequential measurement on one torch thread, as in the measuring process: float32
    sums (mel_distance) then add up in the same order (with 2 threads they differ by
    ~1e-7 relative)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_process_records_exactly_what_sequential_records(backend, clip, tmp_path,
                                                         one_math_thread):
    runs, trackers, results = {}, {}, {}
    for name in ("sequential", "process"):
        tracker = trackers[name] = Tracker(f"sqlite:///{tmp_path / name / 'mlflow.db'}")
        result = results[name] = run_study(PeriodicIntervalStudy(intervals=(2, 7)), backend,
                                           tracker, clips=clip, seeds=[0, 1], executor=name)
        runs[name] = _children(tracker, result)
        assert tracker.get_run(result.parent_run_id).data.params["executor"] == name
    seq, proc = runs["sequential"], runs["process"]
    assert len(seq) == 4 + 1 + 4   # conditions, the codec control, noise controls (2 seeds)
    # the run order: children were created in plan order by both
    assert [int(r.data.tags["vampstudy.trial_index"]) for r in proc] == list(range(len(seq)))
    assert [r.info.run_name for r in proc] == [r.info.run_name for r in seq]
    for a, b in zip(seq, proc):
        assert b.info.status == a.info.status == "FINISHED"
        assert b.data.params == a.data.params, a.info.run_name
        assert b.data.metrics == a.data.metrics, a.info.run_name   # exact
        assert _files(trackers["process"], b.info.run_id) == _files(trackers["sequential"],
                                                                    a.info.run_id)
    # the analysis saw the same outcomes: the same summary table on the parent
    tables = {n: trackers[n].load_table(results[n].parent_run_id) for n in results}
    assert tables["process"] == tables["sequential"]
    # its outcomes hold handles on the recorded run, which read back the measured samples
    for a, b in zip(results["sequential"].outcomes, results["process"].outcomes):
        assert isinstance(b.audio, StoredAudio) and b.run_id
        assert torch.equal(b.audio["output"].audio_data, a.audio["output"].audio_data)
        assert b.arrays.keys() == a.arrays.keys()
        assert all(np.array_equal(b.arrays[k], a.arrays[k]) for k in a.arrays)


class Counting(executor_tests.Counting):
    """test_executors' counting study, whose outputs are big enough to travel in a
    shared-memory slot, noting the process of each model stage too."""

    def __init__(self, n: int = 6):
        super().__init__(n)
        self.pids_ = set()

    def generate(self, trial, backend):
        self.pids_.add(os.getpid())
        outcome = super().generate(trial, backend)
        outcome.arrays["big"] = np.full(50_000, trial.condition.params["i"], np.float32)
        return outcome


def test_results_reach_the_sink_in_plan_order_without_a_store(backend, clip):
    """Without remote recording the outcomes come back whole (the caller's sink records)."""
    study = Counting()
    plan = plan_study(study, backend, clip, [0])
    seen: list[TrialResult] = []
    executor = ProcessExecutor(slots=1)
    try:
        child = executor.pid
        assert child is not None and child != os.getpid()
        executor.execute(Job(study, backend), plan.trials, seen.append)
    finally:
        executor.close()
    assert executor.pid is None and not os.path.exists(f"/proc/{child}/status")
    assert [r.planned.index for r in seen] == list(range(6))
    assert [r.ok for r in seen] == [True, True, True, False, True, True]
    assert "three is bad" in seen[3].error and "Traceback" in seen[3].traceback
    assert [r.outcome.metrics["value"] for r in seen if r.ok] == [0, 2, 4, 8, 10]
    assert [float(r.outcome.arrays["big"][-1]) for r in seen if r.ok] == [0, 1, 2, 4, 5]
    assert study.threads_ == {"MainThread"} and study.pids_ == {os.getpid()}   # stays here


def test_a_failing_sink_stops_the_study(backend, clip):
    study = Counting()
    plan = plan_study(study, backend, clip, [0])
    calls = []

    def sink(result):
        calls.append(result.planned.index)
        if len(calls) == 2:
            raise OSError("disk full")

    executor = ProcessExecutor(slots=1)
    try:
        with pytest.raises(OSError, match="disk full"):
            executor.execute(Job(study, backend), plan.trials, sink)
    finally:
        executor.close()
    assert calls == [0, 1]


class InterruptAt(PeriodicIntervalStudy):
    name = "interrupt-at"
    controls = False
    at = 9

    def generate(self, trial, backend):
        if trial.condition.params["interval"] == self.at:
            raise KeyboardInterrupt
        return super().generate(trial, backend)


def test_ctrl_c_records_what_finished_its_model_stage_then_resume(backend, clip, tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    study = InterruptAt(intervals=(2, 5, 9, 13))
    with pytest.raises(StudyInterrupted, match="2 of 4 conditions finished") as info:
        run_study(study, backend, tracker, clips=clip, executor="process")
    parent = tracker.get_run(info.value.parent_run_id)
    assert parent.info.status == "KILLED"
    exp = parent.info.experiment_id
    children = tracker.find_runs(exp, {"mlflow.parentRunId": parent.info.run_id})
    assert sorted(int(c.data.params["interval"]) for c in children) == [2, 5]
    assert {c.info.status for c in children} == {"FINISHED"}

    study.at = None
    result = run_study(study, backend, tracker, clips=clip, resume=True, executor="process")
    assert result.parent_run_id == parent.info.run_id and result.skipped == 2
    children = tracker.find_runs(exp, {"mlflow.parentRunId": parent.info.run_id})
    assert sorted(int(c.data.params["interval"]) for c in children) == [2, 5, 9, 13]
    assert {c.info.status for c in children} == {"FINISHED"}


def test_process_is_an_executor_name_and_checks_its_slots():
    with pytest.raises(ConfigError, match="slots must be >= 1"):
        make_executor("process", slots=0)
    executor = make_executor("process")
    try:
        assert executor.describe() == {"executor": "process", "slots": 2}
    finally:
        executor.close()


def test_a_study_error_reaches_the_model_process_whole():
    """The measuring process sends the study's error pickled: its class, message and
    attributes come back (the CLI reads ``what`` of TrackingLost, ``result`` of
    StudyFailed), an unpicklable cause as its words."""
    import pickle
    import threading

    from vampstudy.runner import AnalysisFailed, StudyFailed, StudyResult, TrackingLost

    class Unpicklable(Exception):
        def __init__(self):
            super().__init__("store gone")
            self.lock = threading.Lock()

    result = StudyResult("1", "parent", "sqlite:///x.db", [], skipped=2, report={"view_key": "k"})
    for exc in (StudyFailed(result, {"interval=3": "ValueError: bad"}),
                AnalysisFailed("periodic", "parent", 3, ValueError("no")),
                TrackingLost("sqlite:///x.db", 2, 5, Unpicklable(), dropped=1),
                ConfigError("--intervals must be positive", option="--intervals")):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
        assert back.__dict__.keys() == exc.__dict__.keys()
    failed = pickle.loads(pickle.dumps(StudyFailed(result, {"a": "b"})))
    assert failed.result.skipped == 2 and failed.result.report == {"view_key": "k"}
    assert failed.errors == {"a": "b"}
    lost = pickle.loads(pickle.dumps(TrackingLost("sqlite:///x.db", 2, 5, Unpicklable())))
    assert lost.what.startswith("lost the tracking store sqlite:///x.db")
    assert pickle.loads(pickle.dumps(ConfigError("x", option="--y"))).option == "--y"
    held = VampstudyError("the store failed")
    held.cause, held.lock = Unpicklable(), threading.Lock()
    back = pickle.loads(pickle.dumps(held))
    assert back.cause == "Unpicklable: store gone" and back.lock is None
