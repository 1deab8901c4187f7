"""Mask construction with VampNet's ``build_mask`` semantics.

Convention (VampNet's): a mask is a LongTensor shaped like the codes,
``(batch, n_codebooks, n_steps)``, where **1 means "masked: generate"** and
**0 means "kept: prompt"**.

:func:`build_mask` reproduces the steps of ``vampnet.interface.Interface.build_mask``
as documented in ``shared/VAMPNET.md`` (random mask, inpainting prefix/suffix,
rolled periodic prompt, onset prompt, time dropout, conditioning codebooks,
upper codebook mask). Randomness comes from torch's global RNG, as in VampNet,
so ``torch.manual_seed`` makes it reproducible. The reference backend uses it;
the VampNet adapter calls VampNet's own implementation instead.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .errors import ConfigError


def seconds_to_tokens(seconds: float, sample_rate: int, hop_length: int) -> int:
    """``ceil(seconds * sample_rate / hop_length)``, VampNet's ``s2t``."""
    return int(math.ceil(seconds * sample_rate / hop_length))


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


def onset_frames(signal, hop_length: int) -> np.ndarray:
    """Onset positions in token steps, detected with librosa (backtracked)."""
    import librosa

    audio = signal.audio_data[0].mean(0).detach().cpu().numpy()
    return librosa.onset.onset_detect(y=audio, sr=int(signal.sample_rate),
                                      hop_length=hop_length, backtrack=True)


def build_mask(codes: torch.Tensor, signal=None, *, sample_rate: int, hop_length: int,
               rand_mask_intensity: float = 1.0, prefix_s: float = 0.0, suffix_s: float = 0.0,
               periodic_prompt: int = 7, periodic_prompt_width: int = 1, onset_mask_width: int = 0,
               _dropout: float = 0.0, upper_codebook_mask: int = 3, ncc: int = 0) -> torch.Tensor:
    """Build a generation mask for ``codes`` (1 = generate, 0 = keep).

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
    batch, n_codebooks, n_steps = codes.shape
    device = codes.device

    if rand_mask_intensity >= 1.0:
        mask = torch.ones(codes.shape, dtype=torch.long)
    else:
        mask = torch.bernoulli(torch.full(codes.shape, float(rand_mask_intensity))).long()

    n_prefix = seconds_to_tokens(prefix_s, sample_rate, hop_length) if prefix_s > 0 else 0
    n_suffix = seconds_to_tokens(suffix_s, sample_rate, hop_length) if suffix_s > 0 else 0
    if n_prefix:
        mask[..., :n_prefix] = 0
    if n_suffix:
        mask[..., max(0, n_steps - n_suffix):] = 0

    if periodic_prompt > 0:
        periodic = periodic_prompt_mask(n_steps, periodic_prompt, periodic_prompt_width)
        offset = int(torch.randint(0, periodic_prompt, (1,)).item())
        periodic = torch.roll(periodic, offset, dims=-1)
        mask = torch.minimum(mask, periodic[None, None, :])

    if onset_mask_width > 0:
        if signal is None:
            raise ConfigError("onset_mask_width > 0 needs the signal passed to build_mask")
        onset = torch.ones(n_steps, dtype=torch.long)
        for idx in onset_frames(signal, hop_length):
            onset[max(0, int(idx) - onset_mask_width): int(idx) + onset_mask_width] = 0
        mask = torch.minimum(mask, onset[None, None, :])

    n_drop = int(n_steps * _dropout)
    if n_drop > 0:
        steps = torch.randint(0, n_steps, (n_drop,))
        mask[..., steps] = 1

    if ncc > 0:
        mask[:, :ncc, :] = 0
    mask[:, upper_codebook_mask:, :] = 1
    return mask.to(device)
