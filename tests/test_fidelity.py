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
    ca = librosa.feature.chroma_stft(y=a.astype(np.float32), sr=SR, hop_length=2048)
    cb = librosa.feature.chroma_stft(y=b.astype(np.float32), sr=SR, hop_length=2048)
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
