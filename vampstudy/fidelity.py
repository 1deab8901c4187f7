"""Audio fidelity metrics: how the generated audio compares with the original.

Pure functions of two :class:`audiotools.AudioSignal` (the original first),
mixed to mono and trimmed to the shorter length. Definitions:

``mel_distance``
    audiotools' ``MelSpectrogramLoss`` with its defaults (L1 distance of log and
    linear mel magnitudes at window lengths 2048 and 512, 150 and 80 mels).
    0 for identical audio; larger is further.
``chroma_similarity``
    Mean over frames of the cosine similarity between the two 12-bin chroma
    vectors (librosa ``chroma_stft``, hop 2048), over frames where both have
    energy. 1 = the same pitch classes at the same times (harmonic preservation).
``onset_correlation``
    Pearson correlation of the two onset-strength envelopes (librosa
    ``onset_strength``, hop 512). 1 = the same rhythm at the same times.
``tempo_difference_bpm``
    ``|tempo(original) - tempo(generated)|``, tempo from librosa's
    ``feature.tempo`` on the onset envelope (which, like any tempo estimator,
    can land on half or double the felt tempo).
``visqol_moslqo`` (optional, ``--visqol``)
    ViSQOL v3 audio-mode MOS-LQO from the ``visqol-python`` package, 1–5.
"""

from __future__ import annotations

import numpy as np

CHROMA_HOP = 2048
ONSET_HOP = 512


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


def mel_distance(reference, estimate) -> float:
    """audiotools ``MelSpectrogramLoss(estimate, reference)`` (0 = identical)."""
    from audiotools import AudioSignal
    from audiotools.metrics.spectral import MelSpectrogramLoss

    a, b, sr = _pair(reference, estimate)
    return float(MelSpectrogramLoss()(AudioSignal(b[None, None], sr), AudioSignal(a[None, None], sr)))


def chroma(audio: np.ndarray, sr: int) -> np.ndarray:
    import librosa

    return librosa.feature.chroma_stft(y=audio, sr=sr, hop_length=CHROMA_HOP)


def chroma_similarity(reference, estimate) -> float:
    """Mean framewise cosine similarity of chroma (1 = same harmony)."""
    a, b, sr = _pair(reference, estimate)
    ca, cb = chroma(a, sr), chroma(b, sr)
    na, nb = np.linalg.norm(ca, axis=0), np.linalg.norm(cb, axis=0)
    ok = (na > 1e-8) & (nb > 1e-8)
    if not ok.any():
        return float("nan")
    cos = (ca[:, ok] * cb[:, ok]).sum(0) / (na[ok] * nb[ok])
    return float(cos.mean())


def onset_envelope(audio: np.ndarray, sr: int) -> np.ndarray:
    import librosa

    return librosa.onset.onset_strength(y=audio, sr=sr, hop_length=ONSET_HOP)


def onset_correlation(reference, estimate) -> float:
    """Pearson correlation of onset-strength envelopes (1 = same rhythm)."""
    a, b, sr = _pair(reference, estimate)
    ea, eb = onset_envelope(a, sr), onset_envelope(b, sr)
    if ea.std() == 0 or eb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ea, eb)[0, 1])


def tempo_bpm(signal) -> float:
    """librosa's tempo estimate of a signal, in beats per minute."""
    import librosa

    audio, sr = _mono(signal)
    envelope = onset_envelope(audio, sr)
    return float(np.atleast_1d(librosa.feature.tempo(onset_envelope=envelope, sr=sr,
                                                     hop_length=ONSET_HOP))[0])


def fidelity_metrics(reference, estimate) -> dict[str, float]:
    """All of the above, keyed by metric name."""
    return {
        "mel_distance": mel_distance(reference, estimate),
        "chroma_similarity": chroma_similarity(reference, estimate),
        "onset_correlation": onset_correlation(reference, estimate),
        "tempo_difference_bpm": abs(tempo_bpm(reference) - tempo_bpm(estimate)),
    }


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
