"""Signal levels: peak, clipping, loudness difference, and loudness matching for listening.

Definitions (every level metric a trial carries; all on batch item 0 of a signal):

``output_peak``
    The largest absolute sample value of the output, ``max |x|``; full scale is 1.0.
``clipped_pct``
    The share of the output's samples beyond full scale, in percent:
    ``100 · mean(|x| > 1)``. Stored audio is float, so these samples are kept,
    but any fixed-point playback or export clips them.
``loudness_delta_db``
    Integrated loudness of the output minus that of the original (the
    preprocessed clip the model was given), in dB (LU): ITU-R BS.1770-4 with
    K-weighting and 400 ms gated blocks, as audiotools computes it
    (:meth:`audiotools.AudioSignal.loudness`, floored at -70 LUFS).

:func:`match_loudness` is what listening uses: every stimulus is played at one
target loudness (:func:`matching_target`) with its gain shown, so a louder
output never sounds "better" for being louder.

Examples
--------
>>> matched, gain_db = match_loudness(signal, -24.0)   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections import OrderedDict
from typing import Iterable

import torch
from audiotools import AudioSignal

logger = logging.getLogger(__name__)

#: Full scale of float audio.
FULL_SCALE = 1.0
#: Loudness listening is matched to by default (the level signals are preprocessed to).
TARGET_LUFS = -24.0
#: Lowest target :func:`matching_target` goes to for headroom.
MIN_TARGET_LUFS = -40.0
#: Loudness at or below which audio counts as silent (audiotools' floor).
SILENT_LUFS = -70.0
#: Names of the per-trial level metrics.
LEVEL_METRICS = ("output_peak", "clipped_pct", "loudness_delta_db")


def _samples(signal: AudioSignal) -> torch.Tensor:
    return signal.audio_data[0].detach().cpu().float()


def loudness_lufs(signal: AudioSignal) -> float:
    """Integrated loudness of batch item 0 in LUFS (BS.1770-4 as audiotools computes it).

    Measured on a fresh signal, so a loudness cached on ``signal`` is never reused.
    """
    fresh = AudioSignal(_samples(signal)[None].clone(), int(signal.sample_rate))
    return float(fresh.loudness()[0])


_ORIGINALS: "OrderedDict[int, tuple]" = OrderedDict()   # id(audio tensor) → (ref, stamp, lufs)
_ORIGINALS_LOCK = threading.Lock()
#: How many originals' loudness :func:`original_lufs` keeps.
ORIGINALS_KEPT = 4


def original_lufs(signal: AudioSignal) -> float:
    """:func:`loudness_lufs` of a clip every trial compares against, measured once per clip.

    Kept while the signal's audio tensor is the same object, unchanged (its in-place
    version counter, shape and rate), for the last :data:`ORIGINALS_KEPT` clips; a
    modified or different tensor is measured afresh.
    """
    data = signal.audio_data
    stamp = (getattr(data, "_version", None), tuple(data.shape), int(signal.sample_rate))
    key = id(data)
    with _ORIGINALS_LOCK:
        hit = _ORIGINALS.get(key)
        if hit is not None and hit[0]() is data and hit[1] == stamp:
            _ORIGINALS.move_to_end(key)
            return hit[2]
    value = loudness_lufs(signal)
    with _ORIGINALS_LOCK:
        _ORIGINALS[key] = (weakref.ref(data), stamp, value)
        _ORIGINALS.move_to_end(key)
        while len(_ORIGINALS) > ORIGINALS_KEPT:
            _ORIGINALS.popitem(last=False)
    return value


def peak(signal: AudioSignal) -> float:
    """Largest absolute sample value of batch item 0."""
    return float(_samples(signal).abs().max())


def clipped_pct(signal: AudioSignal) -> float:
    """Percentage of batch item 0's samples beyond full scale (``|x| > 1``)."""
    return 100.0 * float((_samples(signal).abs() > FULL_SCALE).double().mean())


def level_metrics(original: AudioSignal, output: AudioSignal,
                  original_lufs: float | None = None) -> dict:
    """``output_peak``, ``clipped_pct`` and ``loudness_delta_db`` of ``output`` (module docstring).

    Parameters
    ----------
    original, output : AudioSignal
        The clip the model was given and what it returned (batch item 0 of each).
    original_lufs : float, optional
        The original's loudness if already measured.
    """
    ref = loudness_lufs(original) if original_lufs is None else original_lufs
    return {"output_peak": peak(output), "clipped_pct": clipped_pct(output),
            "loudness_delta_db": loudness_lufs(output) - ref}


def match_loudness(signal: AudioSignal, target_lufs: float = TARGET_LUFS
                   ) -> tuple[AudioSignal, float]:
    """A copy of ``signal`` scaled to ``target_lufs``, and the gain applied in dB.

    Parameters
    ----------
    signal : AudioSignal
        Any signal (batch item 0 sets the gain; the same gain scales every item).
    target_lufs : float
        Integrated loudness the copy should have.

    Returns
    -------
    (AudioSignal, float)
        The scaled copy (a new signal; ``signal`` is untouched) and ``gain_db``
        (``target_lufs`` minus the signal's loudness). A silent signal (at or
        below :data:`SILENT_LUFS`) cannot be matched: it comes back unscaled with
        gain 0.0.

    Examples
    --------
    >>> louder = AudioSignal(torch.randn(1, 1, 44100) * 0.5, 44100)   # doctest: +SKIP
    >>> quiet, gain_db = match_loudness(louder, -30.0)                 # doctest: +SKIP
    """
    lufs = loudness_lufs(signal)
    gain_db = 0.0 if lufs <= SILENT_LUFS else target_lufs - lufs
    scaled = signal.audio_data.detach().cpu().float() * (10.0 ** (gain_db / 20.0))
    return AudioSignal(scaled, int(signal.sample_rate)), gain_db


def matching_target(signals: Iterable[AudioSignal], target_lufs: float = TARGET_LUFS,
                    min_target_lufs: float = MIN_TARGET_LUFS) -> float:
    """One loudness target for a set of stimuli: ``target_lufs``, lowered for headroom.

    The target is lowered until no stimulus, matched to it, peaks above full
    scale (each stimulus allows ``loudness - 20·log10(peak)``), but never below
    ``min_target_lufs``; silent stimuli are ignored.
    """
    target = target_lufs
    for signal in signals:
        lufs, top = loudness_lufs(signal), peak(signal)
        if lufs > SILENT_LUFS and top > 0:
            target = min(target, lufs - 20.0 * math.log10(top / FULL_SCALE))
    return max(target, min_target_lufs)


def clipping_note(outcomes) -> str | None:
    """One plain-language line when any outcome's output exceeds full scale, else None.

    Names how many outputs would clip and the worst run (largest ``clipped_pct``,
    then ``output_peak``): condition, seed and clip.
    """
    clipped = [o for o in outcomes if o.metrics.get("clipped_pct", 0.0) > 0.0]
    if not clipped:
        return None
    worst = max(clipped, key=lambda o: (o.metrics["clipped_pct"], o.metrics.get("output_peak", 0.0)))
    trial = worst.trial
    return (f"Clipping: {len(clipped)} of {len(outcomes)} outputs exceed full scale; worst "
            f"{trial.condition.name} (seed {trial.seed}, clip {trial.clip.name}): peak "
            f"{worst.metrics.get('output_peak', float('nan')):.2f}, "
            f"{worst.metrics['clipped_pct']:.2f} % of samples beyond ±1. The stored WAVs are "
            f"float and hold the unclipped signal the metrics saw; played or exported as "
            f"fixed-point they clip (the listening report plays them loudness-matched).")


def add_level_metrics(outcome, original: AudioSignal):
    """Add the level metrics to an outcome that carries ``audio["output"]`` (in place; returned).

    The framework calls this for every trial of every study and backend; metrics a
    study already set are kept.
    """
    output = outcome.audio.get("output")
    if output is not None and not all(m in outcome.metrics for m in LEVEL_METRICS):
        measured = level_metrics(original, output, original_lufs(original))
        outcome.metrics.update({k: v for k, v in measured.items() if k not in outcome.metrics})
    return outcome


def with_clipping_note(summary, outcomes):
    """The study's summary with :func:`clipping_note` added once, when any output clips.

    The note opens ``observations.txt`` and the summary gains the metrics
    ``outputs_clipped`` (how many outputs exceed full scale) and ``max_clipped_pct``.
    ``summary`` is a :class:`~vampstudy.study.Summary` (the runner passes an empty one
    for a study whose analysis returns none); it is returned unchanged when nothing clips.
    """
    note = clipping_note(outcomes)
    if note is None:
        return summary
    logger.warning(note)
    rest = summary.texts.get("observations.txt", "")
    summary.texts["observations.txt"] = note + "\n" + rest
    clipped = [o.metrics["clipped_pct"] for o in outcomes if o.metrics.get("clipped_pct", 0.0) > 0]
    summary.metrics.update({"outputs_clipped": len(clipped), "max_clipped_pct": max(clipped)})
    return summary
