"""``--executor ray``: same results as the local executors, lost workers retried, clean exit.

Skips where Ray (the optional extra ``vampstudy[ray]``) is not installed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import soundfile as sf

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'vampstudy[ray]'")

from click.testing import CliRunner  # noqa: E402

from servers import start_mlflow_server  # noqa: E402
from studies.anchored_periodic import AnchoredPeriodicStudy  # noqa: E402
from vampstudy.audio import synthesize_demo  # noqa: E402
from vampstudy.backends import load_backend  # noqa: E402
from vampstudy.cli import main  # noqa: E402
from vampstudy.executors.ray import RayExecutor  # noqa: E402
from vampstudy.registry import find_study  # noqa: E402
from vampstudy.runner import StudyFailed, run_study  # noqa: E402
from vampstudy.testing import SleepyBackend  # noqa: E402
from vampstudy.tracking import TAG_PARENT, TAG_ROLE, TAG_TRIAL, Tracker  # noqa: E402

SLEEPY = "vampstudy.testing:SleepyBackend"


class ExitingBackend(SleepyBackend):
    """The sleepy test backend, whose process exits (as if killed) when it vamps ``seed``,
    the first ``times`` times: each exit appends a line to ``marker``."""

    def __init__(self, device: str = "cpu", delay: float = 0.0, marker: str = "", seed: int = 1,
                 times: int = 1):
        super().__init__(device=device, delay=delay)
        self.marker, self.exit_seed, self.times = marker, seed, times

    def vamp(self, codes, mask, seed=None, **options):
        path = Path(self.marker)
        if seed == self.exit_seed and (path.read_text().count("\n") if path.exists() else 0) < self.times:
            with path.open("a") as f:
                f.write(f"{os.getpid()}\n")
            os._exit(1)
        return super().vamp(codes, mask, seed=seed, **options)


def ray_processes_of(pid: int, with_pid: bool = False) -> list[str]:
    """Command lines (``PID cmdline`` with ``with_pid``) of Ray processes descending from
    ``pid`` (via /proc)."""
    children: dict[int, list[int]] = {}
    cmdlines: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            state = stat.rsplit(")", 1)[1].split()[0]
            if state == "Z":
                continue
            cmdlines[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        if "ray" in cmdlines.get(p, ""):
            found.append((f"{p} " if with_pid else "") + cmdlines[p][:120])
        todo += children.get(p, [])
    return found


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "clip.wav"
    sf.write(path, synthesize_demo(duration=1.5, seed=3), 44100, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the fault tests (the executor uses a running Ray and leaves it up)."""
    tmp = tempfile.mkdtemp(prefix="vs-ray-t-", dir="/tmp")
    ray.init(num_cpus=4, object_store_memory=300 * 2 ** 20, include_dashboard=False,
             log_to_driver=False, _temp_dir=tmp)
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def children_of(tracker: Tracker, parent_id: str) -> list:
    exp = tracker.get_run(parent_id).info.experiment_id
    return tracker.find_runs(exp, {TAG_PARENT: parent_id})


def periodic(**kw):
    """The executor tests follow the conditions: no control runs (those run as any trial)."""
    study = find_study("periodic").cls(intervals=(3, 7, 20), **kw)
    study.controls = False
    return study


def test_ray_cli_gives_the_same_metrics_as_sequential(clip, tmp_path, monkeypatch):
    """`vampstudy run periodic --executor ray --workers 2` records, for the same seeds, the
    same children with the same params and every metric equal to the sequential executor's;
    the local Ray it started is gone afterwards."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["run", "periodic", "--no-controls", "--backend", "reference", "--device", "cpu", "--intervals",
              "3,7,20", "--audio", str(clip), "--seeds", "0,1", "--tracking-uri", uri]
    runner = CliRunner()
    seq = runner.invoke(main, common + ["--executor", "sequential", "--experiment", "seq"])
    assert seq.exit_code == 0, seq.output
    par = runner.invoke(main, common + ["--executor", "ray", "--workers", "2", "--experiment", "ray"])
    assert par.exit_code == 0, par.output
    assert ray_processes_of(os.getpid()) == [], "Ray processes outlived the command"
    assert not ray.is_initialized()

    tracker = Tracker(uri)
    parents = {}
    for exp in ("seq", "ray"):
        (parent,) = tracker.find_runs(tracker.experiment_id(exp, create=False), {TAG_ROLE: "study"})
        assert parent.info.status == "FINISHED"
        parents[exp] = parent
    assert parents["ray"].data.params["executor"] == "ray"
    assert parents["ray"].data.params["workers"] == "2"
    kids = {exp: {r.data.tags[TAG_TRIAL]: r for r in children_of(tracker, p.info.run_id)}
            for exp, p in parents.items()}
    assert len(kids["seq"]) == 6 and kids["seq"].keys() == kids["ray"].keys()
    for key, s in kids["seq"].items():
        r = kids["ray"][key]
        assert r.info.status == s.info.status == "FINISHED"
        assert r.info.run_name == s.info.run_name
        assert r.data.params == s.data.params
        assert set(s.data.metrics) >= {"tokens_changed_pct", "mask_density", "mel_distance"}
        assert r.data.metrics.keys() == s.data.metrics.keys()
        # token metrics count equal tokens: exactly equal (same seeds → same tokens)
        tokens = {k: v for k, v in s.data.metrics.items() if "changed_pct" in k or "density" in k}
        assert tokens and {k: r.data.metrics[k] for k in tokens} == tokens, r.info.run_name
        # audio metrics are float32 sums whose last digits depend on torch's thread count
        # (a Ray worker computes with one thread): equal to 1e-5; a loudness difference (two
        # gated K-weighted levels of ~-24 LUFS subtracted) to 1e-3 dB absolute (2.7e-5 seen)
        db = {k for k in s.data.metrics if k.endswith("_db")}
        assert ({k: v for k, v in r.data.metrics.items() if k not in db}
                == pytest.approx({k: v for k, v in s.data.metrics.items() if k not in db},
                                 rel=1e-5, abs=1e-6)), r.info.run_name
        assert ({k: r.data.metrics[k] for k in db}
                == pytest.approx({k: s.data.metrics[k] for k in db}, abs=1e-3)), r.info.run_name
        assert (sorted(tracker.list_artifacts(r.info.run_id, "figures"))
                == sorted(tracker.list_artifacts(s.info.run_id, "figures"))
                == ["figures/mask.png", "figures/spectrogram.png"])
    # the summaries on the parents agree too
    seq_rows = tracker.load_table(parents["seq"].info.run_id)
    ray_rows = tracker.load_table(parents["ray"].info.run_id)
    assert len(seq_rows) == len(ray_rows) == 3
    for a, b in zip(seq_rows, ray_rows):
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], float):
                assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6, nan_ok=True), k
            else:
                assert b[k] == a[k], k


def _run_exiting(tracker, clip, tmp_path, times: int, max_retries: int, workers: int = 2):
    marker = tmp_path / "exits.txt"
    options = {"device": "cpu", "delay": 0.0, "marker": str(marker), "seed": 1, "times": times}
    backend = ExitingBackend(**options)
    executor = RayExecutor(workers=workers, max_retries=max_retries)
    try:
        result = run_study(periodic(), backend, tracker, audio=[str(clip)], seeds=[0, 1],
                           executor=executor, backend_spec=("test_ray:ExitingBackend", options))
        failure = None
    except StudyFailed as exc:
        result, failure = exc.result, exc
    return result, failure, marker, executor


def test_killed_worker_is_retried_on_a_fresh_worker(ray_session, tracker, clip, tmp_path):
    """A worker process that dies mid-trial: the trial is retried elsewhere and the study
    finishes with one FINISHED child per trial."""
    result, failure, marker, executor = _run_exiting(tracker, clip, tmp_path, times=1,
                                                     max_retries=2)
    assert failure is None
    assert marker.read_text().count("\n") == 1, "the worker should have died exactly once"
    assert executor.stats["deaths"] == 1
    kids = children_of(tracker, result.parent_run_id)
    assert sorted(k.info.status for k in kids) == ["FINISHED"] * 6
    assert len({k.data.tags[TAG_TRIAL] for k in kids}) == 6
    assert tracker.get_run(result.parent_run_id).info.status == "FINISHED"


def test_retries_exhausted_fail_only_that_trial(ray_session, tracker, clip, tmp_path):
    """A trial whose worker dies every time: FAILED child with the reason after
    1 + max_retries attempts; every other trial finishes."""
    result, failure, marker, executor = _run_exiting(tracker, clip, tmp_path, times=99,
                                                     max_retries=1)
    assert failure is not None and "WorkerDied" in str(failure)
    seed1 = [o for o in result.outcomes if o.trial.seed == 1]
    assert marker.read_text().count("\n") >= 2
    kids = children_of(tracker, result.parent_run_id)
    by_status: dict[str, list] = {}
    for k in kids:
        by_status.setdefault(k.info.status, []).append(k)
    # the three seed-1 trials all die (each 2 attempts); the three seed-0 ones finish
    assert len(by_status["FINISHED"]) == 3 and not seed1
    assert len(by_status["FAILED"]) == 3
    for k in by_status["FAILED"]:
        assert k.data.params["seed"] == "1"
        assert "died 2 times" in k.data.tags["vampstudy.error"]
        assert "--max-retries 1" in k.data.tags["vampstudy.error"]
    assert tracker.get_run(result.parent_run_id).info.status == "FAILED"


def test_workers_record_their_own_runs_on_a_tracking_server(ray_session, clip, tmp_path):
    """With a tracking server, workers create the child runs (the driver only the parent),
    in the same layout, artifacts served by the server."""
    with start_mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts") as server:
        tracker = Tracker(server.url)
        options = {"device": "cpu", "delay": 0.0}
        backend = load_backend(SLEEPY, **options)
        executor = RayExecutor(workers=2)
        recorded = []

        original_execute = executor.execute

        def execute(job, trials, sink):   # see which results arrive already recorded
            def spy(result):
                recorded.append(result.run_id)
                sink(result)
            return original_execute(job, trials, spy)

        executor.execute = execute
        result = run_study(periodic(), backend, tracker, audio=[str(clip)], seeds=[0],
                           executor=executor, backend_spec=(SLEEPY, options))
        kids = children_of(tracker, result.parent_run_id)
        assert len(recorded) == 3 and all(recorded), "children were not recorded by workers"
        assert sorted(k.info.run_id for k in kids) == sorted(recorded)
        assert all(k.info.status == "FINISHED" for k in kids)
        assert all(k.info.artifact_uri.startswith("mlflow-artifacts:/") for k in kids)
        assert "audio/output.wav" in tracker.list_artifacts(kids[0].info.run_id, "audio")
        assert tracker.get_run(result.parent_run_id).info.status == "FINISHED"
        assert list((tmp_path / "artifacts").rglob("output.wav"))


class AnchoredOrBad(AnchoredPeriodicStudy):
    """anchored-periodic, whose mask for period 99 is (wrongly) float."""

    name = "anchored-or-bad"
    fidelity = False

    def mask(self, trial, backend):
        mask = super().mask(trial, backend)
        return mask.float() if trial.condition.params["period"] == 99 else mask


def test_a_study_s_own_mask_runs_on_the_workers(ray_session, tracker, clip):
    """The mask hook runs on the Ray workers: the same masks and tokens as sequential, and a
    bad mask fails only its trial, with the one-line MaskError."""
    backend = load_backend("reference", device="cpu")
    results = {}
    for name, executor in (("sequential", "sequential"), ("ray", RayExecutor(workers=1))):
        with pytest.raises(StudyFailed) as info:
            study = AnchoredOrBad(periods=(4, 99))
            study.controls = False   # the noise control would reuse the bad mask
            run_study(study, backend, tracker, audio=[str(clip)],
                      executor=executor, experiment=name)
        results[name] = info.value
    for failure in results.values():
        assert list(failure.errors) == ["period=99"]
        assert failure.errors["period=99"].startswith(
            "MaskError: AnchoredOrBad.mask() of study 'anchored-or-bad' for trial 'period=99'")
    (seq,), (par,) = results["sequential"].result.outcomes, results["ray"].result.outcomes
    assert seq.trial.condition.params == par.trial.condition.params == {"period": 4}
    for key in ("mask", "codes_out"):
        assert (seq.arrays[key] == par.arrays[key]).all(), key
    assert (seq.arrays["mask"][0, 0] == 0).all() and (seq.arrays["mask"][0, 3:] == 1).all()
    assert seq.metrics == par.metrics


def test_ray_options_are_refused_without_ray_executor(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["run", "periodic", "--no-controls", "--backend", "reference", "--workers", "2",
                                    "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert out.exit_code != 0
    assert "--workers only apply to --executor ray" in out.output


def test_more_gpus_than_the_machine_has_is_a_clear_error(ray_session):
    executor = RayExecutor(workers=2, gpus_per_worker=0.5)
    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus >= 1:
        pytest.skip("this machine has GPUs")
    with pytest.raises(Exception, match="--gpus-per-worker"):
        executor._connect()


def test_ctrl_c_kills_the_workers_and_marks_open_runs_killed(clip, tmp_path):
    """SIGINT to the command's process group (a terminal's Ctrl-C) mid-study: exit 130, the
    study KILLED, finished children kept, and no Ray process left behind."""
    import signal
    import subprocess
    import sys
    import time

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vampstudy.cli", "run", "periodic", "--no-controls", "--backend", SLEEPY,
         "--intervals", ",".join(str(i) for i in range(2, 42)), "--audio", str(clip),
         "--executor", "ray", "--workers", "2", "--tracking-uri", uri],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    tracker = Tracker(uri)
    deadline = time.monotonic() + 300
    kids, ray_pids = [], []
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(1)
        ray_pids = ray_pids or [int(l.split()[0]) for l in _ray_pids_of(proc.pid)]
        exp = tracker.experiment_id("periodic", create=False)
        parents = tracker.find_runs(exp, {TAG_ROLE: "study"}) if exp else []
        kids = children_of(tracker, parents[0].info.run_id) if parents else []
        if any(k.info.status == "FINISHED" for k in kids):
            break
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    assert ray_pids, "no Ray processes were seen under the command"
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-3000:]
    (parent,) = tracker.find_runs(tracker.experiment_id("periodic", create=False), {TAG_ROLE: "study"})
    assert parent.info.status == "KILLED"
    kids = children_of(tracker, parent.info.run_id)
    assert 1 <= len(kids) < 40
    assert {k.info.status for k in kids} <= {"FINISHED", "KILLED"}
    time.sleep(2)
    alive = [p for p in ray_pids if Path(f"/proc/{p}").exists()
             and "Z" not in Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[:1]]
    assert alive == [], f"Ray processes {alive} survived Ctrl-C"


def _ray_pids_of(pid: int) -> list[str]:
    """'PID cmdline' of Ray processes under ``pid`` (see ray_processes_of)."""
    return ray_processes_of(pid, with_pid=True)
