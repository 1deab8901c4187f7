"""Output levels (issue 22): the level metrics against independent computations, stored audio
that keeps what was measured, the clipping note, loudness-matched listening, the check row,
and the reference backend's outputs at its codec resynthesis' level."""

import base64
import io
import math
import re
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
import torch
from audiotools import AudioSignal

from studies.periodic import PeriodicIntervalStudy
from vampstudy import levels
from vampstudy.audio import demo_clip, signal_to_wav_bytes
from vampstudy.backends.reference import ReferenceBackend
from vampstudy.checks import PASS, WARN, run_checks
from vampstudy.registry import registered
from vampstudy.runner import prepare_clips, run_study
from vampstudy.study import Trial

SR = 44100
REAL_RECORDING = Path(__file__).parent / "data" / "fuel_2_excerpt.flac"


def _signal(x: np.ndarray) -> AudioSignal:
    return AudioSignal(torch.tensor(np.asarray(x), dtype=torch.float32)[None, None], SR)


def _lufs(x: np.ndarray) -> float:
    """Integrated loudness by pyloudnorm (an implementation independent of audiotools')."""
    return pyloudnorm.Meter(SR).integrated_loudness(np.asarray(x, dtype=np.float64))


def _music(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    tone = 0.1 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 2 * t))
    return tone + 0.01 * rng.standard_normal(len(t))


# ------------------------------------------------------------------ the metrics
def test_level_metrics_against_numpy_and_pyloudnorm():
    original = _music()
    rng = np.random.default_rng(1)
    output = 9.0 * original + 0.05 * np.diff(rng.standard_normal(len(original) + 1))  # brighter
    m = levels.level_metrics(_signal(original), _signal(output))
    assert m["output_peak"] == pytest.approx(np.abs(output).max(), rel=1e-6)
    assert m["clipped_pct"] == pytest.approx(100 * np.mean(np.abs(output) > 1.0), abs=1e-9)
    assert 0 < m["clipped_pct"] < 100
    assert m["loudness_delta_db"] == pytest.approx(_lufs(output) - _lufs(original), abs=0.1)
    quiet = levels.level_metrics(_signal(original), _signal(0.5 * original))
    assert quiet["clipped_pct"] == 0.0
    assert quiet["loudness_delta_db"] == pytest.approx(20 * math.log10(0.5), abs=0.05)


def test_original_loudness_is_measured_once_per_clip_and_again_after_a_change(monkeypatch):
    original = _signal(_music())
    calls = []
    measure = levels.loudness_lufs
    monkeypatch.setattr(levels, "loudness_lufs", lambda s: calls.append(1) or measure(s))
    outputs = [_signal(g * _music(seed=1)) for g in (0.5, 2.0)]
    metrics = [levels.add_level_metrics(type("O", (), {"audio": {"output": o}, "metrics": {}})(),
                                        original).metrics for o in outputs]
    assert len(calls) == 3            # the original once, each output once
    for o, m in zip(outputs, metrics):   # the same figures as measuring both every time
        assert m == levels.level_metrics(original, o)
    original.audio_data.mul_(0.25)       # changed in place: measured again, 12 dB quieter
    calls.clear()
    assert levels.original_lufs(original) == measure(original)
    assert levels.original_lufs(original) == pytest.approx(_lufs(0.25 * _music()), abs=0.1)
    assert len(calls) == 1


def test_match_loudness_hits_the_target_and_reports_its_gain():
    x = _music()
    signal = _signal(x)
    matched, gain_db = levels.match_loudness(signal, -30.0)
    assert gain_db == pytest.approx(-30.0 - _lufs(x), abs=0.1)
    assert _lufs(matched.audio_data[0, 0].numpy()) == pytest.approx(-30.0, abs=0.1)
    assert np.array_equal(signal.audio_data[0, 0].numpy(), x.astype(np.float32))   # untouched
    silent, gain0 = levels.match_loudness(_signal(np.zeros(SR)), -24.0)
    assert gain0 == 0.0 and float(silent.audio_data.abs().max()) == 0.0


def test_matching_target_leaves_headroom_for_every_stimulus():
    calm = _signal(_music())
    spiky = _music()
    spiky[1000] = 8 * np.abs(spiky).max()        # one click far above the music's level
    stimuli = [calm, _signal(spiky)]
    target = levels.matching_target(stimuli)
    assert target < levels.TARGET_LUFS
    peaks = [levels.peak(levels.match_loudness(s, target)[0]) for s in stimuli]
    assert max(peaks) == pytest.approx(1.0, abs=0.01)
    assert levels.matching_target([calm]) == levels.TARGET_LUFS
    assert levels.matching_target(stimuli, min_target_lufs=-25.0) == -25.0


def test_stored_wav_is_float_and_keeps_samples_beyond_full_scale():
    x = np.array([0.0, 0.5, -4.0, 4.0, 1.25], dtype=np.float32)
    data, sr = sf.read(io.BytesIO(signal_to_wav_bytes(_signal(x))), dtype="float32")
    assert sr == SR and np.array_equal(data, x)
    assert sf.info(io.BytesIO(signal_to_wav_bytes(_signal(x)))).subtype == "FLOAT"


# ------------------------------------------- a backend whose generated audio is 4x
class LoudGenerator(ReferenceBackend):
    """A level fault: generated tokens decode 4x (+12 dB) too loud; resynthesis is right."""

    name = "loud-generator"
    _encoded = None

    def encode(self, signal):
        codes = super().encode(signal)
        self._encoded = codes.cpu().clone()
        return codes

    def decode(self, codes):
        out = super().decode(codes)
        if self._encoded is not None and torch.equal(codes.cpu(), self._encoded):
            return out
        return AudioSignal(out.audio_data * 4.0, out.sample_rate)


@pytest.fixture(scope="module")
def loud_clip(music_3s):
    return prepare_clips(LoudGenerator(device="cpu"), [str(music_3s)])


def _loud_backend(clips) -> LoudGenerator:
    """A LoudGenerator that knows the clip's codes (so their decode is the resynthesis)."""
    backend = LoudGenerator(device="cpu")
    backend._encoded = clips[0].codes.cpu().clone()
    return backend


def _download(tracker, run_id, path, tmp_path) -> Path:
    return Path(tracker.download(run_id, path, str(tmp_path)))


def test_clipping_is_measured_stored_and_named(loud_clip, tracker, tmp_path):
    backend = _loud_backend(loud_clip)
    study = PeriodicIntervalStudy(intervals=(3, 13), spectrogram_intervals=())
    study.controls = False        # the conditions' own outputs are what this test follows
    result = run_study(study, backend, tracker, clips=loud_clip, seeds=[0],
                       executor="sequential")
    worst = max(result.outcomes, key=lambda o: o.metrics["clipped_pct"])
    for o in result.outcomes:
        out = o.audio["output"].audio_data[0, 0].numpy()
        assert o.metrics["clipped_pct"] == pytest.approx(100 * np.mean(np.abs(out) > 1.0))
        assert o.metrics["output_peak"] == pytest.approx(np.abs(out).max(), rel=1e-6)
        assert o.metrics["loudness_delta_db"] > 6.0
    assert worst.metrics["clipped_pct"] > 0
    children = tracker.find_runs(result.experiment_id, {"mlflow.parentRunId": result.parent_run_id})
    child = next(c for c in children if c.data.params["interval"] == str(
        worst.trial.condition.params["interval"]))
    assert child.data.metrics["clipped_pct"] == pytest.approx(worst.metrics["clipped_pct"])
    stored, _ = sf.read(_download(tracker, child.info.run_id, "audio/output.wav", tmp_path / "c"),
                        dtype="float32")
    assert np.abs(stored).max() > 1.0                         # the file holds the unclipped values
    assert np.array_equal(stored, worst.audio["output"].audio_data[0, 0].numpy())
    text = _download(tracker, result.parent_run_id, "observations.txt", tmp_path / "p").read_text()
    assert text.count("Clipping:") == 1
    assert f"worst {worst.trial.condition.name} (seed 0" in text
    parent = tracker.get_run(result.parent_run_id)
    assert parent.data.metrics["outputs_clipped"] == sum(
        o.metrics["clipped_pct"] > 0 for o in result.outcomes)
    report = _download(tracker, result.parent_run_id, "report.html", tmp_path / "r").read_text()
    _assert_players_loudness_matched(report, result)


def _assert_players_loudness_matched(report: str, result):
    """Each player carries its gain; the gains are the target minus each stimulus' loudness
    (pyloudnorm), and every decoded preview sits at that one target without clipping."""
    players = re.findall(r"<audio[^>]*src='data:audio/(\w+);base64,([^']+)' data-gain-db='([-0-9.]+)'",
                         report)
    stimuli = [result.outcomes[0].trial.clip.signal] + [o.audio["output"] for o in result.outcomes]
    assert len(players) == len(stimuli)
    target = float(re.search(r"loudness-matched to (-?[0-9.]+) LUFS", report).group(1))
    previews = []
    for (_, payload, gain), stimulus in zip(players, stimuli):
        x = stimulus.audio_data[0, 0].numpy()
        assert float(gain) == pytest.approx(target - _lufs(x), abs=0.15)
        data, _ = sf.read(io.BytesIO(base64.b64decode(payload)), dtype="float32")
        previews.append(data)
        assert np.abs(data).max() <= 1.0 + 1e-3
    for data in previews:                                       # Vorbis moves levels a little
        assert _lufs(data) == pytest.approx(target, abs=0.5)
    assert f"gain {float(players[1][2]):+.1f} dB" in report


def test_check_warns_on_a_level_fault(loud_clip, music_3s):
    row = run_checks(_loud_backend(loud_clip), loud_clip[0], only=["output_level"])[0]
    assert row.status == WARN and row.value == pytest.approx(12.0, abs=3.0), row
    assert "louder" in row.detail
    ok = run_checks(ReferenceBackend(device="cpu"),
                    prepare_clips(ReferenceBackend(device="cpu"), [str(music_3s)])[0],
                    only=["output_level"])[0]
    assert ok.status == PASS and abs(ok.value) <= 3.0, ok


# ----------------------- the reference backend's outputs at the resynthesis' level
BUILTIN = sorted(name for name, entries in registered().items()
                 if entries[0].source.startswith("built-in"))


@pytest.fixture(scope="module")
def level_clips(backend):
    return {"demo": prepare_clips(backend, clips=[demo_clip(duration=5.0)])[0],
            "real": prepare_clips(backend, [str(REAL_RECORDING)])[0]}


@pytest.mark.parametrize("name,which", [pytest.param(n, w, id=f"{n}-{w}")
                                        for n in BUILTIN for w in ("demo", "real")])
def test_builtin_study_outputs_at_resynthesis_level(name, which, backend, level_clips):
    clip = level_clips[which]
    resynthesis = levels.loudness_lufs(backend.decode(clip.codes))
    study = registered()[name][0].cls()
    for condition in study.iterate():
        torch.manual_seed(0)
        staged = study.model_stage(Trial(condition, clip, 0), backend)
        delta = levels.loudness_lufs(staged.signal) - resynthesis
        assert abs(delta) <= 3.0, f"{name} {condition.name} on {which}: {delta:+.1f} dB"
        if which == "demo":   # before the fix: up to 17x full scale
            assert levels.peak(staged.signal) <= 1.0, f"{name} {condition.name} peaks too high"
