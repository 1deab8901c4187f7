"""Audio fidelity metrics: how the generated audio compares with the original.

Functions of two :class:`audiotools.AudioSignal` (the original first),
mixed to mono and trimmed to the shorter length. The features are computed by
:mod:`vampstudy.spectral` (numpy and torch, following the published
definitions that librosa and audiotools implement, and tested against them);
computing them imports neither librosa nor numba. Definitions:

``mel_distance``
    Multi-resolution mel distance, audiotools' ``MelSpectrogramLoss`` with its
    defaults (:func:`vampstudy.spectral.mel_loss`): the sum over two resolutions
    (150 mels at window 2048, 80 mels at window 512, hop = window / 4) of the
    mean absolute difference of ``log10(max(M, 1e-5)**2)`` plus that of ``M``,
    ``M`` the mel magnitude spectrogram. 0 for identical audio; larger is further.
``chroma_similarity``
    Mean over frames of the cosine similarity between the two 12-bin chroma
    vectors (:func:`vampstudy.spectral.chroma_stft`: Ellis' chromagram of the
    power STFT, n_fft = hop = 2048, each frame scaled to peak 1), over frames
    where both have energy. Both chromagrams use A440 tuning (librosa's
    ``chroma_stft(tuning=0)``) rather than a tuning estimated per signal: two
    different estimates for the two signals would shift the bins between them.
    1 = the same pitch classes at the same times (harmonic preservation).
``onset_correlation``
    Pearson correlation of the two onset-strength envelopes
    (:func:`vampstudy.spectral.onset_strength`: the mean over 128 mel bands of
    the positive frame-to-frame increase of the log-mel power spectrum, hop 512;
    librosa's ``onset_strength``). 1 = the same rhythm at the same times.
``tempo_difference_bpm``
    ``|tempo(original) - tempo(generated)|``, each the tempo of the whole signal
    from the autocorrelation tempogram of its onset envelope with a log-normal
    prior around 120 BPM (:func:`vampstudy.spectral.tempo`; librosa's
    ``feature.tempo``), which, like any tempo estimator, can land on half or
    double the felt tempo.
``visqol_moslqo`` (optional, ``--visqol``)
    ViSQOL v3 audio-mode MOS-LQO from the ``visqol-python`` package, 1–5.

The original's side of every metric (its mel spectrograms, chroma, onset
envelope and tempo) depends only on the original, so it is computed once per
clip and kept in a :class:`FidelityReference`; every condition then pays only
for its own output's features. :func:`reference_for` keeps the references of
the last few clips (keyed by the clip's audio tensor), so the plain functions
below (:func:`fidelity_metrics`, :func:`tempo_bpm`, ...) reuse them too.
Long clips are transformed a block of frames at a time, so only these reduced
features are held, never a whole complex spectrogram.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from . import spectral

CHROMA_HOP = 2048
ONSET_HOP = 512
#: audiotools ``MelSpectrogramLoss`` defaults: (n_mels, window length) per resolution.
MEL_RESOLUTIONS = spectral.MEL_LOSS_RESOLUTIONS
MEL_CLAMP_EPS = spectral.MEL_LOSS_CLAMP
MEL_POW = spectral.MEL_LOSS_POW
#: How many clips' references :func:`reference_for` keeps.
REFERENCE_CACHE_SIZE = 4


def _mono(signal) -> tuple[np.ndarray, int]:
    audio = signal.audio_data[0].mean(0).detach().cpu().numpy().astype(np.float32)
    return audio, int(signal.sample_rate)


def _pair(reference, estimate) -> tuple[np.ndarray, np.ndarray, int]:
    a, sr = _mono(reference)
    b, sr_b = _mono(estimate)
    if sr != sr_b:
        raise ValueError(f"sample rates differ: {sr} vs {sr_b}")
    n = min(len(a), len(b))
    return a[:n], b[:n], sr


# ------------------------------------------------------------- features
def mel_features(audio: np.ndarray, sr: int) -> list[tuple]:
    """``(mel, log10(clamp(mel)^2))`` per resolution of the mel distance (torch tensors).

    See :func:`vampstudy.spectral.mel_loss_features`.
    """
    return spectral.mel_loss_features(audio, sr)


def _mel_loss(estimate_mels: list[tuple], reference_mels: list[tuple]) -> float:
    """The mel distance of ``estimate`` to ``reference`` from their :func:`mel_features`."""
    return spectral.mel_loss(estimate_mels, reference_mels)


def chroma(audio: np.ndarray, sr: int) -> np.ndarray:
    """12 x frames chromagram at A440, hop :data:`CHROMA_HOP` (:func:`vampstudy.spectral.chroma_stft`)."""
    return spectral.chroma_stft(audio, sr, n_fft=2048, hop=CHROMA_HOP)


def onset_envelope(audio: np.ndarray, sr: int) -> np.ndarray:
    """Onset-strength envelope, hop :data:`ONSET_HOP` (:func:`vampstudy.spectral.onset_strength`)."""
    return spectral.onset_strength(audio, sr, hop=ONSET_HOP)


def _tempo_of_envelope(envelope: np.ndarray, sr: int) -> float:
    return spectral.tempo(envelope, sr, hop=ONSET_HOP)


def _chroma_similarity(ca: np.ndarray, cb: np.ndarray) -> float:
    na, nb = np.linalg.norm(ca, axis=0), np.linalg.norm(cb, axis=0)
    ok = (na > 1e-8) & (nb > 1e-8)
    if not ok.any():
        return float("nan")
    cos = (ca[:, ok] * cb[:, ok]).sum(0) / (na[ok] * nb[ok])
    return float(cos.mean())


def _onset_correlation(ea: np.ndarray, eb: np.ndarray) -> float:
    if ea.std() == 0 or eb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ea, eb)[0, 1])


@dataclass
class _Features:
    """One audio array's side of the metrics (each computed on first use)."""

    audio: np.ndarray
    sr: int
    _mels: list | None = None
    _chroma: np.ndarray | None = None
    _onset: np.ndarray | None = None

    @property
    def mels(self) -> list[tuple]:
        if self._mels is None:
            self._mels = mel_features(self.audio, self.sr)
        return self._mels

    @property
    def chroma(self) -> np.ndarray:
        if self._chroma is None:
            self._chroma = chroma(self.audio, self.sr)
        return self._chroma

    @property
    def onset(self) -> np.ndarray:
        if self._onset is None:
            self._onset = onset_envelope(self.audio, self.sr)
        return self._onset


class FidelityReference:
    """The original clip's side of the fidelity metrics, computed once and reused.

    Examples
    --------
    >>> ref = FidelityReference.from_signal(clip.signal)      # doctest: +SKIP
    >>> ref.compare(output_signal)                             # doctest: +SKIP
    {'mel_distance': ..., 'chroma_similarity': ..., 'onset_correlation': ...,
     'tempo_difference_bpm': ...}

    Safe to share between threads: features are computed under a lock.
    """

    def __init__(self, audio: np.ndarray, sample_rate: int):
        self.audio = audio
        self.sample_rate = int(sample_rate)
        self._by_length: dict[int, _Features] = {}   # features of audio[:n], per trim length n
        self._tempo: float | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_signal(cls, signal) -> "FidelityReference":
        audio, sr = _mono(signal)
        return cls(audio, sr)

    # ---------------------------------------------------- reference side
    def features(self, n: int) -> _Features:
        """The original's features over its first ``n`` samples (what it is compared on)."""
        with self._lock:
            feats = self._by_length.get(n)
            if feats is None:
                if len(self._by_length) >= 4:   # outputs of many lengths: keep a few
                    self._by_length.pop(next(iter(self._by_length)))
                feats = self._by_length[n] = _Features(self.audio[:n], self.sample_rate)
            return feats

    def _computed(self, n: int, name: str):
        feats = self.features(n)
        with self._lock:
            return getattr(feats, name)

    def tempo_bpm(self) -> float:
        """Tempo of the whole original in beats per minute (:func:`vampstudy.spectral.tempo`)."""
        if self._tempo is None:
            envelope = self._computed(len(self.audio), "onset")
            self._tempo = _tempo_of_envelope(envelope, self.sample_rate)
        return self._tempo

    # ----------------------------------------------------- comparisons
    def _estimate(self, estimate) -> tuple[np.ndarray, _Features, int]:
        b, sr = _mono(estimate)
        if sr != self.sample_rate:
            raise ValueError(f"sample rates differ: {self.sample_rate} vs {sr}")
        n = min(len(self.audio), len(b))
        return b, _Features(b[:n], sr), n

    def mel_distance(self, estimate) -> float:
        _, est, n = self._estimate(estimate)
        return _mel_loss(est.mels, self._computed(n, "mels"))

    def chroma_similarity(self, estimate) -> float:
        _, est, n = self._estimate(estimate)
        return _chroma_similarity(self._computed(n, "chroma"), est.chroma)

    def onset_correlation(self, estimate) -> float:
        _, est, n = self._estimate(estimate)
        return _onset_correlation(self._computed(n, "onset"), est.onset)

    def compare(self, estimate) -> dict[str, float]:
        """Every metric of ``estimate`` against this original, keyed by metric name."""
        b, est, n = self._estimate(estimate)
        whole = est.onset if n == len(b) else onset_envelope(b, self.sample_rate)
        return {
            "mel_distance": _mel_loss(est.mels, self._computed(n, "mels")),
            "chroma_similarity": _chroma_similarity(self._computed(n, "chroma"), est.chroma),
            "onset_correlation": _onset_correlation(self._computed(n, "onset"), est.onset),
            "tempo_difference_bpm": abs(self.tempo_bpm()
                                        - _tempo_of_envelope(whole, self.sample_rate)),
        }


_CACHE: "OrderedDict[int, tuple]" = OrderedDict()
_CACHE_LOCK = threading.Lock()


def reference_for(signal) -> FidelityReference:
    """The :class:`FidelityReference` of ``signal``, reused while its audio is unchanged.

    Keyed by the signal's audio tensor (its identity and in-place version
    counter), so the same clip object gets the same reference across
    conditions, and a modified or different tensor gets a new one. Keeps the
    last :data:`REFERENCE_CACHE_SIZE` clips.
    """
    data = signal.audio_data
    stamp = (getattr(data, "_version", None), tuple(data.shape), int(signal.sample_rate))
    key = id(data)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit[0]() is data and hit[1] == stamp:
            _CACHE.move_to_end(key)
            return hit[2]
    ref = FidelityReference.from_signal(signal)
    with _CACHE_LOCK:
        _CACHE[key] = (weakref.ref(data), stamp, ref)
        _CACHE.move_to_end(key)
        while len(_CACHE) > REFERENCE_CACHE_SIZE:
            _CACHE.popitem(last=False)
    return ref


# ------------------------------------------------------- plain functions
def mel_distance(reference, estimate) -> float:
    """Mel distance of ``estimate`` to ``reference``, as audiotools' ``MelSpectrogramLoss`` (0 = identical)."""
    return reference_for(reference).mel_distance(estimate)


def chroma_similarity(reference, estimate) -> float:
    """Mean framewise cosine similarity of A440 chroma (1 = same harmony)."""
    return reference_for(reference).chroma_similarity(estimate)


def onset_correlation(reference, estimate) -> float:
    """Pearson correlation of onset-strength envelopes (1 = same rhythm)."""
    return reference_for(reference).onset_correlation(estimate)


def tempo_bpm(signal) -> float:
    """Tempo estimate of a signal in beats per minute (:func:`vampstudy.spectral.tempo`)."""
    return reference_for(signal).tempo_bpm()


def fidelity_metrics(reference, estimate) -> dict[str, float]:
    """All of the above, keyed by metric name (the reference side is cached per clip)."""
    return reference_for(reference).compare(estimate)


_VISQOL_API = None
VISQOL_RATE = 48000


def visqol_moslqo(reference, estimate) -> float:
    """ViSQOL v3 audio-mode MOS-LQO (1–5, higher is better) of ``estimate`` against ``reference``.

    Optional: needs the ``visqol-python`` package (``pip install -e '.[perceptual]'``),
    which ships its model and runs offline. Both signals are resampled to
    48 kHz, the rate ViSQOL's audio mode is calibrated for. Slow: about 1 s of
    CPU per 2 s of audio.
    """
    global _VISQOL_API
    try:
        import visqol
    except ImportError as exc:
        from .errors import BackendUnavailable

        raise BackendUnavailable("ViSQOL needs the visqol-python package: "
                                 "pip install visqol-python (or the [perceptual] extra)") from exc
    if _VISQOL_API is None:
        import logging as _logging

        _logging.getLogger("visqol").setLevel(_logging.ERROR)
        _VISQOL_API = visqol.VisqolApi()
        _VISQOL_API.create(mode="audio")
    ref = reference.clone().to_mono().resample(VISQOL_RATE)
    est = estimate.clone().to_mono().resample(VISQOL_RATE)
    a, b, sr = _pair(ref, est)
    return float(_VISQOL_API.measure_from_arrays(a.astype(np.float64), b.astype(np.float64),
                                                 sr).moslqo)
