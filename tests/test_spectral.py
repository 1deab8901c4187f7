"""vampstudy.spectral against librosa and audiotools, as independent computations.

The fidelity metrics no longer call librosa (its import and numba cost a study
process seconds and ~190 MB); these tests keep our reimplementation equal to
the reference implementations it replaces, on real signals.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch

from vampstudy import spectral
from vampstudy.audio import synthesize_demo

librosa = pytest.importorskip("librosa")

SR = 44100


def clicks(bpm, seconds=8.0, sr=SR):
    x = np.zeros(int(seconds * sr), dtype=np.float32)
    burst = (np.exp(-np.arange(400) / 60.0) * np.sin(np.arange(400) * 0.9)).astype(np.float32)
    for start in np.arange(0.0, seconds - 0.02, 60.0 / bpm):
        i = int(start * sr)
        x[i:i + 400] += burst[: len(x) - i]
    return x


def tones(freqs, seconds=3.0, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    return (sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs) * 0.5).astype(np.float32)


def demo(seconds=6.0, sr=SR, **kw):
    return synthesize_demo(seconds, sample_rate=sr, **kw).astype(np.float32)


def noisy(x, level=0.05, seed=0):
    rng = np.random.default_rng(seed)
    return (x + level * rng.standard_normal(len(x))).astype(np.float32)


def with_silence(x, sr=SR):
    """``x`` with its first second silent (frames of zero energy)."""
    y = x.copy()
    y[:sr] = 0.0
    return y


SIGNALS = {
    "demo": lambda: demo(),
    "demo_noisy": lambda: noisy(demo(), 0.05),
    "noise": lambda: (0.3 * np.random.default_rng(3).standard_normal(3 * SR)).astype(np.float32),
    "tones": lambda: tones([261.63, 329.63, 392.0, 1760.0]),
    "clicks": lambda: clicks(100),
    "silent_start": lambda: with_silence(demo(4.0)),
}


# ---------------------------------------------------------------- filters
@pytest.mark.parametrize("sr,n_fft,n_mels", [(44100, 2048, 150), (44100, 512, 80),
                                             (44100, 2048, 128), (48000, 2048, 128),
                                             (22050, 1024, 40), (16000, 400, 64)])
def test_mel_filterbank_matches_librosa(sr, n_fft, n_mels):
    ours = spectral.mel_filterbank(sr, n_fft, n_mels)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9)


def test_mel_filterbank_with_a_frequency_range_matches_librosa():
    ours = spectral.mel_filterbank(44100, 2048, 60, fmin=40.0, fmax=12000.0)
    ref = librosa.filters.mel(sr=44100, n_fft=2048, n_mels=60, fmin=40.0, fmax=12000.0)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9)


def test_mel_scale_matches_librosa_and_inverts():
    f = np.array([0.0, 20.0, 440.0, 999.0, 1000.0, 1001.0, 4000.0, 22050.0])
    np.testing.assert_allclose(spectral.hz_to_mel(f), librosa.hz_to_mel(f), rtol=1e-12)
    m = spectral.hz_to_mel(f)
    np.testing.assert_allclose(spectral.mel_to_hz(m), librosa.mel_to_hz(m), rtol=1e-12)
    np.testing.assert_allclose(spectral.mel_to_hz(m), f, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("sr,n_fft", [(44100, 2048), (48000, 2048), (22050, 4096), (16000, 512)])
def test_chroma_filterbank_matches_librosa_at_a440(sr, n_fft):
    ours = spectral.chroma_filterbank(sr, n_fft)
    ref = librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=0.0)
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (12, 1 + n_fft // 2)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9)


def test_hann_window_is_periodic():
    np.testing.assert_allclose(spectral.hann_window(512),
                               torch.hann_window(512, periodic=True, dtype=torch.float64).numpy(),
                               atol=1e-15)


# ------------------------------------------------------------------- STFT
@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
@pytest.mark.parametrize("n,n_fft,hop", [(1500, 2048, 512), (44100, 512, 128), (9999, 2048, 2048)])
def test_blocked_stft_equals_torch_centered_stft(pad_mode, n, n_fft, hop):
    x = noisy(np.zeros(n, dtype=np.float32), 0.5, seed=n)
    ref = torch.stft(torch.from_numpy(x), n_fft, hop_length=hop,
                     window=torch.hann_window(n_fft, periodic=True), center=True,
                     pad_mode=pad_mode, return_complex=True)
    assert spectral.stft_frame_count(n, n_fft, hop) == ref.shape[1] == 1 + n // hop
    for block in (None, 1, 3):
        got = torch.cat([s for _, s in spectral.stft_blocks(x, n_fft, hop, pad_mode=pad_mode,
                                                             block_frames=block)], dim=1)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)


def test_reflect_padding_needs_a_signal_longer_than_the_pad():
    with pytest.raises(ValueError, match="reflect"):
        list(spectral.stft_blocks(np.ones(1024, np.float32), 2048, 512, pad_mode="reflect"))


# --------------------------------------------------------------- features
@pytest.mark.parametrize("name", list(SIGNALS))
def test_onset_strength_matches_librosa(name):
    x = SIGNALS[name]()
    ours = spectral.onset_strength(x, SR)
    ref = librosa.onset.onset_strength(y=x, sr=SR, hop_length=512)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * float(ref.max()))


def test_onset_strength_at_48k_matches_librosa():
    x = noisy(demo(4.0, sr=48000), 0.02)
    ours = spectral.onset_strength(x, 48000)
    ref = librosa.onset.onset_strength(y=x, sr=48000, hop_length=512)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * float(ref.max()))


@pytest.mark.parametrize("name", list(SIGNALS))
def test_chroma_matches_librosa_at_a440(name):
    x = SIGNALS[name]()
    ours = spectral.chroma_stft(x, SR)
    ref = librosa.feature.chroma_stft(y=x, sr=SR, hop_length=2048, tuning=0.0)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_chroma_leaves_silent_frames_at_zero():
    x = with_silence(demo(3.0))
    c = spectral.chroma_stft(x, SR)
    assert np.isfinite(c).all()
    assert (c[:, :10] == 0).all() and np.allclose(c[:, 30:].max(axis=0), 1.0)


def test_chroma_peaks_on_the_played_pitch_class():
    c = spectral.chroma_stft(tones([392.0]), SR)     # G4
    assert (np.argmax(c[:, 2:-2], axis=0) == 7).all()


# ------------------------------------------------------------------ tempo
def _librosa_tempo(env, sr=SR):
    return float(np.atleast_1d(librosa.feature.tempo(onset_envelope=env, sr=sr, hop_length=512))[0])


@pytest.mark.parametrize("signal,sr", [
    (lambda: demo(10.0), SR),
    (lambda: noisy(demo(8.0, bpm=100.0, seed=4), 0.05), SR),
    (lambda: demo(6.0, sr=48000, bpm=135.0), 48000),
    (lambda: clicks(120), SR),
    (lambda: clicks(87), SR),
    (lambda: clicks(150, seconds=20.0), SR),
])
def test_tempo_equals_librosa(signal, sr):
    x = signal()
    env = librosa.onset.onset_strength(y=x, sr=sr, hop_length=512)
    ours = spectral.tempo(env, sr)
    assert ours == _librosa_tempo(env, sr)
    # and on our own envelope too
    assert spectral.tempo(spectral.onset_strength(x, sr), sr) == ours
    win = spectral.tempo_window(sr)
    ref_g = librosa.feature.tempogram(onset_envelope=env, sr=sr, hop_length=512,
                                      win_length=win).mean(axis=1)
    np.testing.assert_allclose(spectral.tempogram_mean(env, sr), ref_g, rtol=1e-9, atol=1e-12)


def test_tempo_window_and_lag_tempi():
    assert spectral.tempo_window(44100) == 689 and spectral.tempo_window(48000) == 750
    bpms = spectral.tempo_frequencies(689, 44100)
    np.testing.assert_allclose(bpms, librosa.tempo_frequencies(689, sr=44100, hop_length=512))


def test_tempo_of_a_click_track_is_its_tempo():
    assert spectral.tempo(spectral.onset_strength(clicks(120), SR), SR) == pytest.approx(120, abs=1.5)


def test_tempo_of_a_short_or_silent_envelope():
    assert spectral.tempo(np.zeros(5, np.float32), SR) == _librosa_tempo(np.zeros(5, np.float32))
    short = spectral.onset_strength(demo(0.5), SR)
    assert spectral.tempo(short, SR) == _librosa_tempo(short)


# ----------------------------------------------------------- mel distance
def _audiotools_mel_loss(est, ref, sr=SR):
    from audiotools import AudioSignal
    from audiotools.metrics.spectral import MelSpectrogramLoss

    return float(MelSpectrogramLoss()(AudioSignal(est[None, None], sr), AudioSignal(ref[None, None], sr)))


@pytest.mark.parametrize("level", [0.0, 0.01, 0.2])
def test_mel_loss_matches_audiotools(level):
    ref = demo(4.0)
    est = noisy(demo(4.0, seed=3), level, seed=1) if level else ref.copy()
    ours = spectral.mel_loss(spectral.mel_loss_features(est, SR), spectral.mel_loss_features(ref, SR))
    assert ours == pytest.approx(_audiotools_mel_loss(est, ref), rel=1e-5, abs=1e-7)


def test_mel_loss_at_48k_matches_audiotools():
    ref = demo(3.0, sr=48000)
    est = noisy(ref, 0.03)
    ours = spectral.mel_loss(spectral.mel_loss_features(est, 48000),
                             spectral.mel_loss_features(ref, 48000))
    assert ours == pytest.approx(_audiotools_mel_loss(est, ref, 48000), rel=1e-5)


def test_mel_magnitudes_match_audiotools():
    from audiotools import AudioSignal

    x = noisy(demo(2.0), 0.02)
    feats = spectral.mel_loss_features(x, SR)
    for (n_mels, window), (mel, log) in zip(spectral.MEL_LOSS_RESOLUTIONS, feats):
        ref = AudioSignal(x[None, None], SR).mel_spectrogram(n_mels, window_length=window,
                                                             hop_length=window // 4)[0, 0]
        torch.testing.assert_close(mel, ref, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(log, ref.clamp(1e-5).pow(2).log10(), rtol=1e-4, atol=1e-4)


# --------------------------------------------------- block-size independence
def test_results_do_not_depend_on_the_block_size():
    x = noisy(demo(5.0), 0.02)
    np.testing.assert_allclose(spectral.onset_strength(x, SR, block_frames=3),
                               spectral.onset_strength(x, SR), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(spectral.chroma_stft(x, SR, block_frames=1),
                               spectral.chroma_stft(x, SR), rtol=1e-5, atol=1e-6)
    for small, whole in zip(spectral.mel_loss_features(x, SR, block_frames=7),
                            spectral.mel_loss_features(x, SR)):
        for a, b in zip(small, whole):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    env = spectral.onset_strength(x, SR)
    np.testing.assert_allclose(spectral.tempogram_mean(env, SR, block_windows=5),
                               spectral.tempogram_mean(env, SR), rtol=1e-12, atol=1e-14)
    assert spectral.tempo(env, SR, block_windows=5) == spectral.tempo(env, SR)


def test_default_blocks_split_a_long_clip():
    """A clip longer than one default block goes through several, with the same result."""
    x = noisy(demo(30.0), 0.02)
    n_blocks = sum(1 for _ in spectral.stft_blocks(x, 512, 128, pad_mode="reflect"))
    assert n_blocks > 1
    np.testing.assert_allclose(spectral.onset_strength(x, SR),
                               librosa.onset.onset_strength(y=x, sr=SR, hop_length=512),
                               rtol=1e-4, atol=1e-4 * 30)
    env = spectral.onset_strength(x, SR)
    assert len(env) > spectral.TEMPOGRAM_BLOCK_WINDOWS
    assert spectral.tempo(env, SR) == _librosa_tempo(env)


# ------------------------------------------------------------- no librosa
def test_fidelity_metrics_do_not_import_librosa():
    code = (
        "import sys, numpy as np, torch\n"
        "from audiotools import AudioSignal\n"
        "from vampstudy.audio import synthesize_demo\n"
        "from vampstudy.fidelity import fidelity_metrics, tempo_bpm\n"
        "x = synthesize_demo(3.0, sample_rate=44100).astype(np.float32)\n"
        "y = x + 0.05 * np.random.default_rng(0).standard_normal(len(x)).astype(np.float32)\n"
        "s = lambda a: AudioSignal(torch.from_numpy(a)[None, None], 44100)\n"
        "m = fidelity_metrics(s(x), s(y)); tempo_bpm(s(y))\n"
        "assert all(np.isfinite(v) for v in m.values()), m\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('librosa', 'numba', 'llvmlite'))\n"
        "print('LOADED', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout
