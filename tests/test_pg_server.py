"""A shared MLflow tracking server on PostgreSQL: several studies and workers write at once.

Skips with a clear reason where PostgreSQL (initdb/pg_ctl) or psycopg is absent;
CI installs both (.ci/system-packages, the ``dev`` extra).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from servers import postgres_cluster, start_mlflow_server
from studies.periodic import PeriodicIntervalStudy
from vampstudy.audio import synthesize_demo
from vampstudy.tracking import TAG_PARENT, TAG_ROLE, TAG_TRIAL, Tracker


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory):
    """``mlflow server`` with a PostgreSQL backend store and served artifacts."""
    with postgres_cluster() as pg:
        uri = pg.create_database("mlflow")
        assert uri.startswith("postgresql+psycopg://")
        root = tmp_path_factory.mktemp("pg-server")
        with start_mlflow_server(uri, root / "artifacts", workers=2) as server:
            yield server


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "short.wav"
    sf.write(path, synthesize_demo(duration=1.5, seed=3), 44100, subtype="PCM_16")
    return path


def study_children(tracker: Tracker, experiment: str) -> dict[str, list]:
    """Children by parent run id in ``experiment``."""
    exp = tracker.experiment_id(experiment, create=False)
    assert exp is not None, f"experiment {experiment!r} was not created"
    runs = tracker.client.search_runs([exp], max_results=5000)
    parents = {r.info.run_id: [] for r in runs if r.data.tags.get(TAG_ROLE) == "study"}
    for r in runs:
        if r.data.tags.get(TAG_ROLE) == "condition":
            parents.setdefault(r.data.tags.get(TAG_PARENT), []).append(r)
    return parents


def test_server_uses_postgresql(pg_server):
    """The runs really live in PostgreSQL, and artifacts go through the server."""
    tracker = Tracker(pg_server.url)
    exp = tracker.experiment_id("pg-smoke")
    run = tracker.start_run(exp, "smoke", {"k": "v"})
    tracker.log_text(run, "hello", "notes/hello.txt")
    tracker.finish(run)
    import psycopg

    dsn = pg_server.backend_store_uri.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        status = conn.execute("SELECT status FROM runs WHERE run_uuid = %s", (run,)).fetchone()
    assert status == ("FINISHED",)
    assert tracker.get_run(run).info.artifact_uri.startswith("mlflow-artifacts:/")
    assert tracker.list_artifacts(run, "notes") == ["notes/hello.txt"]
    assert list(pg_server.artifacts_dir.rglob("hello.txt")), "artifact not stored by the server"


def test_two_studies_at_once_on_one_server(pg_server, short_clip, tmp_path):
    """Two `vampstudy run` processes launched together on the same server and experiment
    both finish, each with its own parent and one FINISHED child per condition."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cmds = [[sys.executable, "-m", "vampstudy.cli", "run", "periodic", "--backend", "reference",
             "--intervals", "3,7,20", "--audio", str(short_clip), "--seed", str(seed),
             "--tracking-uri", pg_server.url, "--experiment", "pg-concurrent"]
            for seed in (0, 1)]
    procs = [subprocess.Popen(c, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for c in cmds]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]

    tracker = Tracker(pg_server.url)
    parents = study_children(tracker, "pg-concurrent")
    assert len(parents) == 2
    for parent_id, children in parents.items():
        assert tracker.get_run(parent_id).info.status == "FINISHED"
        assert sorted(c.info.status for c in children) == ["FINISHED"] * 3
        keys = [c.data.tags[TAG_TRIAL] for c in children]
        assert len(set(keys)) == 3, "a trial was recorded twice"
        assert all("tokens_changed_pct" in c.data.metrics for c in children)
        assert "audio/output.wav" in tracker.list_artifacts(children[0].info.run_id, "audio")
    assert not any((tmp_path / "mlruns").glob("*")), "a study wrote to the local store"


def test_four_ray_workers_forty_trials_no_run_lost_or_duplicated(pg_server, short_clip):
    """4 Ray workers record 40 trials themselves on the PostgreSQL-backed server:
    40 FINISHED children, one per trial key, none lost, none twice."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'vampstudy[ray]'")
    from vampstudy.backends import load_backend
    from vampstudy.executors.ray import RayExecutor
    from vampstudy.runner import run_study

    options = {"device": "cpu", "delay": 0.2}
    spec = "vampstudy.testing:SleepyBackend"
    backend = load_backend(spec, **options)
    tracker = Tracker(pg_server.url)
    study = TokenPeriodic(intervals=tuple(range(2, 12)))
    study.controls = False   # 40 condition trials, counted below
    executor = RayExecutor(workers=4)
    result = run_study(study, backend, tracker, audio=[str(short_clip)], seeds=[0, 1, 2, 3],
                       experiment="pg-ray", executor=executor, backend_spec=(spec, options))
    assert executor.stats["deaths"] == 0
    children = study_children(tracker, "pg-ray")[result.parent_run_id]
    keys = [c.data.tags[TAG_TRIAL] for c in children]
    assert len(children) == 40, f"{40 - len(children)} runs lost or {len(children) - 40} extra"
    assert len(set(keys)) == 40, "a trial was recorded twice"
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {c.info.run_id for c in children} == {o.run_id for o in result.outcomes}
    assert all("tokens_changed_pct" in c.data.metrics for c in children)
    assert tracker.get_run(result.parent_run_id).info.status == "FINISHED"


class TokenPeriodic(PeriodicIntervalStudy):
    """The periodic study without the audio fidelity metrics (cheap measurement stage)."""

    name = "periodic-tokens"
    fidelity = False
