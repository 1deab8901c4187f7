"""Test backends that ship with the package, so that worker processes can load them.

**Nothing here is VampNet or a model.** These backends exist to test and benchmark the
machinery around a model — executors, workers, tracking — and say so in their name and
description (every run they make carries the note "not VampNet").

:class:`SleepyBackend` (``sleepy-test``) stands in for a GPU model whose calls take a
fixed time: each :meth:`~SleepyBackend.vamp` call sleeps ``delay`` seconds and then
fills the masked positions with seeded random tokens; encoding and decoding are cheap
deterministic transforms with VampNet's timing (44.1 kHz, hop 768, 14 codebooks of 1024).
So a study on it is latency-bound, not CPU-bound: the right load for measuring how an
executor scales with workers on a machine with few cores. Load it by ``module:Class``::

    vampstudy run periodic --backend vampstudy.testing:SleepyBackend --executor ray --workers 4

or ``load_backend("vampstudy.testing:SleepyBackend", delay=0.5)``.

:class:`InstantBackend` (``instant-test``) is the same with no sleep: a near-free
"model", so that what a benchmark sees is the machinery's own cost (memory, start-up).

When the environment variable :data:`FIRST_VAMP_ENV` names a file, the first ``vamp``
call of a process writes its wall-clock time (``time.time()``) there: a benchmark
measures "process start to first model call" with it, the same way for the study and
for the bare loop.
"""

from __future__ import annotations

import math
import os
import time

import torch

from .backends.base import MASK_OPTIONS, Backend, resolve_device
from .errors import ConfigError

__all__ = ["SleepyBackend", "InstantBackend", "FIRST_VAMP_ENV"]

#: Names a file that receives the wall-clock time of this process' first ``vamp`` call.
FIRST_VAMP_ENV = "VAMPSTUDY_TEST_FIRST_VAMP_FILE"
_first_vamp_written = False


def _note_first_vamp() -> None:
    """Write ``time.time()`` to the file named by :data:`FIRST_VAMP_ENV` (first call only)."""
    global _first_vamp_written
    path = os.environ.get(FIRST_VAMP_ENV)
    if path and not _first_vamp_written:
        _first_vamp_written = True
        with open(path, "w") as f:
            f.write(repr(time.time()))


class SleepyBackend(Backend):
    """A latency-bound test backend: ``vamp`` sleeps ``delay`` s, tokens are random (NOT VampNet).

    Parameters
    ----------
    device : str
        ``auto``, ``cpu`` or ``cuda``: where returned tensors live (it computes nothing there).
    delay : float
        Seconds each ``vamp`` call sleeps, standing in for a model call.

    Examples
    --------
    >>> from vampstudy.backends import load_backend
    >>> b = load_backend("vampstudy.testing:SleepyBackend", device="cpu", delay=0.0)
    >>> b.name, b.is_vampnet
    ('sleepy-test', False)
    """

    name = "sleepy-test"
    description = ("vampstudy test backend: fixed sleep per vamp standing in for a GPU call, "
                   "random tokens at masked positions; NOT VampNet, not a model")

    sample_rate = 44100
    hop_length = 768
    n_codebooks = 14
    codebook_size = 1024

    def __init__(self, device: str = "auto", delay: float = 0.5):
        if delay < 0:
            raise ConfigError(f"sleepy-test backend: delay must be >= 0, got {delay}")
        self.device = resolve_device(device)
        self.delay = float(delay)

    def options(self) -> dict:
        return {"delay": self.delay}

    # ------------------------------------------------------------ codec
    def preprocess(self, signal):
        """Resample to 44.1 kHz, mono, peaks ≤ 1, pad to a multiple of the hop."""
        sig = signal.clone().to("cpu").resample(self.sample_rate).to_mono()
        sig = sig.ensure_max_of_audio(1.0)
        pad = (-sig.signal_length) % self.hop_length
        return sig.zero_pad(0, pad) if pad else sig

    def encode(self, signal) -> torch.Tensor:
        """Per hop-sized frame, codebook ``k``'s token is a hash of the frame's level and k."""
        audio = self.preprocess(signal).audio_data[:, 0]            # (batch, samples)
        frames = audio.reshape(audio.shape[0], -1, self.hop_length)
        level = (frames.pow(2).mean(-1).add(1e-10).log10() * 20).round().long()  # dB, (b, T)
        k = torch.arange(self.n_codebooks)[None, :, None]
        codes = (level[:, None, :] * 7919 + k * 104729).remainder(self.codebook_size)
        return codes.long().to(self.device)

    def decode(self, codes: torch.Tensor):
        """A sine per frame whose pitch follows codebook 0's token (cheap, deterministic)."""
        from audiotools import AudioSignal

        tokens = codes[:, 0].cpu().double()                         # (batch, T)
        freq = (110.0 + tokens).repeat_interleave(self.hop_length, dim=-1)
        phase = torch.cumsum(2 * math.pi * freq / self.sample_rate, dim=-1)
        return AudioSignal((0.1 * torch.sin(phase)).float()[:, None, :], self.sample_rate)

    # ------------------------------------------------------------- model
    def build_mask(self, codes: torch.Tensor, signal=None, **mask_options) -> torch.Tensor:
        from .masks import build_mask

        unknown = sorted(set(mask_options) - set(MASK_OPTIONS))
        if unknown:
            raise TypeError(f"build_mask() got unexpected keyword(s) {unknown}; "
                            f"valid: {', '.join(MASK_OPTIONS)}")
        return build_mask(codes, signal, sample_rate=self.sample_rate,
                          hop_length=self.hop_length, **mask_options)

    def vamp(self, codes: torch.Tensor, mask: torch.Tensor, seed: int | None = None,
             batch_size: int = 1, return_mask: bool = False, **sampling_options):
        """Sleep ``delay`` s, then replace masked positions with seeded random tokens."""
        _note_first_vamp()
        if self.delay:
            time.sleep(self.delay)
        if seed is None:
            seed = int(torch.randint(0, 2 ** 31 - 1, (1,)).item())
        gen = torch.Generator().manual_seed(int(seed))
        codes_cpu = codes.cpu().expand(batch_size, -1, -1)
        mask_cpu = mask.cpu().expand(batch_size, -1, -1).bool()
        noise = torch.randint(0, self.codebook_size, codes_cpu.shape, generator=gen)
        out = torch.where(mask_cpu, noise, codes_cpu).to(codes.device)
        return (out, mask_cpu.long().to(codes.device)) if return_mask else out


class InstantBackend(SleepyBackend):
    """:class:`SleepyBackend` without the sleep: a near-free test backend (NOT VampNet, not a model).

    For benchmarks of the machinery around the model (memory per trial, start-up).
    """

    name = "instant-test"
    description = ("vampstudy test backend: no model work at all, random tokens at masked "
                   "positions; NOT VampNet, not a model")

    def __init__(self, device: str = "auto", delay: float = 0.0):
        super().__init__(device=device, delay=delay)
