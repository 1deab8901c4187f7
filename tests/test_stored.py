"""Memory flat in trials (issue 19): recorded outcomes keep no audio, arrays or figures in
memory; the analysis reads them back and gives exactly what the in-memory outcomes gave."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
import torch
from audiotools import AudioSignal

from studies.periodic import PeriodicIntervalStudy
from vampstudy.execute import run_trial
from vampstudy.plan import plan_study
from vampstudy.plots import RenderedFigure
from vampstudy.record import reload_outcome
from vampstudy.runner import prepare_clips, run_study
from vampstudy.stored import ArtifactReader, StoredArrays, StoredAudio, holds_audio
from vampstudy.study import Session, canonical_json
from vampstudy.testing import InstantBackend
from vampstudy.tracking import Tracker

SEEDS = [0, 1]


@pytest.fixture(scope="module")
def studied(tmp_path_factory, music_3s):
    """One recorded periodic study (2 intervals × 2 seeds + controls) on the instant test backend."""
    tmp = tmp_path_factory.mktemp("stored")
    backend = InstantBackend(device="cpu")
    tracker = Tracker(f"sqlite:///{tmp / 'mlflow.db'}")
    study = PeriodicIntervalStudy(intervals=[3, 7])
    clips = prepare_clips(backend, [str(music_3s)])
    result = run_study(study, backend, tracker, clips=clips, seeds=SEEDS, executor="sequential")
    return study, backend, tracker, clips, result


def _in_memory_outcomes(study, backend, clips):
    """The same trials computed again and kept in memory, figures rendered as the recorder
    renders them: what the analysis saw before outcomes were compacted."""
    plan = plan_study(study, backend, clips, SEEDS)
    outcomes = []
    for planned in plan.trials:
        outcome = run_trial(study, planned.trial, backend)
        outcome.figures = {k: RenderedFigure.of(f) for k, f in outcome.figures.items()}
        outcome.trial = planned.trial
        outcomes.append(outcome)
    return outcomes


def _same(a, b) -> bool:
    """Equal values, NaN equal to NaN (exact floats, through their JSON text)."""
    return canonical_json(a) == canonical_json(b)


def _ogg_without_serials(data: bytes) -> bytes:
    """An Ogg stream with each page's serial number and checksum zeroed: the Vorbis
    encoder picks a random serial per encoding, the rest is deterministic."""
    out, pos = bytearray(data), 0
    while pos + 27 <= len(out) and out[pos:pos + 4] == b"OggS":
        n = out[pos + 26]
        out[pos + 14:pos + 18] = out[pos + 22:pos + 26] = bytes(4)
        pos += 27 + n + sum(out[pos + 27:pos + 27 + n])
    assert pos == len(out), "not an Ogg stream"
    return bytes(out)


def _comparable_report(page: str) -> str:
    """The report with every embedded Ogg player's random serial numbers zeroed."""
    def normal(m):
        ogg = _ogg_without_serials(base64.b64decode(m.group(1)))
        return f"data:audio/ogg;base64,{base64.b64encode(ogg).decode()}'"
    return re.sub(r"data:audio/ogg;base64,([A-Za-z0-9+/=]+)'", normal, page)


def _large_values(value, seen=None):
    """Every audio signal, tensor, array or PNG reachable from ``value`` (dicts, lists, attrs)."""
    seen = seen if seen is not None else set()
    if id(value) in seen:
        return []
    seen.add(id(value))
    if isinstance(value, (AudioSignal, torch.Tensor, np.ndarray)):
        return [value]
    if isinstance(value, (bytes, bytearray)) and len(value) > 4096:
        return [value]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _large_values(v, seen)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _large_values(v, seen)]
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return [x for k, v in vars(value).items() if k not in ("trial", "_reader")
                for x in _large_values(v, seen)]
    return []


def test_recorded_outcomes_hold_no_audio(studied):
    study, backend, _, clips, result = studied
    assert len(result.outcomes) == len(plan_study(study, backend, clips, SEEDS).trials) > 4
    for o in result.outcomes:
        assert isinstance(o.audio, StoredAudio) and isinstance(o.arrays, StoredArrays)
        assert not holds_audio(o)
        assert "output" in o.audio and "mask" in o.arrays
        assert set(o.figures) == {"mask", "spectrogram"}
        assert all("png" not in vars(f) for f in o.figures.values())
        assert _large_values(o) == [], f"{o.trial.condition.name} keeps data in memory"
        # and each read gives a fresh object, freed when the caller drops it
        assert o.audio["output"] is not o.audio["output"]


def test_analysis_identical_to_in_memory_outcomes(studied):
    study, backend, tracker, clips, result = studied
    session = Session(backend=backend, clips=clips, seeds=SEEDS)
    memory = _in_memory_outcomes(study, backend, clips)
    for m, o in zip(memory, result.outcomes):
        assert m.trial.key == o.trial.key and _same(m.metrics, o.metrics)
        assert torch.equal(m.audio["output"].audio_data, o.audio["output"].audio_data)
        assert m.audio["output"].sample_rate == o.audio["output"].sample_rate
        for name in m.arrays:
            assert np.array_equal(m.arrays[name], o.arrays[name]), name
        for name in m.figures:
            assert m.figures[name].png == o.figures[name].png
    before = study.analyze(memory, session)
    after = study.analyze(result.outcomes, session)
    assert _same(after.tables, before.tables)
    assert after.texts.keys() == before.texts.keys() and "report.html" in after.texts
    assert after.texts["observations.txt"] == before.texts["observations.txt"]
    assert "data:audio/ogg" in before.texts["report.html"]
    assert (_comparable_report(after.texts["report.html"])
            == _comparable_report(before.texts["report.html"]))
    assert _same(after.metrics, before.metrics) and _same(after.params, before.params)
    assert after.files == before.files
    assert ({k: RenderedFigure.of(f).png for k, f in after.figures.items()}
            == {k: RenderedFigure.of(f).png for k, f in before.figures.items()})
    # the report the run recorded is that same page
    recorded = tracker.artifact_reader(result.parent_run_id).read("report.html").decode()
    assert _comparable_report(recorded) == _comparable_report(before.texts["report.html"])


def test_reloaded_outcomes_are_lazy_and_equal(studied):
    study, backend, tracker, clips, result = studied
    session = Session(backend=backend, clips=clips, seeds=SEEDS)
    reloaded = [reload_outcome(tracker, tracker.get_run(o.run_id), o.trial) for o in result.outcomes]
    for r, o in zip(reloaded, result.outcomes):
        assert isinstance(r.audio, StoredAudio) and not holds_audio(r)
        assert torch.equal(r.audio["output"].audio_data, o.audio["output"].audio_data)
        assert sorted(r.arrays) == sorted(o.arrays)
        assert np.array_equal(r.arrays["codes_out"], o.arrays["codes_out"])
        finite = {k: v for k, v in o.metrics.items() if np.isfinite(v)}   # NaN is not logged
        assert _same({k: r.metrics[k] for k in finite}, finite)
    assert _same(study.analyze(reloaded, session).tables, study.analyze(result.outcomes, session).tables)


def test_reader_downloads_when_the_store_is_not_local(studied):
    _, _, tracker, _, result = studied
    run_id = result.outcomes[0].run_id
    local = tracker.artifact_reader(run_id)
    assert local.local_dir is not None   # a sqlite store: read in place
    remote = ArtifactReader(download=lambda path, dst: tracker.download(run_id, path, dst))
    for path in ("audio/output.wav", "arrays.npz", "figures/mask.png"):
        assert remote.read(path) == local.read(path)
    with pytest.raises(ValueError, match="local folder or a download"):
        ArtifactReader()
