"""The plan → execute → record stages: the pipelined executor records exactly what the
sequential one does (params, metrics, artifacts, run order); planning is pure."""

from __future__ import annotations

import threading

import pytest

from studies.periodic import PeriodicIntervalStudy
from vampstudy.errors import ConfigError
from vampstudy.execute import Job, PipelinedExecutor, SequentialExecutor, TrialResult
from vampstudy.executors import make_executor
from vampstudy.plan import plan_study
from vampstudy.runner import prepare_clips, run_study
from vampstudy.study import Condition, Outcome, Study
from vampstudy.tracking import Tracker


def _layout(tracker: Tracker, result):
    """Every child's (name, params, metrics, artifact files and bytes), in start order."""
    exp = result.experiment_id
    children = tracker.find_runs(exp, {"mlflow.parentRunId": result.parent_run_id})
    children.sort(key=lambda r: int(r.data.tags["vampstudy.trial_index"]))
    out = []
    for c in children:
        files = {}
        todo = [None]
        while todo:
            for f in tracker.client.list_artifacts(c.info.run_id, todo.pop()):
                if f.is_dir:
                    todo.append(f.path)
                elif not f.path.endswith(".png"):   # PNG bytes embed nothing run-specific,
                    files[f.path] = f.file_size     # but compare sizes of data files exactly
                else:
                    files[f.path] = "png"
        out.append((c.info.run_name, c.info.status, dict(c.data.params), dict(c.data.metrics),
                    files))
    starts = [c.info.start_time for c in children]
    return out, starts


@pytest.fixture(scope="module")
def clip(music_3s):
    from vampstudy.backends.reference import ReferenceBackend

    return prepare_clips(ReferenceBackend(device="cpu"), [str(music_3s)])


def test_pipelined_records_the_same_as_sequential(backend, clip, tmp_path):
    layouts = {}
    for name in ("sequential", "pipelined"):
        tracker = Tracker(f"sqlite:///{tmp_path / name / 'mlflow.db'}")
        result = run_study(PeriodicIntervalStudy(intervals=(2, 7, 30)), backend, tracker,
                           clips=clip, seeds=[0, 1], executor=name)
        layouts[name], starts = _layout(tracker, result)
        assert starts == sorted(starts), f"{name}: runs not created in plan order"
        parent = tracker.get_run(result.parent_run_id)
        assert parent.data.params["executor"] == name
    seq, pipe = layouts["sequential"], layouts["pipelined"]
    assert [row[0] for row in pipe] == [row[0] for row in seq]
    assert len(seq) == 6 + 1 + 6          # conditions, the codec control, the noise controls
    for a, b in zip(seq, pipe):
        assert a == b


class Counting(Study):
    """Generic study: model stage is generate; measurement is the identity."""

    name = "counting"

    def __init__(self, n: int = 6):
        self.n = n
        self.threads_ = set()

    def iterate(self):
        return [Condition({"i": i}) for i in range(self.n)]

    def generate(self, trial, backend):
        self.threads_.add(threading.current_thread().name)
        if trial.condition.params["i"] == 3:
            raise RuntimeError("three is bad")
        return Outcome(metrics={"value": trial.condition.params["i"] * 2.0})


def test_executors_hand_every_trial_to_the_sink_in_plan_order(backend, clip):
    study = Counting()
    plan = plan_study(study, backend, clip, [0])
    for executor in (SequentialExecutor(), PipelinedExecutor(max_in_flight=1)):
        seen: list[TrialResult] = []
        executor.execute(Job(study, backend), plan.trials, seen.append)
        assert [r.planned.index for r in seen] == list(range(6))
        assert [r.ok for r in seen] == [True, True, True, False, True, True]
        assert "three is bad" in seen[3].error and "Traceback" in seen[3].traceback
        assert [r.outcome.metrics["value"] for r in seen if r.ok] == [0, 2, 4, 8, 10]
    assert study.threads_ == {"MainThread"}   # the model stage stays in the calling thread


def test_a_failing_sink_stops_the_pipeline(backend, clip):
    study = Counting()
    plan = plan_study(study, backend, clip, [0])
    calls = []

    def sink(result):
        calls.append(result.planned.index)
        if len(calls) == 2:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        PipelinedExecutor(max_in_flight=1).execute(Job(study, backend), plan.trials, sink)
    assert calls == [0, 1]


def test_plan_is_pure_and_marks_the_resume_set(backend, clip):
    study = PeriodicIntervalStudy(intervals=(2, 7))
    study.controls = False   # (the plan's controls: tests/test_evidence.py)
    a = plan_study(study, backend, clip, [0, 1], now=0)
    b = plan_study(study, backend, clip, [0, 1], now=0)
    assert [t.key for t in a.trials] == [t.key for t in b.trials]
    assert a.config_hash == b.config_hash and a.parent_name == b.parent_name
    assert [t.run_name for t in a.trials] == ["interval=2 seed=0", "interval=2 seed=1",
                                              "interval=7 seed=0", "interval=7 seed=1"]
    done = a.with_done([a.trials[1].key, "not-a-key"])
    assert done.done == {a.trials[1].key}
    assert [t.index for t in done.todo] == [0, 2, 3]
    other = plan_study(PeriodicIntervalStudy(intervals=(2, 8)), backend, clip, [0, 1])
    assert other.config_hash != a.config_hash


def test_unknown_executor_is_refused():
    with pytest.raises(ConfigError, match="unknown executor 'threads'"):
        make_executor("threads")
    with pytest.raises(ConfigError, match="max_in_flight"):
        make_executor("pipelined", max_in_flight=0)
