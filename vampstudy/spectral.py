"""Spectral features of the fidelity metrics, in numpy and torch (no librosa).

The audio fidelity metrics (:mod:`vampstudy.fidelity`) need a mel spectrogram,
a chromagram, an onset-strength envelope and a tempo estimate. They follow the
published definitions that librosa (>= 0.10) and audiotools implement, so the
metric values stay comparable with theirs (``tests/test_spectral.py`` checks
each function against them), but they are computed here: importing
``librosa.filters`` alone costs a study process 1.5 s and 123 MB, and building
its filters loads numba (another 1.1 s and 63 MB).

Common definitions
------------------
Window
    The periodic Hann window of length ``N``: ``w[k] = 0.5 - 0.5 cos(2 pi k / N)``.
Centered STFT
    Frame ``t`` covers samples ``t * hop - n_fft // 2`` to ``t * hop + n_fft // 2``
    of the signal, padded outside its ends with zeros (``pad_mode="constant"``,
    librosa's default since 0.10) or with its mirror image without the edge sample
    (``"reflect"``, torch's default); ``1 + len(y) // hop`` frames for an even
    ``n_fft``. Each frame is multiplied by the window and transformed with a real
    FFT; magnitude ``|X|``, power ``|X|**2``.
Blocks
    Long clips (10 minutes at 48 kHz) are transformed a block of frames at a time
    (:data:`STFT_BLOCK_VALUES` complex values each), padding only each block's
    edges, so no complex STFT of a whole clip is held, and no padded copy of it;
    only the reduced features (mel bands x frames, 12 x frames, the envelope) are
    kept. The tempogram is likewise accumulated over blocks of windows. Results do
    not depend on the block sizes.

Everything up to the reduced features is float32 (torch); the tempogram is
float64 (numpy).
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Iterator

import numpy as np

logger = logging.getLogger(__name__)

#: Complex STFT values transformed at once (frames x frequency bins): 2**21 complex64 = 16 MB.
STFT_BLOCK_VALUES = 1 << 21
#: Onset-envelope windows autocorrelated at once by :func:`tempogram_mean`.
TEMPOGRAM_BLOCK_WINDOWS = 1024

#: Slaney mel scale: linear below this frequency (Hz), logarithmic above.
_MEL_BREAK_HZ = 1000.0
#: Slaney mel scale: Hz per mel in the linear part.
_MEL_LINEAR_HZ = 200.0 / 3.0
#: Slaney mel scale: mel value at the break (15).
_MEL_BREAK = _MEL_BREAK_HZ / _MEL_LINEAR_HZ
#: Slaney mel scale: natural-log step per mel above the break (27 mels per factor 6.4).
_MEL_LOG_STEP = math.log(6.4) / 27.0

#: Chroma: pitch classes, the octave (of A440 / 16 = 27.5 Hz) weighted most, and the
#: width in octaves of that Gaussian octave weighting (Ellis' chromagram defaults).
N_CHROMA = 12
CHROMA_CENTER_OCTAVE = 5.0
CHROMA_OCTAVE_WIDTH = 2.0

#: Onset strength: mel bands, FFT length, dB floor below the peak, power floor.
ONSET_N_MELS = 128
ONSET_N_FFT = 2048
ONSET_TOP_DB = 80.0
ONSET_AMIN = 1e-10

#: Tempo: autocorrelation window (s), prior centre and width (octaves), highest tempo.
TEMPO_AC_SIZE = 8.0
TEMPO_START_BPM = 120.0
TEMPO_STD_BPM = 1.0
TEMPO_MAX_BPM = 320.0

#: Mel distance (audiotools ``MelSpectrogramLoss`` defaults): (n_mels, window length)
#: per resolution, hop = window // 4, the clamp before the log and the power inside it.
MEL_LOSS_RESOLUTIONS = ((150, 2048), (80, 512))
MEL_LOSS_CLAMP = 1e-5
MEL_LOSS_POW = 2.0

_TINY32 = float(np.finfo(np.float32).tiny)
_TINY64 = float(np.finfo(np.float64).tiny)


# ---------------------------------------------------------------- scales
def hz_to_mel(freqs) -> np.ndarray:
    """Frequencies (Hz) on the Slaney mel scale.

    ``f / (200/3)`` below 1000 Hz (15 mel at 1000 Hz), and
    ``15 + ln(f / 1000) / (ln(6.4) / 27)`` above.

    Parameters
    ----------
    freqs : array_like
        Frequencies in Hz (>= 0).

    Returns
    -------
    numpy.ndarray
        Mel values, float64, the shape of ``freqs``.
    """
    f = np.asarray(freqs, dtype=np.float64)
    above = _MEL_BREAK + np.log(np.maximum(f, _MEL_BREAK_HZ) / _MEL_BREAK_HZ) / _MEL_LOG_STEP
    return np.where(f >= _MEL_BREAK_HZ, above, f / _MEL_LINEAR_HZ)


def mel_to_hz(mels) -> np.ndarray:
    """Slaney mel values back to Hz (the inverse of :func:`hz_to_mel`).

    Parameters
    ----------
    mels : array_like
        Mel values.

    Returns
    -------
    numpy.ndarray
        Frequencies in Hz, float64.
    """
    m = np.asarray(mels, dtype=np.float64)
    above = _MEL_BREAK_HZ * np.exp(_MEL_LOG_STEP * (np.maximum(m, _MEL_BREAK) - _MEL_BREAK))
    return np.where(m >= _MEL_BREAK, above, m * _MEL_LINEAR_HZ)


# ----------------------------------------------------------- filterbanks
def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Slaney-normalised triangular mel filterbank (librosa ``filters.mel`` defaults).

    Definition: ``n_mels + 2`` points equally spaced on the Slaney mel scale
    (:func:`hz_to_mel`) from ``fmin`` to ``fmax``, in Hz: ``m[0..n_mels+1]``.
    FFT bin ``k`` has frequency ``f_k = k * sr / n_fft`` for ``k = 0..n_fft//2``.
    Filter ``i`` is the triangle rising from ``m[i]`` to 1 at ``m[i+1]`` and
    falling to ``m[i+2]``::

        W[i, k] = max(0, min((f_k - m[i]) / (m[i+1] - m[i]),
                             (m[i+2] - f_k) / (m[i+2] - m[i+1])))
                  * 2 / (m[i+2] - m[i])

    (the last factor gives every filter the same area).

    Parameters
    ----------
    sr : int
        Sample rate in Hz.
    n_fft : int
        FFT length (the filters have ``1 + n_fft // 2`` columns).
    n_mels : int
        Number of filters.
    fmin, fmax : float, optional
        Frequency range in Hz; ``fmax`` defaults to ``sr / 2``.

    Returns
    -------
    numpy.ndarray
        ``(n_mels, 1 + n_fft // 2)``, float32.
    """
    if fmax is None:
        fmax = sr / 2.0
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bins = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lo) / (mid - lo)
    falling = (hi - bins) / (hi - mid)
    triangles = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    area = 2.0 / (edges[2:] - edges[:-2])
    weights = (triangles * area[:, None]).astype(np.float32)
    if not weights.any(axis=1).all():
        logger.debug("mel filterbank sr=%d n_fft=%d n_mels=%d has empty filters", sr, n_fft, n_mels)
    return weights


def chroma_filterbank(sr: int, n_fft: int) -> np.ndarray:
    """12-bin chroma filterbank at A440 tuning (Ellis' chromagram; librosa ``filters.chroma``).

    Definition, with ``f_k = k * sr / n_fft`` for ``k = 1..n_fft-1``:

    1. Bin position in semitones above 27.5 Hz (A440 / 16):
       ``b_k = 12 log2(f_k / 27.5)``; ``b_0 = b_1 - 18`` (1.5 octaves below).
    2. Bin width ``w_k = max(b_{k+1} - b_k, 1)``, and 1 for the last bin.
    3. Distance of bin ``k`` to pitch class ``c`` (``c = 0`` is A), wrapped to
       [-6, 6) semitones: ``D[c, k] = ((b_k - c + 6 + 120) mod 12) - 6``.
    4. ``W[c, k] = exp(-0.5 (2 D[c, k] / w_k)**2)``, each column ``k`` scaled to
       unit Euclidean norm, then weighted by the Gaussian
       ``exp(-0.5 ((b_k / 12 - 5) / 2)**2)`` in octaves (centred on octave 5,
       880 Hz, two octaves wide).
    5. Rows rotated so that row 0 is C (``roll -3``), and only the columns
       ``k = 0..n_fft//2`` (the non-negative frequencies) kept.

    Parameters
    ----------
    sr : int
        Sample rate in Hz.
    n_fft : int
        FFT length.

    Returns
    -------
    numpy.ndarray
        ``(12, 1 + n_fft // 2)``, float32; rows C, C#, ..., B.
    """
    freqs = np.linspace(0.0, sr, n_fft, endpoint=False)[1:]
    semis = N_CHROMA * np.log2(freqs / (440.0 / 16.0))
    semis = np.concatenate(([semis[0] - 1.5 * N_CHROMA], semis))
    widths = np.concatenate((np.maximum(np.diff(semis), 1.0), [1.0]))
    half = N_CHROMA // 2
    dist = semis[None, :] - np.arange(N_CHROMA, dtype=np.float64)[:, None]
    dist = np.remainder(dist + half + 10 * N_CHROMA, N_CHROMA) - half
    weights = np.exp(-0.5 * (2.0 * dist / widths[None, :]) ** 2)
    weights /= np.sqrt(np.sum(weights ** 2, axis=0, keepdims=True))
    octave = semis / N_CHROMA
    weights *= np.exp(-0.5 * ((octave - CHROMA_CENTER_OCTAVE) / CHROMA_OCTAVE_WIDTH) ** 2)[None, :]
    weights = np.roll(weights, -3, axis=0)
    return np.ascontiguousarray(weights[:, : 1 + n_fft // 2], dtype=np.float32)


@functools.lru_cache(maxsize=16)
def _mel_basis(sr: int, n_fft: int, n_mels: int):
    import torch

    return torch.from_numpy(mel_filterbank(sr, n_fft, n_mels))


@functools.lru_cache(maxsize=8)
def _chroma_basis(sr: int, n_fft: int):
    import torch

    return torch.from_numpy(chroma_filterbank(sr, n_fft))


@functools.lru_cache(maxsize=8)
def _hann32(n: int):
    import torch

    return torch.from_numpy(hann_window(n).astype(np.float32))


def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window ``0.5 - 0.5 cos(2 pi k / n)``, ``k = 0..n-1`` (float64)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


# ------------------------------------------------------------------ STFT
def stft_frame_count(n_samples: int, n_fft: int, hop: int) -> int:
    """Frames of a centered STFT of ``n_samples`` samples (``1 + n // hop`` for even ``n_fft``)."""
    return max(0, 1 + (n_samples + 2 * (n_fft // 2) - n_fft) // hop)


def _as_tensor(audio):
    import torch

    if torch.is_tensor(audio):
        return audio.detach().to("cpu", torch.float32).reshape(-1).contiguous()
    x = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
    if not x.flags.writeable:
        x = x.copy()
    return torch.from_numpy(x)


def _segment(x, start: int, stop: int, pad_mode: str):
    """``x[start:stop]`` with indices outside ``[0, len(x))`` filled by ``pad_mode``."""
    import torch

    n = x.shape[0]
    left, right = max(0, -start), max(0, stop - n)
    core = x[max(start, 0):min(stop, n)]
    if not left and not right:
        return core
    if pad_mode == "constant":
        parts = [x.new_zeros(left), core, x.new_zeros(right)]
    else:  # reflect: index -i is x[i], index n - 1 + i is x[n - 1 - i]
        parts = [x[1:left + 1].flip(0), core, x[n - 1 - right:n - 1].flip(0)]
    return torch.cat(parts)


def stft_blocks(audio, n_fft: int, hop: int, *, pad_mode: str = "constant",
                block_frames: int | None = None) -> Iterator[tuple[int, "object"]]:
    """The centered STFT of ``audio``, a block of frames at a time.

    Parameters
    ----------
    audio : array_like or torch.Tensor
        Mono signal (computed in float32).
    n_fft : int
        Frame and FFT length; the window is the periodic Hann window of this length.
    hop : int
        Frame step in samples.
    pad_mode : {"constant", "reflect"}
        How the ``n_fft // 2`` samples beyond each end are filled: zeros, or the
        signal mirrored about its end sample (which needs ``len(audio) > n_fft // 2``).
    block_frames : int, optional
        Frames per block; by default ``STFT_BLOCK_VALUES // (1 + n_fft // 2)``.

    Yields
    ------
    first : int
        Index of the block's first frame.
    spectrum : torch.Tensor
        ``(1 + n_fft // 2, frames)`` complex64: frame ``first + j`` in column ``j``.
    """
    import torch

    if pad_mode not in ("constant", "reflect"):
        raise ValueError(f"pad_mode must be 'constant' or 'reflect', got {pad_mode!r}")
    x = _as_tensor(audio)
    n, pad = x.shape[0], n_fft // 2
    if pad_mode == "reflect" and n <= pad:
        raise ValueError(f"reflect padding of {pad} samples needs a longer signal than {n} samples")
    total = stft_frame_count(n, n_fft, hop)
    step = block_frames or max(1, STFT_BLOCK_VALUES // (1 + n_fft // 2))
    window = _hann32(n_fft)
    for first in range(0, total, step):
        last = min(total, first + step) - 1
        seg = _segment(x, first * hop - pad, last * hop + n_fft - pad, pad_mode)
        yield first, torch.stft(seg, n_fft, hop_length=hop, win_length=n_fft, window=window,
                                center=False, return_complex=True)


def mel_spectrogram(audio, sr: int, n_fft: int, hop: int, n_mels: int, *, power: float = 2.0,
                    pad_mode: str = "constant", block_frames: int | None = None):
    """Mel spectrogram: :func:`mel_filterbank` times ``|STFT|**power``, frame by frame.

    Parameters
    ----------
    audio : array_like or torch.Tensor
        Mono signal.
    sr : int
        Its sample rate.
    n_fft, hop : int
        STFT frame length (= window length) and step (:func:`stft_blocks`).
    n_mels : int
        Mel bands (from 0 Hz to ``sr / 2``).
    power : float
        1 for magnitudes, 2 for power.
    pad_mode : {"constant", "reflect"}
        Padding of the centered STFT.
    block_frames : int, optional
        Frames transformed at once (does not change the result).

    Returns
    -------
    torch.Tensor
        ``(n_mels, frames)`` float32.
    """
    return _filtered_spectrogram(audio, _mel_basis(int(sr), int(n_fft), int(n_mels)), n_fft, hop,
                                 power, pad_mode, block_frames)


def _filtered_spectrogram(audio, basis, n_fft: int, hop: int, power: float, pad_mode: str,
                          block_frames: int | None):
    """``basis @ |STFT|**power``, block by block: ``(basis rows, frames)`` float32 tensor."""
    import torch

    audio = _as_tensor(audio)
    out = torch.empty((basis.shape[0], stft_frame_count(audio.shape[0], n_fft, hop)),
                      dtype=torch.float32)
    for first, spec in stft_blocks(audio, n_fft, hop, pad_mode=pad_mode, block_frames=block_frames):
        mag = spec.abs()
        if power != 1.0:
            mag = mag.pow(power)
        out[:, first:first + mag.shape[1]] = basis @ mag
    return out


# -------------------------------------------------------------- features
def onset_strength(audio, sr: int, hop: int = 512, *, block_frames: int | None = None) -> np.ndarray:
    """Onset-strength envelope: mean positive change of the log-mel spectrum per frame.

    Definition (librosa ``onset.onset_strength`` defaults):

    1. ``S``: 128-band mel power spectrogram (:func:`mel_spectrogram`,
       ``n_fft = 2048``, zero-padded centered STFT, ``power = 2``).
    2. In dB: ``S_db = 10 log10(max(S, 1e-10))``, then raised to at least
       ``max(S_db) - 80`` (the whole clip's maximum).
    3. ``e[t] = mean over bands of max(0, S_db[:, t] - S_db[:, t - 1])`` for ``t >= 1``.
    4. Delayed by ``1 + n_fft // (2 hop)`` frames (zeros in front; 3 at hop 512)
       and cut to the spectrogram's frame count, so that ``env[t]`` lines up
       with the frame whose centre is at sample ``t * hop``.

    Parameters
    ----------
    audio : array_like or torch.Tensor
        Mono signal.
    sr : int
        Its sample rate.
    hop : int
        Frame step in samples.
    block_frames : int, optional
        STFT frames transformed at once (does not change the result).

    Returns
    -------
    numpy.ndarray
        ``(1 + len(audio) // hop,)`` float32.
    """
    spec = mel_spectrogram(audio, sr, ONSET_N_FFT, hop, ONSET_N_MELS, power=2.0,
                           pad_mode="constant", block_frames=block_frames).numpy()
    n_frames = spec.shape[1]
    np.maximum(spec, np.float32(ONSET_AMIN), out=spec)
    np.log10(spec, out=spec)
    spec *= np.float32(10.0)
    np.maximum(spec, spec.max() - np.float32(ONSET_TOP_DB), out=spec)
    rise = spec[:, 1:] - spec[:, :-1]
    del spec
    np.maximum(rise, np.float32(0.0), out=rise)
    change = rise.mean(axis=0)
    lead = 1 + ONSET_N_FFT // (2 * hop)
    env = np.zeros(n_frames, dtype=np.float32)
    if n_frames > lead:
        env[lead:] = change[: n_frames - lead]
    return env


def chroma_stft(audio, sr: int, n_fft: int = 2048, hop: int = 2048, *,
                block_frames: int | None = None) -> np.ndarray:
    """Chromagram at A440 tuning: pitch-class energy per frame, peak-normalised.

    Definition: ``C = W @ |STFT|**2`` with ``W`` the :func:`chroma_filterbank`
    (zero-padded centered STFT, periodic Hann window of ``n_fft``); then each
    frame (column) is divided by its largest value, unless that is below the
    float32 ``tiny`` (1.18e-38; silent frames stay as they are).

    This is librosa's ``feature.chroma_stft`` with ``tuning=0``. librosa's
    default instead estimates each signal's tuning (its deviation from A440)
    and shifts the filters by it; comparing two signals whose two estimates
    differ would then shift the bins between them, so the fidelity metric fixes
    both at A440.

    Parameters
    ----------
    audio : array_like or torch.Tensor
        Mono signal.
    sr : int
        Its sample rate.
    n_fft, hop : int
        STFT frame length and step.
    block_frames : int, optional
        Frames transformed at once (does not change the result).

    Returns
    -------
    numpy.ndarray
        ``(12, 1 + len(audio) // hop)`` float32; rows C, C#, ..., B.
    """
    import torch

    raw = _filtered_spectrogram(audio, _chroma_basis(int(sr), int(n_fft)), n_fft, hop, 2.0,
                                "constant", block_frames)
    peak = raw.abs().amax(dim=0)
    peak = torch.where(peak < _TINY32, torch.ones_like(peak), peak)
    return (raw / peak).numpy()


# ----------------------------------------------------------------- tempo
def tempo_window(sr: int, hop: int = 512, ac_size: float = TEMPO_AC_SIZE) -> int:
    """Autocorrelation window of the tempogram in envelope frames: ``floor(int(ac_size sr) / hop)``."""
    return int(ac_size * sr) // hop


def tempo_frequencies(n_lags: int, sr: int, hop: int = 512) -> np.ndarray:
    """Tempo (BPM) of each autocorrelation lag: ``inf`` at lag 0, ``60 sr / (hop k)`` at lag ``k``."""
    bpms = np.full(n_lags, np.inf)
    bpms[1:] = 60.0 * sr / (hop * np.arange(1.0, n_lags))
    return bpms


def tempogram_mean(envelope, sr: int, hop: int = 512, ac_size: float = TEMPO_AC_SIZE, *,
                   block_windows: int | None = None) -> np.ndarray:
    """Mean over time of the autocorrelation tempogram of an onset envelope.

    Definition (librosa ``feature.tempogram``, Hann window, ``norm=inf``,
    centered, then the mean over frames as in ``feature.tempo``):

    1. ``W = tempo_window(sr, hop, ac_size)`` frames (689 at 44.1 kHz, hop 512).
    2. The envelope of ``n`` frames is extended by ``W // 2`` frames on both
       sides with linear ramps from its end values down to 0
       (``numpy.pad(mode="linear_ramp", end_values=0)``).
    3. For each of the first ``n`` windows of ``W`` frames (step 1): multiply by
       the periodic Hann window of length ``W``, autocorrelate (lags ``0..W-1``),
       and divide by the largest absolute value (unless below float64 ``tiny``).
    4. Average the ``n`` normalised autocorrelations.

    Parameters
    ----------
    envelope : array_like
        Onset-strength envelope (:func:`onset_strength`), one value per ``hop`` samples.
    sr : int
        Sample rate of the audio it came from.
    hop : int
        Its frame step in samples.
    ac_size : float
        Autocorrelation window in seconds.
    block_windows : int, optional
        Windows autocorrelated at once (does not change the result beyond rounding).

    Returns
    -------
    numpy.ndarray
        ``(W,)`` float64: the mean autocorrelation at lags ``0..W-1``.
    """
    env = np.asarray(envelope).reshape(-1)
    n = env.shape[0]
    win = tempo_window(sr, hop, ac_size)
    padded = np.pad(env, win // 2, mode="linear_ramp", end_values=0)
    frames = np.lib.stride_tricks.sliding_window_view(padded, win)[:n]
    window = hann_window(win)
    n_fft = 1 << (2 * win - 2).bit_length()          # >= 2 win - 1: no circular wrap
    step = block_windows or TEMPOGRAM_BLOCK_WINDOWS
    total = np.zeros(win, dtype=np.float64)
    for first in range(0, n, step):
        block = frames[first:first + step] * window
        spec = np.fft.rfft(block, n=n_fft, axis=1)
        ac = np.fft.irfft(spec.real ** 2 + spec.imag ** 2, n=n_fft, axis=1)[:, :win]
        peak = np.abs(ac).max(axis=1, keepdims=True)
        peak[peak < _TINY64] = 1.0
        total += (ac / peak).sum(axis=0)
    return total / max(n, 1)


def tempo(envelope, sr: int, hop: int = 512, *, start_bpm: float = TEMPO_START_BPM,
          std_bpm: float = TEMPO_STD_BPM, max_tempo: float = TEMPO_MAX_BPM,
          ac_size: float = TEMPO_AC_SIZE, block_windows: int | None = None) -> float:
    """Global tempo (BPM) of an onset envelope: the tempogram peak weighted by a prior.

    Definition (librosa ``feature.tempo`` with its defaults, ``aggregate=mean``):
    with ``g`` the :func:`tempogram_mean` and ``bpm[k]`` the
    :func:`tempo_frequencies` of its lags, the tempo is ``bpm[k*]`` where ``k*``
    maximises ``log(1 + 1e6 g[k]) + prior[k]`` over the lags whose tempo is below
    ``max_tempo``, with the log-normal prior
    ``prior[k] = -0.5 ((log2 bpm[k] - log2 start_bpm) / std_bpm)**2`` (centred on
    120 BPM, one octave wide). Like any such estimator it can land on half or
    double the felt tempo.

    Parameters
    ----------
    envelope : array_like
        Onset-strength envelope (:func:`onset_strength`).
    sr : int
        Sample rate of the audio it came from.
    hop : int
        Frame step of the envelope in samples.
    start_bpm, std_bpm : float
        Centre (BPM) and width (octaves) of the prior.
    max_tempo : float
        Highest tempo considered (BPM).
    ac_size : float
        Autocorrelation window in seconds.
    block_windows : int, optional
        Windows autocorrelated at once.

    Returns
    -------
    float
        Tempo in beats per minute.
    """
    g = tempogram_mean(envelope, sr, hop, ac_size, block_windows=block_windows)
    bpms = tempo_frequencies(g.shape[0], sr, hop)
    prior = -0.5 * ((np.log2(bpms) - np.log2(start_bpm)) / std_bpm) ** 2
    prior[: int(np.argmax(bpms < max_tempo))] = -np.inf
    best = int(np.argmax(np.log1p(1e6 * g) + prior))
    logger.debug("tempo %.2f BPM (lag %d of %d, %d envelope frames)", bpms[best], best,
                 g.shape[0], np.asarray(envelope).size)
    return float(bpms[best])


# ---------------------------------------------------------- mel distance
def mel_loss_features(audio, sr: int, *, block_frames: int | None = None) -> list[tuple]:
    """The per-resolution features of one side of :func:`mel_loss`.

    For each ``(n_mels, window)`` of :data:`MEL_LOSS_RESOLUTIONS`: the mel
    magnitude spectrogram ``M`` (:func:`mel_spectrogram` with ``power = 1``,
    ``n_fft = window``, ``hop = window // 4``, reflect-padded centered STFT) and
    ``log10(max(M, 1e-5)**2)``.

    Parameters
    ----------
    audio : array_like or torch.Tensor
        Mono signal (longer than ``1024`` samples, for the reflect padding).
    sr : int
        Its sample rate.
    block_frames : int, optional
        STFT frames transformed at once (does not change the result).

    Returns
    -------
    list of (torch.Tensor, torch.Tensor)
        ``(M, log10(clamp(M)**2))`` per resolution, each ``(n_mels, frames)`` float32.
    """
    out = []
    for n_mels, window in MEL_LOSS_RESOLUTIONS:
        mel = mel_spectrogram(audio, sr, window, window // 4, n_mels, power=1.0,
                              pad_mode="reflect", block_frames=block_frames)
        out.append((mel, mel.clamp(MEL_LOSS_CLAMP).pow(MEL_LOSS_POW).log10()))
    return out


def mel_loss(estimate: list[tuple], reference: list[tuple]) -> float:
    """Multi-resolution mel distance (audiotools ``MelSpectrogramLoss`` defaults).

    Definition: the sum over the two resolutions (150 mels at window 2048, 80
    mels at window 512; :func:`mel_loss_features`) of
    ``mean|log10(max(M_e, 1e-5)**2) - log10(max(M_r, 1e-5)**2)| + mean|M_e - M_r|``,
    the means over all bands and frames. 0 for identical audio; larger is further.

    Parameters
    ----------
    estimate, reference : list of (torch.Tensor, torch.Tensor)
        :func:`mel_loss_features` of the two signals (of equal length).

    Returns
    -------
    float
    """
    loss = 0.0
    for (e_mel, e_log), (r_mel, r_log) in zip(estimate, reference):
        loss = loss + (e_log - r_log).abs().mean()
        loss = loss + (e_mel - r_mel).abs().mean()
    return float(loss)
