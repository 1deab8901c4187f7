"""The audio of a listening test: excerpts, low-pass anchors, loudness matching.

For each item every stimulus is cut to the same excerpt (at most
:data:`MAX_EXCERPT_S` seconds, BS.1534-3), mixed to mono, and brought to one
integrated loudness (:data:`TARGET_LUFS`, ITU-R BS.1770 as measured by audiotools).
Where a stimulus would then clip, the target of the whole test is lowered so that
every stimulus stays matched. The anchors are the original low-passed at 3.5 kHz
and 7 kHz (zero-phase Butterworth, order :data:`ANCHOR_ORDER`).

Loudness matching is a private helper here until the public ``match_loudness``
of issue 22 (``vampstudy.levels``) lands on main; then this module uses that.
"""

from __future__ import annotations

import io
import math

import numpy as np
import soundfile as sf
from scipy import signal as sps

from .design import ANCHOR_CUTOFF_HZ, HIDDEN_REFERENCE

#: Longest excerpt (seconds), BS.1534-3.
MAX_EXCERPT_S = 12.0
#: Loudness every stimulus is matched to (LUFS), lowered for the whole test if a peak would clip.
TARGET_LUFS = -23.0
#: Highest sample magnitude after matching.
PEAK_LIMIT = 0.98
ANCHOR_ORDER = 8


def mono(x: np.ndarray) -> np.ndarray:
    """Samples as float64 mono (channels averaged); accepts (n,) or (n, channels)."""
    x = np.asarray(x, dtype=np.float64)
    return x.mean(axis=1) if x.ndim == 2 else x


def lowpass(x: np.ndarray, sample_rate: int, cutoff_hz: float) -> np.ndarray:
    """Zero-phase Butterworth low-pass of order :data:`ANCHOR_ORDER` (a BS.1534 anchor)."""
    sos = sps.butter(ANCHOR_ORDER // 2, cutoff_hz, btype="low", fs=sample_rate, output="sos")
    return sps.sosfiltfilt(sos, x)


def loudness_lufs(x: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness (ITU-R BS.1770, gated) in LUFS, via audiotools' meter."""
    import torch
    from audiotools import AudioSignal

    sig = AudioSignal(torch.tensor(np.ascontiguousarray(x), dtype=torch.float32)[None, None], sample_rate)
    return float(sig.loudness().max())


def _match_loudness(x: np.ndarray, sample_rate: int, target_lufs: float,
                    level: float | None = None) -> np.ndarray:
    """``x`` scaled to ``target_lufs`` (private stand-in for issue 22's ``match_loudness``);
    ``level`` is ``x``'s loudness when already measured."""
    level = loudness_lufs(x, sample_rate) if level is None else level
    if not math.isfinite(level) or level <= -70.0:
        return x.copy()
    return x * 10.0 ** ((target_lufs - level) / 20.0)


def item_stimuli(original: np.ndarray, outputs: dict[str, np.ndarray], sample_rate: int,
                 max_seconds: float = MAX_EXCERPT_S) -> dict[str, np.ndarray]:
    """One item's unmatched stimuli: hidden reference, anchors and every output, all mono
    and cut to one excerpt (the first ``max_seconds`` seconds or the shortest signal)."""
    signals = {HIDDEN_REFERENCE: mono(original), **{k: mono(v) for k, v in outputs.items()}}
    n = min(int(max_seconds * sample_rate), *(len(v) for v in signals.values()))
    out = {k: v[:n] for k, v in signals.items()}
    for role, cutoff in ANCHOR_CUTOFF_HZ.items():
        out[role] = lowpass(out[HIDDEN_REFERENCE], sample_rate, cutoff)
    return out


def match_all(items: dict[str, dict[str, np.ndarray]], sample_rate: int,
              target_lufs: float = TARGET_LUFS) -> tuple[dict, float]:
    """Every stimulus of every item at one loudness; returns (matched items, target used).

    The target is ``target_lufs``, lowered just enough that no stimulus peaks above
    :data:`PEAK_LIMIT` (so that all stay matched)."""
    levels = {(i, k): loudness_lufs(v, sample_rate) for i, s in items.items() for k, v in s.items()}
    headroom = 0.0
    for (i, k), level in levels.items():
        if math.isfinite(level) and level > -70.0:
            peak = float(np.max(np.abs(items[i][k]))) * 10.0 ** ((target_lufs - level) / 20.0)
            if peak > PEAK_LIMIT:
                headroom = max(headroom, 20.0 * math.log10(peak / PEAK_LIMIT))
    target = target_lufs - headroom
    matched = {i: {k: _match_loudness(v, sample_rate, target, levels[(i, k)]) for k, v in s.items()}
               for i, s in items.items()}
    return matched, target


def wav_bytes(x: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV of mono samples."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1.0, 1.0).astype(np.float32), sample_rate, format="WAV",
             subtype="PCM_16")
    return buf.getvalue()
