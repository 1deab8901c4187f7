"""Memory flat in trials (issue 19): recorded outcomes keep no audio, arrays or figures in
memory; the analysis reads them back and gives exactly what the in-memory outcomes gave."""

from __future__ import annotations

import base64
import copy
import gc
import pickle
import re
import weakref
from collections.abc import Mapping

import numpy as np
import pytest
import torch
from audiotools import AudioSignal

from studies.periodic import PeriodicIntervalStudy
from vampstudy.execute import run_trial
from vampstudy.plan import plan_study
from vampstudy.plots import RenderedFigure
from vampstudy.listening import (group_outcomes, listening_report, listening_report_file,
                                 write_listening_report)
from vampstudy.record import record_contents, reload_outcome
from vampstudy.runner import prepare_clips, run_study
from vampstudy.spool import SpooledFile
from vampstudy.stored import ArtifactReader, StoredArrays, StoredAudio, holds_audio
from vampstudy.study import Session, Summary, canonical_json
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
    assert after.texts.keys() == before.texts.keys() == {"observations.txt"}
    assert after.texts["observations.txt"] == before.texts["observations.txt"]
    # the page is spooled to disk, never one string in the summary
    page_after, page_before = after.files.pop("report.html"), before.files.pop("report.html")
    assert isinstance(page_after, SpooledFile) and isinstance(page_before, SpooledFile)
    page_before = page_before.read().decode()
    assert "data:audio/ogg" in page_before
    assert _comparable_report(page_after.read().decode()) == _comparable_report(page_before)
    assert _same(after.metrics, before.metrics) and _same(after.params, before.params)
    assert after.files == before.files
    assert ({k: RenderedFigure.of(f).png for k, f in after.figures.items()}
            == {k: RenderedFigure.of(f).png for k, f in before.figures.items()})
    # the report the run recorded is that same page
    recorded = tracker.artifact_reader(result.parent_run_id).read("report.html").decode()
    assert _comparable_report(recorded) == _comparable_report(page_before)


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


class _CountingAudio(Mapping):
    """An outcome's stored audio that counts the decoded signals alive at once."""

    live = 0   # decoded signals not yet freed
    most = 0

    def __init__(self, stored):
        self._stored = stored

    def __iter__(self):
        return iter(self._stored)

    def __len__(self):
        return len(self._stored)

    def __getitem__(self, name):
        signal = self._stored[name]
        cls = type(self)
        cls.live += 1
        cls.most = max(cls.most, cls.live)
        weakref.finalize(signal, cls._freed)
        return signal

    @classmethod
    def _freed(cls):
        cls.live -= 1


def test_report_streams_one_card_and_one_output_at_a_time(studied):
    """The listening report is written card by card while at most two decoded outputs are
    alive (the one in hand and, for an instant, the one before it): the page of a study of
    any length never sits in memory, nor do its outputs (issue 19)."""
    study, backend, tracker, clips, result = studied
    outcomes = []
    for o in result.outcomes:
        o = copy.copy(o)
        o.audio = _CountingAudio(o.audio)
        outcomes.append(o)
    session = Session(backend=backend, clips=clips, seeds=SEEDS)
    pieces = []
    _CountingAudio.live = _CountingAudio.most = 0

    def write(text):
        gc.collect()
        pieces.append((len(text.encode()), _CountingAudio.live))

    write_listening_report(outcomes, session, "t", write)
    groups = group_outcomes(outcomes, clips[0])
    assert len(groups) >= 4 and sum(len(g) for g in groups) == len(outcomes)
    # head, the original, one piece per condition card, the tail
    assert len(pieces) == 1 + len(clips) + len(groups) + 1
    total = sum(n for n, _ in pieces)
    assert max(n for n, _ in pieces) < total / 3
    assert _CountingAudio.most <= 2
    assert all(alive == 0 for _, alive in pieces), "a decoded output outlived its card"
    # the same page as the one-string form (Ogg serials aside)
    one = listening_report(outcomes, session, "t")
    spooled = listening_report_file(outcomes, session, "t")
    assert spooled.largest_write == max(n for n, _ in pieces) and spooled.size == len(one.encode())
    assert _comparable_report(spooled.read().decode()) == _comparable_report(one)


def test_spooled_file_is_recorded_and_pickled_byte_for_byte(studied, tmp_path):
    _, _, tracker, _, result = studied
    page = SpooledFile()
    for i in range(3):
        page.write(f"<p>part {i} – ü</p>\n" * 1000)
    expected = "".join(f"<p>part {i} – ü</p>\n" * 1000 for i in range(3)).encode()
    assert page.read() == expected and page.size == len(expected)
    assert page.largest_write == len(expected) // 3
    run = tracker.start_run(tracker.get_run(result.parent_run_id).info.experiment_id, "spool", {})
    record_contents(tracker, run, Summary(files={"page.html": page, "small.bin": b"abc"}))
    reader = tracker.artifact_reader(run)
    assert reader.read("page.html") == expected and reader.read("small.bin") == b"abc"
    assert pickle.loads(pickle.dumps(page)).read() == expected
