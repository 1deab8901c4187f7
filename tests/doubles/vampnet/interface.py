"""A test double of ``vampnet.interface.Interface``, faithful to shared/VAMPNET.md.

It reproduces the contract the adapter depends on — attribute names and types
(``codec.hop_length`` is a numpy int64), shapes, dtypes, devices, inference-mode
tensors, the exact keyword signatures of build_mask / vamp / generate, batch
expansion rules and the ``return_mask`` tuple — and records every call. The
"model" itself is trivial: masked positions get random tokens.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from audiotools import AudioSignal

CALLS: list[tuple[str, dict]] = []

GENERATE_KWARGS = {"_sampling_steps": 12, "temperature": 1.0, "mask_temperature": 10.5,
                   "typical_filtering": True, "typical_mass": 0.15, "typical_min_tokens": 64,
                   "top_p": None, "seed": None, "sample_cutoff": 1.0, "causal_weight": 0.0,
                   "cfg_scale": 3.0, "cfg_guidance": None}
MASK_TOKEN = 1024


class _Codec:
    sample_rate = 44100
    hop_length = np.int64(768)
    n_codebooks = 14
    codebook_size = 1024


class _Model:
    def __init__(self, n_codebooks, n_conditioning_codebooks=0):
        self.n_codebooks = n_codebooks
        self.n_conditioning_codebooks = n_conditioning_codebooks
        self.mask_token = MASK_TOKEN


class Interface:
    def __init__(self, coarse_ckpt=None, coarse_lora_ckpt=None, coarse2fine_ckpt=None,
                 coarse2fine_lora_ckpt=None, codec_ckpt=None,
                 wavebeat_ckpt="./models/vampnet/wavebeat.pth", device="cpu",
                 coarse_chunk_size_s=10, coarse2fine_chunk_size_s=3, compile=True):
        CALLS.append(("__init__", dict(coarse_ckpt=coarse_ckpt, coarse_lora_ckpt=coarse_lora_ckpt,
                                       coarse2fine_ckpt=coarse2fine_ckpt,
                                       coarse2fine_lora_ckpt=coarse2fine_lora_ckpt,
                                       codec_ckpt=codec_ckpt, wavebeat_ckpt=wavebeat_ckpt,
                                       device=device, compile=compile)))
        self.codec = _Codec()
        self.coarse = _Model(4)
        self.c2f = _Model(14, 4)
        self.device = device

    @classmethod
    def default(cls):
        CALLS.append(("default", {}))
        return cls(coarse_ckpt="coarse.pth", coarse2fine_ckpt="c2f.pth", codec_ckpt="codec.pth")

    def to(self, device):
        CALLS.append(("to", {"device": device}))
        self.device = device
        return self

    def s2t(self, seconds):
        return math.ceil(seconds * self.codec.sample_rate / self.codec.hop_length)

    def t2s(self, tokens):
        return tokens * self.codec.hop_length / self.codec.sample_rate

    def _preprocess(self, signal):
        CALLS.append(("_preprocess", {}))
        sig = signal.clone().resample(self.codec.sample_rate).to_mono()
        sig = sig.normalize(-24.0).ensure_max_of_audio(1.0)
        pad = int((-sig.signal_length) % int(self.codec.hop_length))
        return sig.zero_pad(0, pad) if pad else sig

    @torch.inference_mode()
    def encode(self, signal):
        CALLS.append(("encode", {}))
        sig = self._preprocess(signal.to(self.device))
        n_steps = sig.signal_length // int(self.codec.hop_length)
        gen = torch.Generator().manual_seed(0)
        codes = torch.randint(0, 1024, (sig.batch_size, 14, n_steps), generator=gen)
        return codes.to(self.device)

    def decode(self, z):
        CALLS.append(("decode", {"shape": tuple(z.shape)}))
        n = z.shape[-1] * int(self.codec.hop_length)
        return AudioSignal(torch.zeros(z.shape[0], 1, n), self.codec.sample_rate)

    def build_mask(self, z, sig=None, rand_mask_intensity=1.0, prefix_s=0.0, suffix_s=0.0,
                   periodic_prompt=7, periodic_prompt_width=1, onset_mask_width=0, _dropout=0.0,
                   upper_codebook_mask=3, ncc=0):
        CALLS.append(("build_mask", dict(rand_mask_intensity=rand_mask_intensity,
                                         prefix_s=prefix_s, suffix_s=suffix_s,
                                         periodic_prompt=periodic_prompt,
                                         periodic_prompt_width=periodic_prompt_width,
                                         onset_mask_width=onset_mask_width, _dropout=_dropout,
                                         upper_codebook_mask=upper_codebook_mask, ncc=ncc)))
        mask = torch.ones_like(z)
        if periodic_prompt:
            mask[..., ::periodic_prompt] = 0
            mask = torch.roll(mask, int(torch.randint(0, periodic_prompt, (1,))), -1)
        mask[:, upper_codebook_mask:, :] = 1
        return mask.long().to(z.device)

    @torch.inference_mode()
    def vamp(self, codes, mask, batch_size=1, feedback_steps=1, time_stretch_factor=1,
             return_mask=False, **kwargs):
        unknown = set(kwargs) - set(GENERATE_KWARGS)
        if unknown:
            raise TypeError(f"generate() got an unexpected keyword argument {sorted(unknown)[0]!r}")
        CALLS.append(("vamp", dict(batch_size=batch_size, feedback_steps=feedback_steps,
                                   time_stretch_factor=time_stretch_factor,
                                   return_mask=return_mask, **kwargs)))
        assert codes.device.type == torch.device(self.device).type
        if mask.shape[0] not in (1, batch_size):
            raise RuntimeError("mask batch does not match batch_size")
        codes = codes.expand(batch_size, -1, -1)
        mask = mask.expand(batch_size, -1, -1)
        if kwargs.get("seed") is not None:
            torch.manual_seed(kwargs["seed"])
        noise = torch.randint(0, 1024, codes.shape, device=codes.device)
        out = torch.where(mask.bool(), noise, codes)
        if return_mask:
            return out, mask.cpu()
        return out
