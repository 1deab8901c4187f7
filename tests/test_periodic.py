"""The periodic study end to end: run layout in MLflow, the science, failures, resume."""

import os
import signal
import subprocess
import sys
import time

import pytest
from scipy import stats

from studies.periodic import NOTEBOOK_INTERVALS, PeriodicIntervalStudy
from vampstudy.runner import StudyFailed, run_study
from vampstudy.tracking import Tracker

CHILD_PARAMS = {"interval", "interval_ms", "upper_codebook_mask", "temperature",
                "typical_filtering", "seed", "backend", "dropout"}
CHILD_METRICS = {"mask_density", "tokens_changed_pct", "masked_changed_pct", "kept_changed_pct",
                 *{f"tokens_changed_pct_cb{k}" for k in range(14)}}
CHILD_ARTIFACTS = {"audio/output.wav", "figures/mask.png", "figures/spectrogram.png",
                   "arrays.npz"}
PARENT_ARTIFACTS = {"audio/original.wav", "figures/mask_grid.png",
                    "figures/interval_vs_changed.png", "figures/density_vs_changed.png",
                    "figures/spectrogram_grid.png", "summary.json", "summary.csv", "config.yaml",
                    "observations.txt"}


def _artifacts(tracker, run_id):
    out = set()
    todo = [None]
    while todo:
        path = todo.pop()
        for f in tracker.client.list_artifacts(run_id, path):
            (todo.append(f.path) if f.is_dir else out.add(f.path))
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, music_3s):
    """The notebook's full sweep on a 3 s clip with the reference backend, without the
    control runs (``--no-controls``: the notebook's layout; controls: tests/test_evidence.py)."""
    from vampstudy.backends.reference import ReferenceBackend

    tmp = tmp_path_factory.mktemp("sweep")
    tracker = Tracker(f"sqlite:///{tmp / 'mlflow.db'}")
    study = PeriodicIntervalStudy()
    study.controls = False
    result = run_study(study, ReferenceBackend(device="cpu"), tracker, audio=[str(music_3s)])
    return tracker, result


def test_layout_parent_and_eleven_children(sweep):
    tracker, result = sweep
    children = tracker.find_runs(result.experiment_id, {"mlflow.parentRunId": result.parent_run_id})
    assert len(children) == len(NOTEBOOK_INTERVALS) == 11
    assert {c.info.status for c in children} == {"FINISHED"}
    assert sorted(int(c.data.params["interval"]) for c in children) == list(NOTEBOOK_INTERVALS)
    for child in children:
        assert CHILD_PARAMS <= set(child.data.params)
        assert CHILD_METRICS <= set(child.data.metrics)
        assert CHILD_ARTIFACTS <= _artifacts(tracker, child.info.run_id)
        assert child.data.tags["vampstudy.backend"] == "reference"
        assert "not VampNet" in child.data.tags["mlflow.note.content"]
        assert child.data.tags["vampstudy.trial_key"]
    parent = tracker.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert PARENT_ARTIFACTS <= _artifacts(tracker, result.parent_run_id)
    for key in ("tokens_per_second", "ms_per_token", "code_shape", "audio_sha256", "backend",
                "backend_description", "intervals"):
        assert key in parent.data.params
    assert parent.data.params["backend"] == "reference"


def test_density_matches_one_minus_one_over_p(sweep):
    tracker, result = sweep
    for o in result.outcomes:
        p = o.trial.condition.params["interval"]
        n_steps = o.arrays["mask"].shape[-1]
        # the roll decides whether ceil(T/P) or floor(T/P) steps are kept: at most one step off
        assert abs(o.metrics["mask_density"] - (1 - 1 / p)) <= 1 / n_steps + 1e-9


def test_tokens_changed_rises_with_interval(sweep):
    _, result = sweep
    intervals = [o.trial.condition.params["interval"] for o in result.outcomes]
    changed = [o.metrics["tokens_changed_pct"] for o in result.outcomes]
    assert stats.spearmanr(intervals, changed).statistic > 0.9
    assert changed[0] < changed[-1]
    assert all(o.metrics["kept_changed_pct"] == 0 for o in result.outcomes)


def test_summary_table_matches_children(sweep):
    tracker, result = sweep
    rows = tracker.load_table(result.parent_run_id, "summary")
    by_interval = {r["interval"]: r for r in rows}
    for o in result.outcomes:
        row = by_interval[o.trial.condition.params["interval"]]
        assert row["tokens_changed_pct_mean"] == pytest.approx(o.metrics["tokens_changed_pct"], abs=1e-3)


def test_failed_condition_is_marked_and_others_finish(backend, tracker, music_3s):
    class Flaky(PeriodicIntervalStudy):
        name = "flaky"

        def generate(self, trial, backend):
            if trial.condition.params["interval"] == 5:
                raise RuntimeError("boom at 5")
            return super().generate(trial, backend)

    with pytest.raises(StudyFailed, match="interval=5") as info:
        run_study(Flaky(intervals=(2, 5, 9)), backend, tracker, audio=[str(music_3s)])
    result = info.value.result
    children = tracker.find_runs(result.experiment_id, {"mlflow.parentRunId": result.parent_run_id})
    status = {c.data.params["interval"]: c.info.status for c in children}
    assert status == {"2": "FINISHED", "5": "FAILED", "9": "FINISHED"}
    failed = next(c for c in children if c.info.status == "FAILED")
    assert "traceback.txt" in _artifacts(tracker, failed.info.run_id)
    text = tracker.client.download_artifacts(failed.info.run_id, "traceback.txt", str(tracker_tmp(tracker)))
    assert "boom at 5" in open(text).read()
    assert tracker.get_run(result.parent_run_id).info.status == "FAILED"


def tracker_tmp(tracker):
    path = os.path.dirname(tracker.uri[len("sqlite:///"):])
    return path


def test_sigkill_then_resume_gives_one_finished_child_per_interval(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "vampstudy.cli", "run", "periodic", "--backend", "reference",
           "--tracking-uri", uri]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    tracker = None
    finished = 0
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
            try:
                tracker = tracker or Tracker(uri)
                exp = tracker.experiment_id("periodic", create=False)
                if exp is None:
                    continue
                runs = tracker.find_runs(exp, {"vampstudy.role": "condition"}, ("FINISHED",))
                finished = len(runs)
            except Exception:
                continue
            if finished >= 3:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the study ended before it could be killed"
    assert 3 <= finished < 11
    done = subprocess.run(cmd + ["--resume"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    exp = tracker.experiment_id("periodic", create=False)
    parents = tracker.find_runs(exp, {"vampstudy.role": "study"})
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = tracker.find_runs(exp, {"mlflow.parentRunId": parents[0].info.run_id})
    finished = [c for c in children if c.info.status == "FINISHED"]
    intervals = sorted(int(c.data.params["interval"]) for c in finished
                       if "vampstudy.control" not in c.data.tags)
    assert intervals == list(NOTEBOOK_INTERVALS)
    controls = sorted(c.info.run_name for c in finished if "vampstudy.control" in c.data.tags)
    assert controls == sorted(["codec"] + [f"noise interval={p}" for p in NOTEBOOK_INTERVALS])
    assert "reused from the resumed run" in done.stdout
    assert tracker.load_table(parents[0].info.run_id, "summary")


def test_single_prompt_intervals_warn(backend, tracker, music_3s, caplog):
    # 3 s = 173 steps: interval 200 leaves at most one prompt — a warning, not an error
    with caplog.at_level("WARNING"):
        run_study(PeriodicIntervalStudy(intervals=(2, 200)), backend, tracker,
                  audio=[str(music_3s)])
    assert "interval 200 exceeds the clip (173 tokens" in caplog.text
    assert "only its first token is kept as a prompt" in caplog.text
    assert "interval 2 " not in caplog.text
