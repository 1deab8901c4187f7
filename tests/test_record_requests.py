"""Recording a child run costs one request per job: create, dataset, one batch of values,
one upload per file, close — measured against a real ``mlflow server`` (benchmarks/bench_server.py
shows what that buys at scale). Tables travel in the same batch and upload, in MLflow's own
table format."""

from __future__ import annotations

import math
from collections import Counter
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
import torch
from audiotools import AudioSignal

from servers import start_mlflow_server
from vampstudy.layout import TAG_TRIAL
from vampstudy.plan import PlannedTrial
from vampstudy.record import record_child
from vampstudy.study import Condition, Outcome, Trial
from vampstudy.tracking import TAG_LOGGED_ARTIFACTS, Tracker

ROWS = [{"interval": 3, "density": np.float64(0.66), "label": "a", "pct": 1.5},
        {"interval": 7, "density": 0.857, "label": "b", "pct": float("nan")}]


def test_a_table_reads_back_as_mlflow_log_table_writes_it(tracker):
    """Tracker.log_table (one upload, tag in the batch) and MlflowClient.log_table give the
    same tag and the same table through MLflow's own reader; the CSV has the same rows."""
    exp = tracker.experiment_id("tables")
    ours, theirs = (tracker.start_run(exp, name, {}) for name in ("ours", "mlflow"))
    tracker.log_table(ours, ROWS, "t")
    columns = list(ROWS[0])
    tracker.client.log_table(theirs, data={c: [r[c] for r in ROWS] for c in columns},
                             artifact_file="t.json")
    tag = {r: tracker.get_run(r).data.tags[TAG_LOGGED_ARTIFACTS] for r in (ours, theirs)}
    assert tag[ours] == tag[theirs]
    frames = {r: tracker.client.load_table(exp, "t.json", run_ids=[r]) for r in (ours, theirs)}
    assert list(frames[ours].columns) == list(frames[theirs].columns)
    for column in columns:
        a, b = list(frames[ours][column]), list(frames[theirs][column])
        assert all((isinstance(x, float) and math.isnan(x) and math.isnan(y)) or x == y
                   for x, y in zip(a, b)), column
    assert tracker.load_table(ours, "t")[0] == {"interval": 3, "density": 0.66, "label": "a",
                                                "pct": 1.5}
    assert tracker.load_table(ours, "t")[1]["pct"] is None
    with open(tracker.download(ours, "t.csv", str(tracker.uri.split("///")[1] + ".d"))) as f:
        assert f.read().splitlines()[0] == "interval,density,label,pct"
    # a second table keeps the first listed (the tag is merged, not replaced)
    tracker.log_table(ours, ROWS[:1], "u")
    listed = tracker.get_run(ours).data.tags[TAG_LOGGED_ARTIFACTS]
    assert '"t.json"' in listed and '"u.json"' in listed


@pytest.fixture
def server(tmp_path):
    with start_mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts") as s:
        yield s


def _outcome() -> Outcome:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = {}
    for name in ("mask", "spectrogram"):
        fig, ax = plt.subplots(figsize=(2, 1))
        ax.plot([0, 1])
        figures[name] = fig
    return Outcome(params={"interval": 7}, metrics={f"m{i}": float(i) for i in range(20)},
                   series={"by_codebook": [1.0] * 14},
                   audio={"output": AudioSignal(torch.zeros(1, 1, 4410), 44100)},
                   arrays={"codes": np.zeros((1, 4, 10), dtype=np.int64)},
                   figures=figures, tables={"by_codebook": ROWS})


def test_recording_a_child_on_a_server_sends_one_request_per_job(server, monkeypatch, tmp_path):
    tracker = Tracker(server.url)
    exp = tracker.experiment_id("requests")
    parent = tracker.start_run(exp, "parent", {})
    clip = type("Clip", (), {"identity": {"name": "clip", "path": str(tmp_path / "clip.wav")}})()
    trial = Trial(condition=Condition({"interval": 7}), clip=clip, seed=0)
    planned = PlannedTrial(0, trial, "interval=7", {TAG_TRIAL: "k7"}, {"study": "x"})

    sent: Counter = Counter()
    send = requests.Session.send

    def counting(self, request, **kwargs):
        path = urlsplit(request.url).path
        kind = "artifact" if "/mlflow-artifacts/artifacts/" in path else path.rsplit("/", 2)[-2:]
        sent[f"{request.method} {'/'.join(kind) if isinstance(kind, list) else kind}"] += 1
        return send(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", counting)
    child = record_child(tracker, exp, parent, planned, _outcome())
    monkeypatch.undo()

    files = {"audio/output.wav", "arrays.npz", "figures/mask.png", "figures/spectrogram.png",
             "by_codebook.json", "by_codebook.csv"}
    assert dict(sent) == {"POST runs/create": 1, "POST runs/log-inputs": 1,
                          "POST runs/log-batch": 1, "PUT artifact": len(files),
                          "POST runs/update": 1}, "extra requests per child run"
    run = tracker.get_run(child)
    assert run.info.status == "FINISHED"
    assert run.data.params["interval"] == "7" and len(run.data.metrics) == 21
    listed = {f.path for f in tracker.client.list_artifacts(child)}
    listed |= {f.path for d in ("audio", "figures") for f in tracker.client.list_artifacts(child, d)}
    assert files <= listed
    assert tracker.load_table(child, "by_codebook")[0]["interval"] == 3


def test_a_dataset_another_run_created_meanwhile_is_linked(tracker, monkeypatch):
    """Two children logging the same new dataset at once race in MLflow's store (seen by
    benchmarks/bench_server.py at 8 writers on PostgreSQL: the later insert breaks the
    dataset's unique key, 400). Here the other run wins the race for real; the request that
    lost it is answered with the error the server gave, and the run is still linked."""
    import mlflow

    exp = tracker.experiment_id("race")
    first, second = (tracker.start_run(exp, name, {}) for name in ("first", "second"))
    clips = [{"name": "clip", "path": "/nonexistent/clip.wav", "sha256": "ab"}]
    log_inputs = tracker.client.log_inputs
    calls = []

    def racing(run_id, datasets=None, **kwargs):
        calls.append(run_id)
        if len(calls) == 1:   # the other run inserts the dataset inside our request's window
            log_inputs(first, datasets=datasets, **kwargs)
            raise mlflow.exceptions.RestException(
                {"error_code": "BAD_REQUEST", "message": "(psycopg.errors.UniqueViolation) "
                 'duplicate key value violates unique constraint "dataset_pk"'})
        return log_inputs(run_id, datasets=datasets, **kwargs)

    monkeypatch.setattr(tracker.client, "log_inputs", racing)
    tracker.log_dataset(second, "clips", clips)
    assert calls == [second, second]
    for run in (first, second):
        (linked,) = tracker.get_run(run).inputs.dataset_inputs
        assert linked.dataset.name == "clips"

    def other_error(run_id, datasets=None, **kwargs):
        raise mlflow.exceptions.RestException({"error_code": "BAD_REQUEST", "message": "no"})

    monkeypatch.setattr(tracker.client, "log_inputs", other_error)
    with pytest.raises(mlflow.exceptions.MlflowException, match="no"):
        tracker.log_dataset(second, "clips", clips)
