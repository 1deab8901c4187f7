"""The model seam: what a study needs from a masked acoustic token model.

The interface is deliberately VampNet-shaped (method names and keywords are
those of ``vampnet.interface.Interface``) so that code written against VampNet
reads the same against any backend.

Conventions shared by every backend:

* codes are ``torch.LongTensor`` of shape ``(batch, n_codebooks, n_steps)``
  with values in ``[0, codebook_size)``, on the backend's device;
* masks have the same shape, **1 = generate, 0 = keep**;
* signals are :class:`audiotools.AudioSignal`.
"""

from __future__ import annotations

import abc
import logging
import math
from contextlib import AbstractContextManager
from typing import Any

import torch

from ..errors import ConfigError
from .trace import SamplingTrace, SamplingTraceUnavailable

logger = logging.getLogger(__name__)

#: Every keyword of VampNet's ``Interface.build_mask`` (besides codes, signal).
MASK_OPTIONS = ("rand_mask_intensity", "prefix_s", "suffix_s", "periodic_prompt",
                "periodic_prompt_width", "onset_mask_width", "_dropout",
                "upper_codebook_mask", "ncc")
#: Every sampling keyword of VampNet's ``Interface.vamp`` and the coarse model's ``generate``.
SAMPLING_OPTIONS = ("temperature", "typical_filtering", "typical_mass", "typical_min_tokens",
                    "top_p", "_sampling_steps", "mask_temperature", "sample_cutoff", "seed",
                    "causal_weight", "cfg_scale", "cfg_guidance",
                    "batch_size", "feedback_steps", "time_stretch_factor", "return_mask")


def resolve_device(device: str | None) -> str:
    """``auto`` (or None) becomes ``cuda`` when available, else ``cpu``."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} was requested but CUDA is not available here; "
                          "use --device cpu or --device auto")
    if not (device == "cpu" or device.startswith("cuda") or device == "mps"):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


class Backend(abc.ABC):
    """A masked acoustic token model behind the VampNet-shaped seam.

    Subclasses set :attr:`name` and :attr:`description`, provide the codec
    timing attributes and implement the five model methods. Third-party
    backends register a factory under the ``vampstudy.backends`` entry-point
    group and are then loadable by name with
    :func:`vampstudy.backends.load_backend`.
    """

    #: Short name used on the command line and in every MLflow run.
    name: str = "abstract"
    #: One line that says what this backend is; shown in banners and runs.
    description: str = ""
    #: True only for the real VampNet model.
    is_vampnet: bool = False

    sample_rate: int
    hop_length: int
    n_codebooks: int
    codebook_size: int
    device: str = "cpu"

    # ----------------------------------------------------------- timing
    @property
    def tokens_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def ms_per_token(self) -> float:
        return 1000.0 * self.hop_length / self.sample_rate

    def s2t(self, seconds: float) -> int:
        """Seconds to token steps, rounding up (VampNet's ``s2t``)."""
        return int(math.ceil(seconds * self.sample_rate / self.hop_length))

    def t2s(self, tokens: int) -> float:
        """Token steps to seconds (VampNet's ``t2s``)."""
        return tokens * self.hop_length / self.sample_rate

    def info(self) -> dict[str, Any]:
        """Plain-Python facts about the backend, logged on every run."""
        return {
            "backend": self.name,
            "backend_description": self.description,
            "device": self.device,
            "sample_rate": int(self.sample_rate),
            "hop_length": int(self.hop_length),
            "n_codebooks": int(self.n_codebooks),
            "codebook_size": int(self.codebook_size),
            "tokens_per_second": round(self.tokens_per_second, 4),
            "ms_per_token": round(self.ms_per_token, 4),
        }

    def options(self) -> dict[str, Any]:
        """The construction options that affect results (logged, hashed for resume)."""
        return {}

    # ------------------------------------------------------------ model
    @abc.abstractmethod
    def preprocess(self, signal):
        """Resample, mix to mono, normalise loudness, limit peaks; return a new AudioSignal."""

    @abc.abstractmethod
    def encode(self, signal) -> torch.Tensor:
        """AudioSignal → codes ``(batch, n_codebooks, n_steps)``."""

    @abc.abstractmethod
    def decode(self, codes: torch.Tensor):
        """Codes → AudioSignal at :attr:`sample_rate`, one batch item per code item."""

    @abc.abstractmethod
    def build_mask(self, codes: torch.Tensor, signal=None, **mask_options) -> torch.Tensor:
        """Build a mask with VampNet's ``build_mask`` keywords (see :data:`MASK_OPTIONS`)."""

    @abc.abstractmethod
    def vamp(self, codes: torch.Tensor, mask: torch.Tensor, **sampling_options) -> torch.Tensor:
        """Regenerate the masked positions; keywords as VampNet's (see :data:`SAMPLING_OPTIONS`)."""

    # ------------------------------------------- optional: codec latents
    def codec_latents(self, signal) -> torch.Tensor:
        """The codec's continuous latents of ``signal``: ``(1, dim, n_steps)`` (optional).

        What the ``codec`` embedding (:mod:`vampstudy.embeddings`) uses. A backend
        without them leaves this default, which raises NotImplementedError.
        """
        raise NotImplementedError(f"backend {self.name!r} does not expose its codec's latents")

    def has_codec_latents(self) -> bool:
        """Whether :meth:`codec_latents` is implemented."""
        return type(self).codec_latents is not Backend.codec_latents

    # ------------------------------------------------- optional: tracing
    def trace_sampling(self) -> AbstractContextManager[SamplingTrace]:
        """Record the sampler's unmasking schedule of every ``vamp`` call in a ``with`` block.

        Optional capability. A backend that has it returns a context manager
        whose target is a :class:`~vampstudy.backends.trace.SamplingTrace`,
        filled as ``vamp`` runs: for each call, each segment (codebook group
        × time chunk) and each sampling step, how many positions of each
        batch item are still masked when the step starts. Tracing must not
        change what ``vamp`` returns.

        This default has no tracing: it raises
        :class:`~vampstudy.backends.trace.SamplingTraceUnavailable` when
        called, before the block runs (``vampstudy check`` then reports the
        schedule checks as WARN, "not available").

        Examples
        --------
        >>> with backend.trace_sampling() as trace:            # doctest: +SKIP
        ...     backend.vamp(codes, mask, seed=0)
        >>> trace.calls[0].segments[0].item(0)                  # doctest: +SKIP
        [2025, 1973, ..., 0]
        """
        raise SamplingTraceUnavailable(
            f"backend {self.name!r} ({type(self).__name__}) cannot trace its sampling schedule")

    def sampling_schedule(self, n_masked: int, steps: int, group: str = "all") -> list[int] | None:
        """The documented unmasking schedule of one item, or None if the backend documents none.

        Parameters
        ----------
        n_masked : int
            Positions of the item masked when a segment's sampling starts.
        steps : int
            Sampling steps of that segment.
        group : str
            The segment's codebook group (see :class:`~vampstudy.backends.trace.TraceSegment`).

        Returns
        -------
        list of int or None
            Positions still masked after each step (the last is 0).
        """
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} on {self.device}>"
