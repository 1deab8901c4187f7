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
from typing import Any

import torch

from ..errors import BackendUnavailable, ConfigError
from .base import MASK_OPTIONS, SAMPLING_OPTIONS, Backend, resolve_device

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
        result = self.interface.vamp(codes.to(self.device), mask.to(self.device),
                                     **sampling_options)
        if isinstance(result, tuple):
            return tuple(r.clone() for r in result)
        return result.clone()
