"""A test double of ``vampnet.interface.Interface``, faithful to shared/VAMPNET.md.

It reproduces the contract the adapter depends on — attribute names and types
(``codec.hop_length`` is a numpy int64), shapes, dtypes, devices, inference-mode
tensors, the exact keyword signatures of build_mask / vamp / generate, batch
expansion rules and the ``return_mask`` tuple — and records every call.

The "model" is trivial (random logits), but the **sampling loop is VampNet's**
(``VampNet.generate`` in ``vampnet/modules/transformer.py`` at 72e2675), written
afresh here with the same structure and arithmetic:

* ``Interface.vamp`` runs the coarse model over codebooks 0-3 in 10 s chunks
  (a chunk whose mask keeps anything gets its first and last step kept), then
  the coarse-to-fine model over 3 s chunks with 2 steps;
* ``generate`` fills masked positions with the mask token (1024, the first id
  after the 1024 codewords), then at each step embeds the codes with
  ``embedding.from_codes``, calls ``self.forward(latents)`` directly (so
  forward hooks on the model itself never fire; ``forward`` calls
  ``self.embedding(latents)``, a module call), samples every position and
  re-masks the least confident ones by the cosine schedule;
* **the fault**: the number of masked tokens at the start is summed over the
  whole batch, so each item's per-step target is computed from the batch's
  total and then clamped to "all but one" of its own masked tokens. Set
  ``PER_ITEM_MASK_COUNT = True`` (or the environment variable
  ``VAMPNET_DOUBLE_PER_ITEM_COUNT=1``) for a corrected double that counts per
  item.

``typical_filtering`` has no effect, as in VampNet's sampler.
"""

from __future__ import annotations

import math
import os
import random

import numpy as np
import torch
from audiotools import AudioSignal

CALLS: list[tuple[str, dict]] = []

GENERATE_KWARGS = {"_sampling_steps": 12, "temperature": 1.0, "mask_temperature": 10.5,
                   "typical_filtering": True, "typical_mass": 0.15, "typical_min_tokens": 64,
                   "top_p": None, "seed": None, "sample_cutoff": 1.0, "causal_weight": 0.0,
                   "cfg_scale": 3.0, "cfg_guidance": None}
VOCAB = 1024
MASK_TOKEN = VOCAB          # special_idxs["MASK"] = vocab_size + 0
LATENT_DIM = 8
#: False reproduces VampNet (batch-summed count); True is the corrected sampler.
PER_ITEM_MASK_COUNT = False


def _per_item_count() -> bool:
    return PER_ITEM_MASK_COUNT or os.environ.get("VAMPNET_DOUBLE_PER_ITEM_COUNT") == "1"


def _cosine(r: torch.Tensor) -> torch.Tensor:
    """VampNet's ``_gamma``: cos(r·π/2) clamped to [1e-10, 1] (float32)."""
    return (r * torch.pi / 2).cos().clamp(1e-10, 1.0)


class _Codebook:
    def __init__(self, seed):
        gen = torch.Generator().manual_seed(seed)
        self.codebook = torch.nn.Embedding(VOCAB, LATENT_DIM)
        with torch.no_grad():
            self.codebook.weight.copy_(torch.randn(VOCAB, LATENT_DIM, generator=gen))


class _Quantizer:
    def __init__(self, n):
        self.quantizers = [_Codebook(i) for i in range(n)]


class _Codec:
    sample_rate = 44100
    hop_length = np.int64(768)
    n_codebooks = 14
    codebook_size = 1024

    def __init__(self):
        self.quantizer = _Quantizer(self.n_codebooks)

    @torch.inference_mode()
    def encode(self, audio_data, sample_rate=None, n_quantizers=None):
        """LAC's encode: a dict with ``z`` (B, D, T) continuous latents and ``codes`` (B, 14, T)."""
        CALLS.append(("codec.encode", {"sample_rate": sample_rate}))
        hop = int(self.hop_length)
        frames = audio_data.reshape(audio_data.shape[0], -1)
        frames = frames[:, : frames.shape[-1] // hop * hop].reshape(frames.shape[0], -1, hop)
        z = torch.stack([frames.pow(2).mean(-1), frames.abs().amax(-1)], dim=1)   # (B, 2, T)
        codes = torch.zeros(z.shape[0], self.n_codebooks, z.shape[-1], dtype=torch.long)
        return {"z": z, "codes": codes, "latents": z}


class _CodebookEmbedding(torch.nn.Module):
    """Codes → latents (codec codewords, plus a learned latent for MASK) → embeddings."""

    def __init__(self, n_codebooks, emb_dim=16):
        super().__init__()
        self.n_codebooks = n_codebooks
        self.latent_dim = LATENT_DIM
        self.vocab_size = VOCAB
        gen = torch.Generator().manual_seed(1000 + n_codebooks)
        self.special = torch.nn.ParameterDict(
            {"MASK": torch.nn.Parameter(torch.randn(n_codebooks, LATENT_DIM, generator=gen))})
        self.special_idxs = {"MASK": VOCAB}
        self.out_proj = torch.nn.Conv1d(n_codebooks * LATENT_DIM, emb_dim, 1)

    def from_codes(self, codes, codec):
        parts = []
        for c in range(codes.shape[1]):
            table = torch.cat([codec.quantizer.quantizers[c].codebook.weight,
                               self.special["MASK"][c:c + 1]], dim=0)
            parts.append(torch.nn.functional.embedding(codes[:, c, :], table).transpose(1, 2))
        return torch.cat(parts, dim=1)

    def forward(self, latents):
        return self.out_proj(latents)


class _Model(torch.nn.Module):
    """Stands in for ``vampnet.modules.transformer.VampNet`` (random logits, real sampler)."""

    def __init__(self, n_codebooks, n_conditioning_codebooks=0, chunk_size_s=10):
        super().__init__()
        self.n_codebooks = n_codebooks
        self.n_conditioning_codebooks = n_conditioning_codebooks
        self.embedding = _CodebookEmbedding(n_codebooks)
        self.mask_token = self.embedding.special_idxs["MASK"]
        self.chunk_size_s = chunk_size_s

    def forward(self, latents):
        x = self.embedding(latents)                       # a module call: pre-hooks fire here
        n_predict = self.n_codebooks - self.n_conditioning_codebooks
        b, _, t = x.shape
        return 3.0 * torch.randn(b, VOCAB, t * n_predict, device=x.device)  # b, vocab, (t c)

    @staticmethod
    def _sample(logits, sample, temperature, top_p):
        """Sample one token per position; returns tokens and their probabilities."""
        if top_p is not None and top_p < 1.0:
            values, order = logits.sort(dim=-1, descending=True)
            cum = values.softmax(-1).cumsum(-1)
            drop = torch.nn.functional.pad(cum > top_p, (1, 0), value=False)[..., :-1]
            logits = logits.masked_fill(drop.scatter(-1, order, drop), -float("inf"))
        probs = torch.softmax(logits / temperature if temperature > 0 else logits, dim=-1)
        if sample:   # inverse-CDF draw: the same distribution as multinomial, much faster
            u = torch.rand(*probs.shape[:-1], 1, device=probs.device)
            token = torch.searchsorted(probs.cumsum(-1), u * probs.sum(-1, keepdim=True))
            token = token.squeeze(-1).clamp_max(VOCAB - 1)
        else:
            token = logits.argmax(-1)
        return token, probs.gather(-1, token[..., None]).squeeze(-1)

    @torch.inference_mode()
    def generate(self, codec, time_steps=300, _sampling_steps=12, start_tokens=None,
                 temperature=1.0, mask=None, mask_temperature=10.5, ctrls=None, ctrl_masks=None,
                 typical_filtering=True, typical_mass=0.15, typical_min_tokens=64, top_p=None,
                 seed=None, sample_cutoff=1.0, return_signal=True, debug=False,
                 causal_weight=0.0, cfg_scale=3.0, cfg_guidance=None, cond=None):
        if seed is not None:
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)
        z = start_tokens
        n_cond = self.n_conditioning_codebooks
        n_infer = self.n_codebooks - n_cond
        z_masked = z.masked_fill(mask.bool(), self.mask_token)
        if _per_item_count():      # the corrected double: each item plans from its own count
            at_start = (z_masked == self.mask_token).flatten(1).sum(1, keepdim=True)
        else:                      # VampNet: one count for the whole batch
            at_start = (z_masked == self.mask_token).sum()
        for i in range(_sampling_steps):
            r = torch.tensor((i + 1) / _sampling_steps).repeat(z.shape[0])
            logits = self.forward(self.embedding.from_codes(z_masked, codec))
            tokens, probs = self._sample(logits.permute(0, 2, 1),
                                         (i / _sampling_steps) <= sample_cutoff,
                                         temperature, top_p)
            # flatten (b, c, t) → (b, t·c) over the generated codebooks, as VampNet does
            flat = z_masked[:, n_cond:, :].permute(0, 2, 1).reshape(z.shape[0], -1)
            still = flat == self.mask_token
            tokens = torch.where(still, tokens, flat)
            probs = torch.where(still, probs, torch.inf)
            n_keep_masked = torch.floor(_cosine(r)[:, None] * at_start).long()
            if i != _sampling_steps - 1:
                n_keep_masked = torch.maximum(
                    torch.tensor(1), torch.minimum(still.sum(-1, keepdim=True) - 1, n_keep_masked))
            u = torch.zeros_like(probs).uniform_(1e-20, 1)
            confidence = torch.log(probs) + (mask_temperature * (1 - r))[:, None] * -torch.log(-torch.log(u))
            cut = torch.take_along_dim(confidence.sort(-1).values, n_keep_masked, dim=-1)
            remask = confidence < cut
            flat = torch.where(remask, self.mask_token, tokens)
            gen = flat.reshape(z.shape[0], -1, n_infer).permute(0, 2, 1)
            z_masked = torch.cat([z[:, :n_cond, :], gen], dim=1)
        sampled = tokens.reshape(z.shape[0], -1, n_infer).permute(0, 2, 1)
        return torch.cat([z[:, :n_cond, :], sampled], dim=1)


def _apply_mask(x, mask, mask_token):
    return x * (1 - mask) + torch.full_like(x, mask_token) * mask, mask


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
        self.coarse = _Model(4, chunk_size_s=coarse_chunk_size_s)
        self.c2f = _Model(14, 4, chunk_size_s=coarse2fine_chunk_size_s)
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
        if rand_mask_intensity < 1.0:
            mask = (torch.rand(z.shape) < rand_mask_intensity).long().to(z.device)
        if periodic_prompt:
            prompt = torch.ones_like(z)
            prompt[..., ::periodic_prompt] = 0
            mask = mask * torch.roll(prompt, int(torch.randint(0, periodic_prompt, (1,))), -1)
        mask[:, upper_codebook_mask:, :] = 1
        return mask.long().to(z.device)

    @torch.inference_mode()
    def coarse_vamp(self, z, mask, return_mask=False, gen_fn=None, **kwargs):
        cz = z[:, :self.coarse.n_codebooks, :].clone()
        mask = mask[:, :self.coarse.n_codebooks, :]
        chunk_len = self.s2t(self.coarse.chunk_size_s)
        masked_chunks, vamped_chunks = [], []
        for start in range(0, cz.shape[-1], chunk_len):
            chunk, mask_chunk = cz[..., start:start + chunk_len], mask[..., start:start + chunk_len]
            if torch.any(mask_chunk == 0):          # keep the chunk's edges for clean stitching
                mask_chunk = mask_chunk.clone()
                mask_chunk[:, :, 0] = 0
                mask_chunk[:, :, -1] = 0
            masked, mask_chunk = _apply_mask(chunk, mask_chunk, self.coarse.mask_token)
            masked_chunks.append(masked)
            vamped_chunks.append((gen_fn or self.coarse.generate)(
                codec=self.codec, time_steps=chunk_len, start_tokens=masked, return_signal=False,
                mask=mask_chunk, **kwargs))
        c_vamp = torch.cat([torch.cat(vamped_chunks, -1), z[:, self.coarse.n_codebooks:, :]], 1)
        return (c_vamp, torch.cat(masked_chunks, -1)) if return_mask else c_vamp

    def coarse_to_fine(self, z, mask=None, return_mask=False, **kwargs):
        length = z.shape[-1]
        chunk_len = self.s2t(self.c2f.chunk_size_s)
        n_chunks = math.ceil(length / chunk_len)
        pad = n_chunks * chunk_len - length
        if pad:
            z = torch.nn.functional.pad(z, (0, pad))
            mask = torch.nn.functional.pad(mask, (0, pad), value=1)
        mask = mask.clone()
        mask[:, :self.c2f.n_conditioning_codebooks, :] = 0
        fine = [self.c2f.generate(codec=self.codec, time_steps=chunk_len,
                                  start_tokens=z[..., i * chunk_len:(i + 1) * chunk_len],
                                  return_signal=False,
                                  mask=mask[..., i * chunk_len:(i + 1) * chunk_len],
                                  cfg_guidance=None, **kwargs)
                for i in range(n_chunks)]
        fine = torch.cat(fine, -1)
        if return_mask:
            return (fine[..., :length].clone(),
                    _apply_mask(fine, mask, self.c2f.mask_token)[0][..., :length].clone())
        return fine[..., :length].clone()

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
        z = codes.expand(batch_size, -1, -1)
        mask = mask.expand(batch_size, -1, -1)
        if time_stretch_factor > 1:
            z = z.repeat_interleave(time_stretch_factor, dim=-1)
            mask = mask.repeat_interleave(time_stretch_factor, dim=-1)
            added = torch.ones_like(mask)
            added[:, :, ::time_stretch_factor] = 0
            mask = (mask.bool() | added.bool()).long()
        zv = z
        for i in range(feedback_steps):
            zv, mask_z = self.coarse_vamp(zv, mask=mask, return_mask=True, **kwargs)
            mask_z = mask_z.roll(shifts=(i + 1) % feedback_steps, dims=-1)
        zv, fine_mask = self.coarse_to_fine(zv, mask=mask, typical_filtering=True,
                                            _sampling_steps=2, return_mask=True)
        # like VampNet, the "mask" returned holds the masked codes (mask token where masked)
        mask_z = torch.cat([mask_z[:, :self.coarse.n_codebooks, :],
                            fine_mask[:, self.coarse.n_codebooks:, :]], dim=1)
        return (zv, mask_z.cpu()) if return_mask else zv
