"""Masks: VampNet's mask algebra, its ``build_mask``, and the check a study's mask must pass.

Convention (VampNet's): a mask is a LongTensor shaped like the codes,
``(batch, n_codebooks, n_steps)``, where **1 means "masked: generate"** and
**0 means "kept: prompt"**.

The algebra
-----------
Pure torch functions; each returns a new mask shaped like its ``like``
argument (codes or another mask), on ``like``'s device, and never edits its
input. Their names say what they keep; everything else is generated:

==============================  =====================================  ==========================
function                        keeps                                  VampNet (``vampnet/mask.py``)
==============================  =====================================  ==========================
:func:`keep_nothing`            nothing (generate every position)      ``full_mask``
:func:`keep_everything`         every position                         ``empty_mask``
:func:`keep_periodic`           every ``period``-th step, all codebooks ``periodic_mask``
:func:`keep_prefix`             the first ``n`` steps                  ``inpaint`` (prefix)
:func:`keep_suffix`             the last ``n`` steps                   ``inpaint`` (suffix)
:func:`keep_codebooks`          codebooks ``start <= c < stop``        ``codebook_unmask`` / ``codebook_mask``
:func:`keep_onsets`             steps within ``width`` of each onset   ``onset_mask``
:func:`generate_random`         each position with probability 1 - p   ``linear_random``
:func:`dropout`                 what ``mask`` keeps, less random steps ``dropout``
:func:`keep_either`             where any of the masks keeps           ``mask_and`` (minimum)
:func:`keep_both`               where all of the masks keep            ``mask_or`` (maximum)
==============================  =====================================  ==========================

VampNet's two codebook operations are one range here:
``codebook_unmask(mask, n)`` is ``keep_either(mask, keep_codebooks(mask, 0, n))`` and
``codebook_mask(mask, k)`` is ``keep_both(mask, keep_codebooks(mask, 0, k))``.

Randomness: the random functions take ``seed`` — an int (a private
``torch.Generator`` seeded with it), a ``torch.Generator``, or None for
torch's global RNG, which is what VampNet draws from and what the runner seeds
with the trial's seed before a trial's mask is built.

:func:`build_mask` composes these in the order of
``vampnet.interface.Interface.build_mask`` (``shared/VAMPNET.md``). The
reference backend uses it; the VampNet adapter calls VampNet's own.
:func:`check_mask` is what the runner asks of every mask before the model sees it.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .errors import ConfigError, MaskError

def seconds_to_tokens(seconds: float, sample_rate: int, hop_length: int) -> int:
    """``ceil(seconds * sample_rate / hop_length)``, VampNet's ``s2t``."""
    return int(math.ceil(seconds * sample_rate / hop_length))


# ------------------------------------------------------------------ helpers
def _shape(like: torch.Tensor, what: str) -> tuple[int, int, int]:
    if not isinstance(like, torch.Tensor) or like.ndim != 3:
        got = tuple(like.shape) if isinstance(like, torch.Tensor) else type(like).__name__
        raise ConfigError(f"{what}: `like` must be codes or a mask shaped (batch, n_codebooks, "
                          f"n_steps), got {got}")
    return tuple(like.shape)


def _generator(seed) -> torch.Generator | None:
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return torch.Generator().manual_seed(int(seed))
    raise ConfigError(f"seed must be an int, a torch.Generator or None, got {seed!r}")


def _count(value, what: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{what} must be an int >= 0, got {value!r}")
    return int(value)


# ------------------------------------------------------------ constructors
def keep_nothing(like: torch.Tensor) -> torch.Tensor:
    """Generate every position (all ones; VampNet's ``full_mask``)."""
    return torch.ones(_shape(like, "keep_nothing"), dtype=torch.long, device=like.device)


def keep_everything(like: torch.Tensor) -> torch.Tensor:
    """Keep every position (all zeros; VampNet's ``empty_mask``)."""
    return torch.zeros(_shape(like, "keep_everything"), dtype=torch.long, device=like.device)


def periodic_prompt_mask(n_steps: int, period: int, width: int = 1) -> torch.Tensor:
    """A 1-D time mask that keeps (0) every ``period``-th step, widened to ``width``.

    Kept steps are ``j`` with ``j % period == 0``, each widened to the steps
    ``max(0, j - width // 2) .. min(n_steps - 1, j + width // 2)``.
    ``period == 0`` keeps nothing (all ones). No roll is applied here.
    """
    mask = torch.ones(n_steps, dtype=torch.long)
    if period <= 0:
        return mask
    half = width // 2
    for j in range(0, n_steps, period):
        mask[max(0, j - half): min(n_steps - 1, j + half) + 1] = 0
    return mask


def keep_periodic(like: torch.Tensor, period: int, width: int = 1, offset: int = 0) -> torch.Tensor:
    """Keep every ``period``-th step on every codebook (VampNet's ``periodic_mask``).

    Parameters
    ----------
    like : torch.Tensor
        Codes or a mask, ``(batch, n_codebooks, n_steps)``.
    period : int
        Steps ``j`` with ``j % period == 0`` are kept; 0 keeps nothing.
    width : int
        Each kept step widens to ``j - width // 2 .. j + width // 2`` (clipped to the clip).
    offset : int
        Shift the kept steps right by ``offset``, wrapping at the end (``torch.roll``;
        VampNet's ``random_roll`` draws it with :func:`random_offset`).

    Examples
    --------
    >>> keep_periodic(torch.zeros(1, 1, 8, dtype=torch.long), 3, offset=1)[0, 0].tolist()
    [1, 0, 1, 1, 0, 1, 1, 0]
    """
    _, _, n_steps = _shape(like, "keep_periodic")
    period, offset = _count(period, "period"), _count(offset, "offset")
    if width < 1:
        raise ConfigError(f"keep_periodic: width must be >= 1, got {width}")
    steps = periodic_prompt_mask(n_steps, period, width)
    if period > 0 and offset:
        steps = torch.roll(steps, offset, dims=-1)
    return steps.expand(like.shape).clone().to(like.device)


def random_offset(period: int, seed=None) -> int:
    """A roll for :func:`keep_periodic` drawn uniformly from ``[0, period)`` (VampNet's random_roll)."""
    if _count(period, "period") == 0:
        return 0
    return int(torch.randint(0, period, (1,), generator=_generator(seed)).item())


def keep_prefix(like: torch.Tensor, n_steps: int) -> torch.Tensor:
    """Keep the first ``n_steps`` steps on every codebook (VampNet's ``inpaint`` prefix)."""
    mask = keep_nothing(like)
    mask[..., :_count(n_steps, "keep_prefix: n_steps")] = 0
    return mask


def keep_suffix(like: torch.Tensor, n_steps: int) -> torch.Tensor:
    """Keep the last ``n_steps`` steps on every codebook (VampNet's ``inpaint`` suffix)."""
    mask = keep_nothing(like)
    n = _count(n_steps, "keep_suffix: n_steps")
    if n:
        mask[..., max(0, mask.shape[-1] - n):] = 0
    return mask


def keep_codebooks(like: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Keep codebooks ``start <= c < stop`` at every step; generate the others.

    ``keep_codebooks(like, 0, 3)`` keeps VampNet's coarse prompt codebooks 0–2.
    A ``stop`` past the last codebook is clipped; ``start == stop`` keeps nothing.
    """
    start, stop = _count(start, "keep_codebooks: start"), _count(stop, "keep_codebooks: stop")
    if stop < start:
        raise ConfigError(f"keep_codebooks: stop must be >= start, got start={start}, stop={stop}")
    mask = keep_nothing(like)
    mask[:, start:stop, :] = 0
    return mask


def keep_onsets(like: torch.Tensor, onsets, width: int) -> torch.Tensor:
    """Keep the steps ``onset - width .. onset + width - 1`` of every onset (VampNet's ``onset_mask``).

    ``onsets`` are step indices (e.g. :func:`onset_frames`). Windows are clipped at
    the clip's start, where VampNet's slice ``[idx - width : idx + width]`` with a
    negative start keeps nothing for an onset closer than ``width`` to step 0.
    """
    mask = keep_nothing(like)
    width = _count(width, "keep_onsets: width")
    for idx in onsets:
        mask[..., max(0, int(idx) - width): int(idx) + width] = 0
    return mask


def onset_frames(signal, hop_length: int) -> np.ndarray:
    """Onset positions in token steps, detected with librosa (backtracked)."""
    import librosa

    audio = signal.audio_data[0].mean(0).detach().cpu().numpy()
    return librosa.onset.onset_detect(y=audio, sr=int(signal.sample_rate),
                                      hop_length=hop_length, backtrack=True)


def generate_random(like: torch.Tensor, p: float, seed=None) -> torch.Tensor:
    """Generate each position with probability ``p``, independently (VampNet's ``linear_random``).

    This is ``build_mask``'s ``rand_mask_intensity``. ``p >= 1`` generates
    everything without drawing. (VampNet's ``random`` differs: it uses
    probability ``cos(p·π/2)``.)
    """
    shape = _shape(like, "generate_random")
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"generate_random: p must be in [0, 1], got {p}")
    if p >= 1.0:
        return keep_nothing(like)
    gen = _generator(seed)
    return torch.bernoulli(torch.full(shape, float(p)), generator=gen).long().to(like.device)


def dropout(mask: torch.Tensor, p: float, seed=None) -> torch.Tensor:
    """Generate ``int(n_steps * p)`` random time steps on every codebook (VampNet's ``dropout``).

    Steps are drawn with replacement, so fewer distinct steps may change. The
    rest of ``mask`` is unchanged.
    """
    _, _, n_steps = _shape(mask, "dropout")
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"dropout: p must be in [0, 1], got {p}")
    out = mask.clone()
    n_drop = int(n_steps * p)
    if n_drop > 0:
        steps = torch.randint(0, n_steps, (n_drop,), generator=_generator(seed))
        out[..., steps.to(mask.device)] = 1
    return out


# ------------------------------------------------------------- combinations
def _same_shape(masks: tuple, what: str) -> None:
    if not masks:
        raise ConfigError(f"{what} needs at least one mask")
    shapes = {tuple(m.shape) for m in masks}
    if len(shapes) != 1:
        raise ConfigError(f"{what}: masks must have one shape, got {sorted(shapes)}")


def keep_either(*masks: torch.Tensor) -> torch.Tensor:
    """Keep where any mask keeps: the elementwise minimum (VampNet's ``mask_and``)."""
    _same_shape(masks, "keep_either")
    return functools.reduce(torch.minimum, masks[1:], masks[0].clone())


def keep_both(*masks: torch.Tensor) -> torch.Tensor:
    """Keep only where every mask keeps: the elementwise maximum (VampNet's ``mask_or``)."""
    _same_shape(masks, "keep_both")
    return functools.reduce(torch.maximum, masks[1:], masks[0].clone())


# --------------------------------------------------------------- build_mask
def build_mask(codes: torch.Tensor, signal=None, *, sample_rate: int, hop_length: int,
               rand_mask_intensity: float = 1.0, prefix_s: float = 0.0, suffix_s: float = 0.0,
               periodic_prompt: int = 7, periodic_prompt_width: int = 1, onset_mask_width: int = 0,
               _dropout: float = 0.0, upper_codebook_mask: int = 3, ncc: int = 0) -> torch.Tensor:
    """Build a generation mask for ``codes`` (1 = generate, 0 = keep), as VampNet's build_mask.

    The steps, in VampNet's order (randomness from torch's global RNG)::

        mask = generate_random(codes, rand_mask_intensity)
        mask = keep_either(mask, keep_prefix(codes, n_prefix), keep_suffix(codes, n_suffix))
        mask = keep_either(mask, keep_periodic(codes, P, width, random_offset(P)))
        mask = keep_either(mask, keep_onsets(codes, onset_frames(signal, hop), width))  # width > 0
        mask = dropout(mask, _dropout)
        mask = keep_either(mask, keep_codebooks(codes, 0, ncc))
        mask = keep_both(mask, keep_codebooks(codes, 0, upper_codebook_mask))

    Parameters
    ----------
    codes : torch.LongTensor
        ``(batch, n_codebooks, n_steps)``.
    signal : AudioSignal, optional
        Needed only for the onset prompt (``onset_mask_width > 0``).
    sample_rate, hop_length : int
        Codec timing, for the seconds-to-steps conversion.
    rand_mask_intensity : float
        Probability that a position starts masked (1.0: all).
    prefix_s, suffix_s : float
        Seconds at the start / end kept as prompt.
    periodic_prompt : int
        Keep every ``P``-th step on all codebooks, then roll the mask by a
        random offset in ``[0, P)``; 0 disables.
    periodic_prompt_width : int
        Width in steps of each periodic prompt.
    onset_mask_width : int
        Keep steps within ``width`` of each detected onset; 0 disables.
    _dropout : float
        Fraction of ``n_steps``: that many steps (drawn with replacement) are
        set to masked on every codebook.
    upper_codebook_mask : int
        Codebooks at index ``>= upper_codebook_mask`` are fully masked.
    ncc : int
        Codebooks below ``ncc`` are fully kept.

    Returns
    -------
    torch.LongTensor
        Same shape and device as ``codes``.

    Examples
    --------
    >>> z = torch.zeros(1, 14, 100, dtype=torch.long)
    >>> m = build_mask(z, sample_rate=44100, hop_length=768, periodic_prompt=4)
    >>> float(m[:, :3].float().mean())
    0.75
    """
    if codes.ndim != 3:
        raise ConfigError(f"codes must be (batch, n_codebooks, n_steps), got shape {tuple(codes.shape)}")
    if not 0.0 <= rand_mask_intensity <= 1.0:
        raise ConfigError(f"rand_mask_intensity must be in [0, 1], got {rand_mask_intensity}")
    if not 0.0 <= _dropout <= 1.0:
        raise ConfigError(f"_dropout must be in [0, 1], got {_dropout}")
    if periodic_prompt < 0 or periodic_prompt_width < 1:
        raise ConfigError("periodic_prompt must be >= 0 and periodic_prompt_width >= 1, "
                          f"got {periodic_prompt} and {periodic_prompt_width}")
    if upper_codebook_mask < 0:
        raise ConfigError(f"upper_codebook_mask must be >= 0, got {upper_codebook_mask}")
    cpu = codes.new_zeros(codes.shape, device="cpu")   # shape only: build on the CPU, move once
    mask = generate_random(cpu, rand_mask_intensity)
    if prefix_s > 0 or suffix_s > 0:
        mask = keep_either(mask, keep_prefix(cpu, _seconds(prefix_s, sample_rate, hop_length)),
                           keep_suffix(cpu, _seconds(suffix_s, sample_rate, hop_length)))
    if periodic_prompt > 0:
        offset = random_offset(periodic_prompt)
        mask = keep_either(mask, keep_periodic(cpu, periodic_prompt, periodic_prompt_width, offset))
    if onset_mask_width > 0:
        if signal is None:
            raise ConfigError("onset_mask_width > 0 needs the signal passed to build_mask")
        mask = keep_either(mask, keep_onsets(cpu, onset_frames(signal, hop_length), onset_mask_width))
    mask = dropout(mask, _dropout)
    if ncc > 0:
        mask = keep_either(mask, keep_codebooks(cpu, 0, ncc))
    mask = keep_both(mask, keep_codebooks(cpu, 0, upper_codebook_mask))
    return mask.to(codes.device)


def _seconds(seconds: float, sample_rate: int, hop_length: int) -> int:
    return seconds_to_tokens(seconds, sample_rate, hop_length) if seconds > 0 else 0


# -------------------------------------------------------------------- check
MASK_CONTRACT = ("a torch.long tensor of 0 (keep) and 1 (generate) shaped like the codes "
                 "{shape} on {device}")


def check_mask(mask, codes: torch.Tensor, where: str = "mask") -> torch.Tensor:
    """Return ``mask`` if it is a mask for ``codes``, else raise :class:`~vampstudy.errors.MaskError`.

    A mask for ``codes`` is a ``torch.long`` tensor of ``codes``' shape, on
    ``codes``' device, holding only 0 (keep) and 1 (generate). The checks run
    in that order (type, shape, dtype, device, values) and the first failure is
    one line: ``where``, what came, what was expected and how to fix it.
    """
    problem = _mask_problem(mask, codes)
    if problem is None:
        return mask
    got, fix = problem
    expected = MASK_CONTRACT.format(shape=tuple(codes.shape), device=codes.device)
    raise MaskError(f"{where} returned {got}; expected {expected}; {fix}")


def _mask_problem(mask, codes: torch.Tensor) -> tuple[str, str] | None:
    if not isinstance(mask, torch.Tensor):
        return (f"a {type(mask).__name__}, not a torch.Tensor",
                "return a torch tensor, e.g. one built with vampstudy.masks")
    if tuple(mask.shape) != tuple(codes.shape):
        return (f"a mask of shape {tuple(mask.shape)}",
                "build it from the trial's codes, e.g. keep_nothing(trial.clip.codes)")
    if mask.dtype != torch.long:
        return f"a mask of dtype {mask.dtype}", "convert it with .long()"
    if mask.device != codes.device:
        return (f"a mask on device {mask.device}",
                "create it on trial.clip.codes.device or move it with .to(trial.clip.codes.device)")
    bad = mask[(mask != 0) & (mask != 1)]
    if bad.numel():
        values = sorted(int(v) for v in bad.unique()[:5].cpu())
        return (f"a mask holding {values}",
                "use 1 for positions to generate and 0 for positions to keep")
    return None
