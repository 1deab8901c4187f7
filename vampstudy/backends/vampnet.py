"""Adapter over ``vampnet.interface.Interface`` (the real VampNet).

vampnet is imported lazily, inside :class:`VampNetBackend`, so vampstudy works
without it. Every call goes to VampNet's own code — masks are built by
VampNet's ``build_mask`` and every option name is passed through unchanged —
so a study measures VampNet's behaviour, not a re-implementation of it.

Installing vampnet beside vampstudy (it is not on PyPI)::

    git clone https://github.com/hugofloresgarcia/vampnet
    pip install -e ./vampnet --no-deps
    pip install argbind loralib huggingface_hub tqdm einops \\
        git+https://github.com/hugofloresgarcia/lac \\
        git+https://github.com/hugofloresgarcia/wavebeat \\
        git+https://github.com/hugofloresgarcia/audiotools

(editable: vampnet's ``__init__`` reads a file that only a source checkout
has). ``Interface.default()`` downloads the weights from the Hugging Face
repository ``hugggof/vampnet``; pass local checkpoints to work offline.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from typing import Any

import torch

from ..errors import BackendUnavailable, ConfigError
from .base import MASK_OPTIONS, SAMPLING_OPTIONS, Backend, resolve_device
from .trace import (SamplingTrace, SamplingTraceUnavailable, TracedCall, TraceSegment,
                    cosine_schedule)

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "vampnet is not installed. It is not on PyPI: clone "
    "https://github.com/hugofloresgarcia/vampnet and run `pip install -e ./vampnet --no-deps` "
    "plus its git dependencies (lac, wavebeat, audiotools fork) — see README.md, "
    "'Using real VampNet'. Or run with --backend reference.")


def import_interface():
    """Import and return ``vampnet.interface.Interface``, or raise with an install hint."""
    try:
        from vampnet.interface import Interface
    except FileNotFoundError as exc:  # non-editable install lacks DEFAULT_HF_MODEL_REPO
        raise BackendUnavailable(
            f"vampnet is installed but cannot start ({exc}); install it editable from a "
            "clone: `pip install -e ./vampnet --no-deps`") from exc
    except ImportError as exc:
        if getattr(exc, "name", "") and not str(exc.name).startswith("vampnet"):
            raise BackendUnavailable(
                f"vampnet is installed but one of its dependencies is missing: {exc.name}. "
                "Install vampnet's dependencies (README.md, 'Using real VampNet').") from exc
        raise BackendUnavailable(INSTALL_HINT) from exc
    return Interface


def vampnet_available() -> bool:
    """True when ``vampnet`` can be imported here."""
    import importlib.util

    return importlib.util.find_spec("vampnet") is not None


def _plain(value: Any) -> Any:
    """numpy scalars (VampNet's hop_length is a numpy int64) → Python numbers."""
    return value.item() if hasattr(value, "item") else value


class VampNetBackend(Backend):
    """VampNet behind the vampstudy seam.

    Parameters
    ----------
    device : str
        ``auto`` (cuda when available), ``cpu`` or ``cuda``.
    coarse_ckpt, c2f_ckpt, codec_ckpt : str, optional
        Local checkpoints. Without them ``Interface.default()`` downloads the
        released weights (needs network access).
    coarse_lora_ckpt, c2f_lora_ckpt : str, optional
        LoRA fine-tunes for the coarse and coarse-to-fine models.
    wavebeat_ckpt : str, optional
        Beat tracker checkpoint; ``None`` disables it (beat masks unavailable).
    compile : bool
        Wrap the models in ``torch.compile`` (VampNet's default is True; off
        here because it slows the first call a lot).
    interface : object, optional
        An already constructed ``Interface`` to wrap (notebooks, tests).
    """

    name = "vampnet"
    description = "VampNet (vampnet.interface.Interface)"
    is_vampnet = True
    _trace: SamplingTrace | None = None

    def __init__(self, device: str = "auto", coarse_ckpt: str | None = None,
                 c2f_ckpt: str | None = None, codec_ckpt: str | None = None,
                 coarse_lora_ckpt: str | None = None, c2f_lora_ckpt: str | None = None,
                 wavebeat_ckpt: str | None = None, compile: bool = False, interface=None):
        self.device = resolve_device(device)
        self._options = {"coarse_ckpt": coarse_ckpt, "c2f_ckpt": c2f_ckpt,
                         "codec_ckpt": codec_ckpt, "coarse_lora_ckpt": coarse_lora_ckpt,
                         "c2f_lora_ckpt": c2f_lora_ckpt, "wavebeat_ckpt": wavebeat_ckpt,
                         "compile": compile}
        if interface is None:
            Interface = import_interface()
            if coarse_ckpt or c2f_ckpt or codec_ckpt:
                if not (coarse_ckpt and codec_ckpt):
                    raise ConfigError("local VampNet checkpoints need at least --coarse-ckpt and "
                                      "--codec-ckpt (and usually --c2f-ckpt)")
                interface = Interface(coarse_ckpt=coarse_ckpt, coarse_lora_ckpt=coarse_lora_ckpt,
                                      coarse2fine_ckpt=c2f_ckpt,
                                      coarse2fine_lora_ckpt=c2f_lora_ckpt,
                                      codec_ckpt=codec_ckpt, wavebeat_ckpt=wavebeat_ckpt,
                                      device=self.device, compile=compile)
            else:
                logger.info("loading VampNet with Interface.default() (downloads weights)")
                try:
                    interface = Interface.default()
                except OSError as exc:
                    raise BackendUnavailable(
                        f"Interface.default() failed ({type(exc).__name__}: {exc}). It downloads "
                        "the weights from the Hugging Face repo hugggof/vampnet and loads the beat "
                        "tracker from ./models/vampnet/wavebeat.pth relative to the current "
                        "folder: run from your vampnet checkout, or pass local checkpoints with "
                        "--coarse-ckpt/--c2f-ckpt/--codec-ckpt") from exc
        self.interface = interface.to(self.device)
        codec = self.interface.codec
        self.sample_rate = int(_plain(codec.sample_rate))
        self.hop_length = int(_plain(codec.hop_length))
        self.n_codebooks = int(_plain(codec.n_codebooks))
        self.codebook_size = int(_plain(codec.codebook_size))

    def options(self) -> dict:
        return {k: v for k, v in self._options.items() if v not in (None, False)}

    def preprocess(self, signal):
        return self.interface._preprocess(signal)

    def encode(self, signal) -> torch.Tensor:
        # VampNet returns an inference-mode tensor; clone so callers may edit it.
        return self.interface.encode(signal).clone()

    def codec_latents(self, signal) -> torch.Tensor:
        """The LAC codec's continuous latent ``z`` of ``signal``, ``(1, dim, n_steps)``.

        ``interface.codec.encode(samples, sample_rate)`` returns a dict whose ``"codes"``
        VampNet's ``Interface.encode`` keeps; ``"z"`` is the quantised continuous latent
        (the sum of the codebooks' projected codewords), as fadtk's DAC embedding uses.
        Not listed in shared/VAMPNET.md: read off LAC's use elsewhere, not run here.
        """
        sig = self.preprocess(signal).to(self.device)
        with torch.inference_mode():
            out = self.interface.codec.encode(sig.samples, sig.sample_rate)
        return out["z"].clone()

    def decode(self, codes: torch.Tensor):
        return self.interface.decode(codes.to(self.device))

    def build_mask(self, codes: torch.Tensor, signal=None, **mask_options) -> torch.Tensor:
        unknown = sorted(set(mask_options) - set(MASK_OPTIONS))
        if unknown:
            raise TypeError(f"build_mask() got unexpected keyword(s) {unknown}; "
                            f"valid: {', '.join(MASK_OPTIONS)}")
        return self.interface.build_mask(codes.to(self.device), signal, **mask_options).clone()

    def vamp(self, codes: torch.Tensor, mask: torch.Tensor, **sampling_options):
        unknown = sorted(set(sampling_options) - set(SAMPLING_OPTIONS))
        if unknown:
            raise TypeError(f"vamp() got unexpected keyword(s) {unknown}; "
                            f"valid: {', '.join(SAMPLING_OPTIONS)}")
        if self._trace is not None:
            result = self._traced_vamp(codes, mask, sampling_options)
        else:
            result = self.interface.vamp(codes.to(self.device), mask.to(self.device),
                                         **sampling_options)
        if isinstance(result, tuple):
            return tuple(r.clone() for r in result)
        return result.clone()

    # ---------------------------------------------------------- tracing
    def _models(self) -> list[tuple[str, Any, int]]:
        """(group, model, sampling steps or None) of the models whose inputs can be traced."""
        found = []
        for group, attr in (("coarse", "coarse"), ("fine", "c2f")):
            model = getattr(self.interface, attr, None)
            special = getattr(getattr(model, "embedding", None), "special", None)
            if special is not None and "MASK" in special:
                found.append((group, model))
        return found

    @contextmanager
    def trace_sampling(self):
        """Record VampNet's unmasking schedule by observing the models' per-step inputs.

        VampNet's ``generate`` calls ``self.forward(latents)`` directly, so a
        hook on the model itself never fires; its ``forward`` calls
        ``self.embedding(latents)`` as a module, once per sampling step. A
        forward pre-hook on that ``CodebookEmbedding`` sees the latents of
        the codes being sampled, where a masked position holds the latent of
        the MASK token (``embedding.special["MASK"]``, token id
        ``vocab_size`` = 1024); counting those per batch item gives how many
        positions are still masked at the start of each step. No VampNet code
        is changed; the hooks exist only during a traced ``vamp`` call.

        Segments: group ``"coarse"`` (codebooks 0-3, ``_sampling_steps``
        steps per 10 s chunk, × ``feedback_steps``) and ``"fine"`` (the
        coarse-to-fine model, 2 steps per 3 s chunk). ``final`` is None: the
        mask after the last step stays inside ``generate``.

        Raises
        ------
        SamplingTraceUnavailable
            When the interface's coarse model has no ``embedding.special["MASK"]``.
        """
        if not any(group == "coarse" for group, _ in self._models()):
            raise SamplingTraceUnavailable(
                "this vampnet's coarse model has no embedding.special['MASK'] to observe; "
                "tracing needs vampnet's CodebookEmbedding (main at 72e2675)")
        trace = SamplingTrace()
        previous, self._trace = self._trace, trace
        try:
            yield trace
        finally:
            self._trace = previous

    def sampling_schedule(self, n_masked: int, steps: int, group: str = "coarse") -> list[int]:
        """VampNet's cosine schedule: after step k, ``floor(n · cos(π/2 · k/steps))`` left,
        clamped so that each step before the last fixes at least one and leaves at least one."""
        return cosine_schedule(n_masked, steps, keep_one=True)

    def _traced_vamp(self, codes, mask, options: dict):
        records: dict[str, list[list[int]]] = {}
        handles = []
        batch = int(options.get("batch_size", 1))
        for group, model in self._models():
            records[group] = []
            handles.append(model.embedding.register_forward_pre_hook(
                lambda module, args, rows=records[group]: rows.append(
                    _count_mask_latents(module, args[0])[:batch])))
        try:
            result = self.interface.vamp(codes.to(self.device), mask.to(self.device), **options)
        finally:
            for handle in handles:
                handle.remove()
        n_steps = codes.shape[-1] * int(options.get("time_stretch_factor", 1))
        plan = {"coarse": (int(options.get("_sampling_steps", 12)),
                           int(options.get("feedback_steps", 1))),
                "fine": (2, 1)}
        segments = []
        for group, model in self._models():
            steps, repeats = plan[group]
            chunk = self.interface.s2t(getattr(model, "chunk_size_s", 1e9))
            segments.extend(_split_segments(group, records[group], steps, repeats, chunk, n_steps))
        self._trace.calls.append(TracedCall(batch, {k: v for k, v in options.items()
                                                    if k != "return_mask"}, segments))
        return result


def _count_mask_latents(embedding, latents: torch.Tensor) -> list[int]:
    """Per batch item, how many (codebook, step) positions of ``latents`` hold the MASK latent.

    ``latents`` is ``(batch, n_codebooks * latent_dim, n_steps)`` as built by
    ``CodebookEmbedding.from_codes``, whose lookup copies the MASK row exactly.
    """
    batch, _, n_steps = latents.shape
    n_cb, dim = embedding.n_codebooks, embedding.latent_dim
    lat = latents.detach().reshape(batch, n_cb, dim, n_steps)
    mask_latent = embedding.special["MASK"].detach().to(lat.device, lat.dtype)
    is_mask = (lat == mask_latent[None, :, :, None]).all(dim=2)
    return [int(n) for n in is_mask.sum(dim=(1, 2)).tolist()]


def _split_segments(group, rows, steps, repeats, chunk_len, n_steps) -> list[TraceSegment]:
    """Cut one model's per-step rows into its ``generate`` calls (chunks × repeats).

    VampNet runs ``steps`` forward passes per chunk. When the number of rows
    is not chunks × repeats × steps the rows are kept as one segment, so the
    schedule check sees (and reports) the unexpected number of steps.
    """
    n_chunks = max(1, math.ceil(n_steps / chunk_len))
    if len(rows) != n_chunks * repeats * steps:
        return [TraceSegment(group, 0, n_steps, steps, masked=rows)]
    segments = []
    for r in range(repeats):
        for c in range(n_chunks):
            first = (r * n_chunks + c) * steps
            segments.append(TraceSegment(group, c * chunk_len, min(n_steps, (c + 1) * chunk_len),
                                         steps, masked=rows[first:first + steps]))
    return segments
