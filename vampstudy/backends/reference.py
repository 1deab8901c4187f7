"""The built-in reference backend: offline, CPU-fast, deterministic, no weights.

**This is not VampNet.** It is a stand-in with VampNet's timing and token
layout so that the whole pipeline — and every study — runs anywhere, and so
that results labelled ``backend=reference`` can be compared against each other.

* Codec: :class:`~vampstudy.backends.refcodec.ReferenceCodec` (residual
  lattice quantisation of mel cepstra).
* Masks: :func:`vampstudy.masks.build_mask`, VampNet's semantics exactly.
* Generator (:meth:`ReferenceBackend.vamp`): a non-parametric masked-token
  sampler. The clip's own input codes serve as its "training data". For each
  masked position it scores every other frame of the clip by how well that
  frame's neighbourhood matches the *known* tokens around the position
  (squared codeword distances, summed over known codebooks and a window of
  ±``context_width`` steps; frames within ``exclude_radius`` steps are never
  candidates; where a candidate's neighbour would fall outside the clip, that
  term is an average match, so edge frames are not favoured). A softmax over frames gives a distribution over that
  codebook's vocabulary (the tokens that codebook uses in the clip);
  ``temperature``, ``typical_filtering`` (with ``typical_mass``, and
  ``typical_min_tokens`` scaled from 1024 to that vocabulary's size),
  ``top_p`` and ``seed`` act on it. Codebooks are proposed coarse to fine and
  each proposal conditions the finer codebooks of its position (as do the
  position's known tokens, over the much smaller ``stack_scale``): the codec is
  residual, so a fine token only means something on top of the coarse tokens
  of its own frame; drawn independently, a position's codebooks came from
  different frames and their sum landed far off the clip's spectra — frames up
  to 30 dB above the loudest original frame, outputs 6–20 dB too loud.
  Positions are unmasked over ``_sampling_steps`` steps on a cosine schedule,
  most confident first (with Gumbel noise scaled by ``mask_temperature``; a
  token never ahead of a masked coarser token of its position), so
  later choices condition on earlier ones — as in a masked-token model. Less
  context (larger prompt intervals) gives flatter distributions and so more
  variation. Unmasked positions are returned bit for bit.
* Long clips are sampled in windows of at most ``window_s`` seconds (10 s,
  like VampNet's coarse chunks), each an independent clip with its own
  corpus and schedule, so the sampler's cost per audio second and its working
  memory stay flat however long the clip is (the frame scoring is quadratic in
  the window, not the clip). A clip of one window or less is sampled exactly as
  a whole, as before windows existed.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager

import torch
from audiotools import AudioSignal

from ..errors import ConfigError
from ..masks import build_mask as _build_mask
from .base import MASK_OPTIONS, Backend, resolve_device
from .refcodec import ReferenceCodec
from .trace import SamplingTrace, TracedCall, TraceSegment, cosine_schedule

logger = logging.getLogger(__name__)


class ReferenceBackend(Backend):
    """Built-in offline stand-in for VampNet (see module docstring).

    Parameters
    ----------
    device : str
        ``auto``, ``cpu`` or ``cuda``; the reference backend computes on the
        CPU and only returns tensors on this device.
    context_width : int
        Steps either side of a position that its context covers.
    context_scale : float
        Divides the context distance before the softmax over frames: smaller
        means sharper matching.
    exclude_radius : int
        Frames this close to a position are never copied from.
    window_s : float
        Longest stretch, in seconds, sampled as one piece; longer clips are cut
        into equal windows no longer than this (VampNet's coarse chunk: 10 s).
    stack_scale : float
        Divides the distance between a position's own tokens (known, or proposed
        on coarser codebooks) and a candidate frame's: small means a position's
        codebooks come from frames that agree with each other (see the module
        docstring: residual tokens mixed across frames are far too loud). The
        fine codebooks' codewords are small (a few nats apart against hundreds
        for the coarse ones), so at 1.0 a position's known fine tokens hardly
        constrained which frame its masked coarse tokens came from; with random
        masks (known and masked codebooks interleaved in one position) the
        spliced stacks put single frames up to 20 dB above any original frame.
        The default 0.1 makes the known fine tokens count (random-mask outputs:
        +1.5..+2.4 dB vs resynthesis on the demo clip instead of +2.0..+3.5).
    """

    name = "reference"
    description = ("vampstudy reference backend (offline DSP codec + context-matching "
                   "sampler; NOT VampNet)")
    _trace: SamplingTrace | None = None

    def __init__(self, device: str = "auto", context_width: int = 4, context_scale: float = 100.0,
                 exclude_radius: int = 2, window_s: float = 10.0, stack_scale: float = 0.1):
        if context_width < 0 or exclude_radius < 0 or context_scale <= 0 or stack_scale <= 0:
            raise ConfigError("reference backend: context_width and exclude_radius must be >= 0 "
                              "and context_scale, stack_scale > 0")
        if not window_s > 0:
            raise ConfigError(f"reference backend: window_s must be > 0 seconds, got {window_s}")
        self.device = resolve_device(device)
        self.context_width = int(context_width)
        self.context_scale = float(context_scale)
        self.exclude_radius = int(exclude_radius)
        self.window_s = float(window_s)
        self.stack_scale = float(stack_scale)
        self.codec = ReferenceCodec()
        self.sample_rate = self.codec.sample_rate
        self.hop_length = self.codec.hop_length
        self.n_codebooks = self.codec.n_codebooks
        self.codebook_size = self.codec.codebook_size

    def options(self) -> dict:
        return {"context_width": self.context_width, "context_scale": self.context_scale,
                "exclude_radius": self.exclude_radius, "window_s": self.window_s,
                "stack_scale": self.stack_scale}

    def windows(self, n_steps: int) -> list[tuple[int, int]]:
        """``[start, stop)`` of the equal windows (≤ ``window_s``) a clip is sampled in."""
        longest = max(1, self.s2t(self.window_s))
        n_windows = max(1, math.ceil(n_steps / longest))
        edges = [round(i * n_steps / n_windows) for i in range(n_windows + 1)]
        return list(zip(edges[:-1], edges[1:]))

    # ------------------------------------------------------------ codec
    def preprocess(self, signal: AudioSignal) -> AudioSignal:
        """Resample to 44.1 kHz, mono, -24 LUFS, peaks ≤ 1, pad to a multiple of the hop."""
        sig = signal.clone().to("cpu")
        sig = sig.resample(self.sample_rate).to_mono()
        sig = sig.normalize(-24.0).ensure_max_of_audio(1.0)
        pad = (-sig.signal_length) % self.hop_length
        if pad:
            sig = sig.zero_pad(0, pad)
        return sig

    def encode(self, signal: AudioSignal) -> torch.Tensor:
        sig = self.preprocess(signal)
        codes = self.codec.encode(sig.audio_data)
        return codes.to(self.device)

    def codec_latents(self, signal: AudioSignal) -> torch.Tensor:
        """The encoder's mel cepstra before quantisation, ``(1, 80, n_steps)``."""
        return self.codec.cepstra(self.preprocess(signal).audio_data)

    def decode(self, codes: torch.Tensor) -> AudioSignal:
        """Codes → audio; clips longer than ``window_s`` are synthesised in cross-faded blocks."""
        audio = self.codec.decode(codes.cpu(), block_frames=max(1, self.s2t(self.window_s)))
        return AudioSignal(audio, self.sample_rate)

    # ------------------------------------------------------------- mask
    def build_mask(self, codes: torch.Tensor, signal: AudioSignal | None = None,
                   **mask_options) -> torch.Tensor:
        unknown = sorted(set(mask_options) - set(MASK_OPTIONS))
        if unknown:
            raise TypeError(f"build_mask() got unexpected keyword(s) {unknown}; "
                            f"valid: {', '.join(MASK_OPTIONS)}")
        return _build_mask(codes, signal, sample_rate=self.sample_rate,
                           hop_length=self.hop_length, **mask_options)

    # ---------------------------------------------------------- tracing
    @contextmanager
    def trace_sampling(self):
        """Record the unmasking schedule of every ``vamp`` call in the block (see the base class).

        The reference sampler records its own counts: one segment (group
        ``"all"``, every codebook) per window (see :meth:`windows`) and call,
        ``_sampling_steps`` rows (an item that is done early shows 0), and
        ``final`` (0 when it finished).
        """
        trace = SamplingTrace()
        previous, self._trace = self._trace, trace
        try:
            yield trace
        finally:
            self._trace = previous

    def sampling_schedule(self, n_masked: int, steps: int, group: str = "all") -> list[int]:
        """Cosine schedule: after step k, ``floor(n · cos(π/2 · k/steps))`` left, at least one
        fixed per step; may reach 0 before the last step (then sampling stops)."""
        return cosine_schedule(n_masked, steps, keep_one=False)

    # ------------------------------------------------------------ vamp
    def vamp(self, codes: torch.Tensor, mask: torch.Tensor, batch_size: int = 1,
             feedback_steps: int = 1, time_stretch_factor: int = 1, return_mask: bool = False,
             _sampling_steps: int = 12, temperature: float = 1.0, mask_temperature: float = 10.5,
             typical_filtering: bool = True, typical_mass: float = 0.15,
             typical_min_tokens: int = 64, top_p: float | None = None, seed: int | None = None,
             sample_cutoff: float = 1.0):
        """Regenerate masked positions (see the module docstring for the method).

        Keywords are VampNet's; ``feedback_steps`` and ``time_stretch_factor``
        are accepted for compatibility and must stay at 1.
        """
        if feedback_steps != 1 or time_stretch_factor != 1:
            raise ConfigError("the reference backend supports feedback_steps=1 and "
                              "time_stretch_factor=1 only")
        if temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {temperature}")
        if codes.shape[-2:] != mask.shape[-2:] or codes.ndim != 3 or mask.ndim != 3:
            raise ConfigError(f"codes {tuple(codes.shape)} and mask {tuple(mask.shape)} "
                              "must both be (batch, n_codebooks, n_steps)")
        for name, t in (("codes", codes), ("mask", mask)):
            if t.shape[0] not in (1, batch_size):
                raise ConfigError(f"{name} has batch {t.shape[0]}; expected 1 or "
                                  f"batch_size={batch_size}")
        device = codes.device
        codes = codes.cpu().expand(batch_size, -1, -1)
        mask = mask.cpu().expand(batch_size, -1, -1)
        if seed is None:
            seed = int(torch.randint(0, 2 ** 31 - 1, (1,)).item())
        gen = torch.Generator().manual_seed(int(seed))
        steps = max(1, int(_sampling_steps))
        windows = self.windows(codes.shape[-1])
        counts = [[[] for _ in windows] for _ in range(batch_size)]   # [item][window][step]
        out = codes.clone()
        for i in range(batch_size):
            for w, (start, stop) in enumerate(windows):
                out[i, :, start:stop] = self._vamp_one(
                    codes[i, :, start:stop], mask[i, :, start:stop], gen, steps=steps,
                    temperature=temperature, mask_temperature=mask_temperature,
                    typical_filtering=typical_filtering, typical_mass=typical_mass,
                    typical_min_tokens=typical_min_tokens, top_p=top_p,
                    sample_cutoff=sample_cutoff, counts=counts[i][w])
        out = out.to(device)
        if self._trace is not None:
            segments = [TraceSegment("all", start, stop, steps,
                                     masked=[[c[w][k] for c in counts] for k in range(steps)],
                                     final=[c[w][steps] for c in counts])
                        for w, (start, stop) in enumerate(windows)]
            self._trace.calls.append(TracedCall(batch_size, {
                "_sampling_steps": steps, "seed": seed, "temperature": temperature}, segments))
        if return_mask:
            return out, mask.clone()
        return out

    def _codeword_distance(self, c: int, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Squared distances ``(len(rows), len(cols))`` between codebook ``c``'s codewords."""
        emb = self.codec.embeddings[c]
        a, b = emb[rows], emb[cols]
        return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T).clamp_min(0)

    def _context_sum(self, dist: torch.Tensor) -> torch.Tensor:
        """``out[t, t'] = Σ_δ dist[t+δ, t'+δ]`` over |δ| ≤ ``context_width`` with t+δ in the clip.

        Where ``t'+δ`` falls outside the clip the term is row ``t+δ``'s mean over all
        frames (an average match), not 0: a missing term counted as a perfect match
        made the frames at the clip's two edges the likeliest copies of every position.
        """
        width, n = self.context_width, dist.shape[1]
        pad = dist.mean(1, keepdim=True).expand(-1, width)
        padded = torch.cat([pad, dist, pad], dim=1)
        total = dist.clone()
        for delta in range(1, width + 1):  # diagonal shifts: neighbours' contexts
            total[:-delta] += padded[delta:, width + delta:width + delta + n]
            total[delta:] += padded[:-delta, width - delta:width - delta + n]
        return total

    def _frame_logits(self, z: torch.Tensor, known: torch.Tensor, corpus: torch.Tensor) -> torch.Tensor:
        """Log-weights ``(T, T')`` of copying frame t' into position t.

        Two terms: the context (known tokens within ±``context_width`` steps, over
        ``context_scale``) and the position's own known tokens (over ``stack_scale``),
        so that what is generated at a position agrees with what is known there.
        """
        n_cb, n_steps = z.shape
        dist = torch.zeros(n_steps, n_steps)
        for c in range(n_cb):
            rows = known[c]
            if rows.any():
                dist += self._codeword_distance(c, z[c], corpus[c]) * rows[:, None]
        total = self._context_sum(dist)
        logits = -total / self.context_scale - dist / self.stack_scale
        idx = torch.arange(n_steps)
        near = (idx[:, None] - idx[None, :]).abs() <= self.exclude_radius
        if bool((~near).any(dim=1).all()):
            logits = logits.masked_fill(near, float("-inf"))
        return logits

    def _vamp_one(self, codes, mask, gen, *, steps, temperature, mask_temperature,
                  typical_filtering, typical_mass, typical_min_tokens, top_p, sample_cutoff,
                  counts=None):
        """Sample one item; appends to ``counts`` the masked count at the start of each of the
        ``steps`` steps, then after the last (``steps + 1`` numbers)."""
        counts = [] if counts is None else counts
        corpus = codes.clone()
        z = codes.clone()
        todo = mask.bool().clone()
        n_total = int(todo.sum())
        try:
            if n_total > 0:
                self._sample_item(z, corpus, todo, n_total, gen, steps, counts, temperature,
                                  mask_temperature, typical_filtering, typical_mass,
                                  typical_min_tokens, top_p, sample_cutoff)
        finally:
            counts.extend([int(todo.sum())] * (steps + 1 - len(counts)))
        return z

    def _sample_item(self, z, corpus, todo, n_total, gen, steps, counts, temperature,
                     mask_temperature, typical_filtering, typical_mass, typical_min_tokens,
                     top_p, sample_cutoff):
        """The unmasking loop of :meth:`_vamp_one` (edits ``z`` and ``todo`` in place)."""
        vocab = [torch.unique(corpus[c], return_inverse=True) for c in range(len(corpus))]
        # agree[c][i, j]: how well token values[i] of codebook c stands in for values[j]
        agree = [torch.exp(-self._codeword_distance(c, v, v) / self.stack_scale)
                 for c, (v, _) in enumerate(vocab)]
        for step in range(steps):
            counts.append(int(todo.sum()))
            weights = torch.softmax(self._frame_logits(z, ~todo, corpus), dim=1)   # (T, T')
            greedy = temperature == 0 or (step + 1) / steps > sample_cutoff
            positions, tokens, confidence = [], [], []
            for c in todo.any(dim=1).nonzero().squeeze(1).tolist():   # coarse to fine
                t = todo[c].nonzero().squeeze(1)
                values, inverse = vocab[c]          # the tokens this codebook uses in the clip
                p = torch.zeros(len(t), len(values))
                p.scatter_add_(1, inverse[None, :].expand(len(t), -1), weights[t])
                p = self._shape(p, temperature, typical_filtering, typical_mass,
                                typical_min_tokens, top_p, greedy, self.codebook_size)
                if greedy:
                    pick = p.argmax(1)
                else:  # inverse-CDF sampling
                    u = torch.rand(len(t), 1, generator=gen)
                    pick = torch.searchsorted(p.cumsum(1), u * p.sum(1, keepdim=True))
                    pick = pick.squeeze(1).clamp_max(len(values) - 1)
                positions.append(torch.stack([torch.full_like(t, c), t], 1))
                tokens.append(values[pick])
                confidence.append(torch.log(p.gather(1, pick[:, None]).squeeze(1).clamp_min(1e-30)))
                # finer codebooks of these positions agree with this proposal (a residual
                # token only means something on top of the coarser tokens of its own frame)
                weights[t] = weights[t] * agree[c][pick][:, inverse]
            positions, tokens = torch.cat(positions), torch.cat(tokens)
            confidence = torch.cat(confidence)
            noise_scale = mask_temperature * (1.0 - (step + 1) / steps)
            if noise_scale > 0:
                u = torch.rand(len(tokens), generator=gen).clamp(1e-10, 1 - 1e-10)
                confidence = confidence + noise_scale * -torch.log(-torch.log(u))
            remaining = int(math.floor(n_total * math.cos(math.pi / 2 * (step + 1) / steps)))
            n_fix = len(tokens) - remaining if step < steps - 1 else len(tokens)
            n_fix = max(1, min(len(tokens), n_fix))
            chosen = torch.topk(self._coarse_first(confidence, positions, z.shape), n_fix).indices
            c_idx, t_idx = positions[chosen, 0], positions[chosen, 1]
            z[c_idx, t_idx] = tokens[chosen]
            todo[c_idx, t_idx] = False
            if not todo.any():
                break

    @staticmethod
    def _coarse_first(confidence: torch.Tensor, positions: torch.Tensor, shape) -> torch.Tensor:
        """Confidences lowered so that no token outranks a masked coarser token of its position.

        Each token's confidence becomes the least of its own and those of the masked
        tokens on coarser codebooks of its position (less a hair per codebook, so ties
        go coarse first): what is fixed at a position is always coarse to fine, so a
        fine token is only kept together with the coarser tokens it was drawn with.
        """
        grid = torch.full(tuple(shape), float("inf"))
        grid[positions[:, 0], positions[:, 1]] = confidence
        grid = grid.cummin(dim=0).values - 1e-6 * torch.arange(shape[0])[:, None]
        return grid[positions[:, 0], positions[:, 1]]

    @staticmethod
    def _shape(probs, temperature, typical_filtering, typical_mass, typical_min_tokens, top_p,
               greedy, vocab_size=1024):
        """Apply temperature, typical filtering and top-p to rows of probabilities."""
        probs = probs / probs.sum(1, keepdim=True).clamp_min(1e-30)
        if greedy:
            return probs
        if temperature != 1.0:
            logp = torch.log(probs.clamp_min(1e-30)) / temperature
            probs = torch.softmax(logp.masked_fill(probs <= 0, float("-inf")), dim=1)
        if typical_filtering:
            logp = torch.log(probs.clamp_min(1e-30))
            entropy = -(probs * logp).sum(1, keepdim=True)
            surprise_gap = (-logp - entropy).abs().masked_fill(probs <= 0, float("inf"))
            order = surprise_gap.argsort(1)
            sorted_p = probs.gather(1, order)
            cum = sorted_p.cumsum(1)
            keep_sorted = (cum - sorted_p) < typical_mass
            # the sampler's vocabulary is the clip's own tokens (not all 1024), so the
            # minimum is scaled to the same share of it: 64 of 1024 → 1/16 of the tokens used
            min_keep = max(1, math.ceil(typical_min_tokens * probs.shape[1] / vocab_size))
            keep_sorted[:, :min_keep] = True
            keep = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)
            probs = probs * keep
            probs = probs / probs.sum(1, keepdim=True).clamp_min(1e-30)
        if top_p is not None and 0 < top_p < 1:
            sorted_p, order = probs.sort(1, descending=True)
            cum = sorted_p.cumsum(1)
            keep_sorted = (cum - sorted_p) < top_p
            keep = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)
            probs = probs * keep
            probs = probs / probs.sum(1, keepdim=True).clamp_min(1e-30)
        return probs
