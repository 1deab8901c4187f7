"""Audio fidelity metrics against independent computations and known transformations."""

import numpy as np
import pytest
import torch
from audiotools import AudioSignal

from vampstudy.audio import synthesize_demo
from vampstudy.fidelity import (chroma_similarity, fidelity_metrics, mel_distance,
                                onset_correlation, tempo_bpm)

SR = 44100


def sig(x):
    return AudioSignal(torch.as_tensor(np.asarray(x, dtype=np.float32))[None, None], SR)


def tone(freqs, seconds=2.0):
    t = np.arange(int(seconds * SR)) / SR
    return sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs) * 0.5


def clicks(bpm, seconds=8.0, offset=0.0):
    x = np.zeros(int(seconds * SR), dtype=np.float32)
    period = 60.0 / bpm
    burst = np.exp(-np.arange(400) / 60.0) * np.sin(np.arange(400) * 0.9)
    for start in np.arange(offset, seconds - 0.02, period):
        i = int(start * SR)
        x[i:i + 400] += burst[: len(x) - i]
    return x


def test_identical_audio_is_distance_zero_similarity_one():
    x = sig(synthesize_demo(3.0, seed=2))
    m = fidelity_metrics(x, x)
    assert m["mel_distance"] == pytest.approx(0.0, abs=1e-6)
    assert m["chroma_similarity"] == pytest.approx(1.0, abs=1e-6)
    assert m["onset_correlation"] == pytest.approx(1.0, abs=1e-6)
    assert m["tempo_difference_bpm"] == 0.0


def test_mel_distance_grows_with_noise():
    rng = np.random.default_rng(0)
    x = synthesize_demo(3.0, seed=2)
    small = mel_distance(sig(x), sig(x + 0.01 * rng.standard_normal(len(x))))
    large = mel_distance(sig(x), sig(x + 0.2 * rng.standard_normal(len(x))))
    assert 0 < small < large


def test_chroma_similarity_octave_invariant_and_pitch_sensitive():
    a = sig(tone([220.0, 277.18, 329.63]))            # A major
    octave = sig(tone([440.0, 554.37, 659.26]))       # A major, an octave up: same pitch classes
    shifted = sig(tone([311.13, 392.0, 466.16]))      # Eb major: a tritone away
    assert chroma_similarity(a, octave) > 0.9
    assert chroma_similarity(a, shifted) < chroma_similarity(a, octave) - 0.2


def test_chroma_similarity_matches_hand_computed_cosine():
    import librosa

    a, b = tone([261.63]), tone([293.66])  # C vs D
    # the metric's chroma is at A440 (tuning 0), not at a tuning estimated per signal
    ca = librosa.feature.chroma_stft(y=a.astype(np.float32), sr=SR, hop_length=2048, tuning=0.0)
    cb = librosa.feature.chroma_stft(y=b.astype(np.float32), sr=SR, hop_length=2048, tuning=0.0)
    expected = np.mean([np.dot(ca[:, i], cb[:, i]) / (np.linalg.norm(ca[:, i]) * np.linalg.norm(cb[:, i]))
                        for i in range(ca.shape[1])])
    assert chroma_similarity(sig(a), sig(b)) == pytest.approx(expected, rel=1e-5)


def test_onset_correlation_drops_when_the_beat_moves():
    x = clicks(120)
    same = onset_correlation(sig(x), sig(x))
    moved = onset_correlation(sig(x), sig(clicks(120, offset=0.25)))   # half a beat later
    assert same == pytest.approx(1.0)
    assert moved < 0.5


def test_onset_correlation_is_pearson_of_envelopes():
    import librosa

    x, y = clicks(100), clicks(133)
    ex = librosa.onset.onset_strength(y=x, sr=SR, hop_length=512)
    ey = librosa.onset.onset_strength(y=y, sr=SR, hop_length=512)
    n = min(len(ex), len(ey))
    r = float(np.corrcoef(ex[:n], ey[:n])[0, 1])
    assert onset_correlation(sig(x), sig(y)) == pytest.approx(r, rel=1e-5)


def test_tempo_of_a_click_track():
    assert tempo_bpm(sig(clicks(120))) == pytest.approx(120, abs=3)


def test_visqol_scores_identical_above_degraded():
    from vampstudy.fidelity import visqol_moslqo

    rng = np.random.default_rng(0)
    x = synthesize_demo(2.0, seed=3)
    same = visqol_moslqo(sig(x), sig(x))
    noisy = visqol_moslqo(sig(x), sig(x + 0.05 * rng.standard_normal(len(x))))
    assert 4.0 < same <= 5.0
    assert 1.0 <= noisy < same - 0.5


def test_visqol_flag_adds_the_metric(tmp_path, monkeypatch, music_3s):
    from click.testing import CliRunner

    from vampstudy.cli import main
    from vampstudy.tracking import Tracker

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["run", "periodic", "--backend", "reference", "--audio",
                                       str(music_3s), "--intervals", "3", "--visqol"])
    assert result.exit_code == 0, result.output
    tracker = Tracker()
    exp = tracker.experiment_id("periodic")
    parent = tracker.find_runs(exp, {"vampstudy.role": "study"})[0]
    assert parent.data.params["visqol"] == "True"
    child = tracker.find_runs(exp, {"vampstudy.role": "condition"})[0]
    assert 1.0 <= child.data.metrics["visqol_moslqo"] <= 5.0


# ------------------------------------------------------- cached reference side
def _direct_metrics(reference, estimate):
    """The metrics computed from scratch for one pair with librosa and audiotools (independently of
    vampstudy.spectral, and without the reference cache)."""
    import librosa
    from audiotools.metrics.spectral import MelSpectrogramLoss

    def mono(s):
        return s.audio_data[0].mean(0).numpy().astype(np.float32)

    a_full, b_full = mono(reference), mono(estimate)
    n = min(len(a_full), len(b_full))
    a, b = a_full[:n], b_full[:n]
    mel = float(MelSpectrogramLoss()(AudioSignal(b[None, None], SR),
                                     AudioSignal(a[None, None], SR)))
    ca = librosa.feature.chroma_stft(y=a, sr=SR, hop_length=2048, tuning=0.0)
    cb = librosa.feature.chroma_stft(y=b, sr=SR, hop_length=2048, tuning=0.0)
    na, nb = np.linalg.norm(ca, axis=0), np.linalg.norm(cb, axis=0)
    ok = (na > 1e-8) & (nb > 1e-8)
    ea = librosa.onset.onset_strength(y=a, sr=SR, hop_length=512)
    eb = librosa.onset.onset_strength(y=b, sr=SR, hop_length=512)

    def tempo(x):
        env = librosa.onset.onset_strength(y=x, sr=SR, hop_length=512)
        return float(np.atleast_1d(librosa.feature.tempo(onset_envelope=env, sr=SR,
                                                         hop_length=512))[0])

    return {"mel_distance": mel,
            "chroma_similarity": float(((ca[:, ok] * cb[:, ok]).sum(0) / (na[ok] * nb[ok])).mean()),
            "onset_correlation": float(np.corrcoef(ea, eb)[0, 1]),
            "tempo_difference_bpm": abs(tempo(a_full) - tempo(b_full))}


@pytest.mark.parametrize("estimate_seconds", [4.0, 3.5, 4.5])
def test_cached_reference_gives_the_direct_values(estimate_seconds):
    """Same values as computing both sides from scratch, also when the lengths differ."""
    original = sig(synthesize_demo(4.0, seed=2))
    rng = np.random.default_rng(1)
    y = synthesize_demo(estimate_seconds, seed=5, bpm=100.0)
    estimate = sig(y + 0.02 * rng.standard_normal(len(y)))
    expected = _direct_metrics(original, estimate)
    for _ in range(2):  # the second call runs on the cached reference side
        got = fidelity_metrics(original, estimate)
        assert got.keys() == expected.keys()
        for k in expected:
            assert got[k] == pytest.approx(expected[k], rel=1e-6, abs=1e-9), k


def test_reference_side_is_computed_once_per_clip(monkeypatch):
    import vampstudy.fidelity as fid

    calls = {"mel": 0, "chroma": 0, "onset": 0}

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(fid, "mel_features", counting("mel", fid.mel_features))
    monkeypatch.setattr(fid, "chroma", counting("chroma", fid.chroma))
    monkeypatch.setattr(fid, "onset_envelope", counting("onset", fid.onset_envelope))
    original = sig(synthesize_demo(3.0, seed=2))
    outputs = [sig(synthesize_demo(3.0, seed=s)) for s in (3, 4, 5)]
    for out in outputs:
        fidelity_metrics(original, out)
    # 1 for the original (kept) + 1 per output; the output's onset envelope also gives its tempo
    assert calls == {"mel": 4, "chroma": 4, "onset": 4}
    assert tempo_bpm(original) == fid.reference_for(original).tempo_bpm()
    assert calls["onset"] == 4


def test_reference_cache_follows_the_audio():
    from vampstudy.fidelity import FidelityReference, reference_for

    x = sig(synthesize_demo(3.0, seed=2))
    other = sig(synthesize_demo(3.0, seed=2))   # equal audio, another tensor
    ref = reference_for(x)
    assert isinstance(ref, FidelityReference)
    assert reference_for(x) is ref
    assert reference_for(other) is not ref
    before = fidelity_metrics(x, other)["mel_distance"]
    x.audio_data.mul_(0.25)                     # changed in place: the cache must notice
    assert reference_for(x) is not ref
    after = fidelity_metrics(x, other)["mel_distance"]
    assert before == pytest.approx(0.0, abs=1e-6) and after > 0.1


def test_reference_compare_is_thread_safe():
    from concurrent.futures import ThreadPoolExecutor

    from vampstudy.fidelity import FidelityReference

    original = sig(synthesize_demo(2.0, seed=2))
    outputs = [sig(synthesize_demo(2.0, seed=s)) for s in (3, 4, 5, 6)]
    expected = [FidelityReference.from_signal(original).compare(o) for o in outputs]
    shared = FidelityReference.from_signal(original)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(shared.compare, outputs))
    for g, e in zip(got, expected):
        assert g == pytest.approx(e, rel=1e-9)
