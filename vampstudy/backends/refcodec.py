"""The reference backend's codec: residual lattice quantisation of mel cepstra.

A deterministic DSP codec with VampNet's timing (44.1 kHz, hop 768 → 57.42
tokens/s) and token layout (14 codebooks of 1024), needing no trained weights.

Analysis, per frame of ``hop_length`` samples:

1. STFT (Hann window of 1536, hop 768) → power spectrum;
2. 80 triangular mel bands (average power per band) → natural log;
3. orthonormal DCT-II over the bands → 80 mel-cepstral coefficients,
   ordered from coarse (overall level, tilt) to fine (spectral detail).

Quantisation is residual and successive: stage ``s`` (codebook ``s``) spends
its 10 bits on the cepstral coefficients whose remaining uncertainty is
widest, halving that uncertainty once per bit (a greedy reverse
water-filling). The first codebooks therefore carry the loudness and broad
spectral envelope, later ones refine finer detail — the residual hierarchy of
a neural RVQ codec. Each codebook's 1024 codewords form a product lattice, so
encoding is rounding and every token is valid.

Synthesis inverts the chain: cepstra → log-mel → band powers → a linear
magnitude spectrum (each bin a weighted mean of the bands covering it), with
phases that start from each bin's centre-frequency advance (steady partials
stay continuous) and are refined by a few Griffin-Lim iterations; inverse
STFT to exactly ``n_steps * hop_length`` samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Stage:
    """One codebook: which coefficients it refines, with how many bits, over what width."""

    dims: torch.Tensor      # (k,) coefficient indices
    bits: torch.Tensor      # (k,) bits per coefficient, summing to bits_per_codebook
    widths: torch.Tensor    # (k,) width of the interval each coefficient is quantised over
    radix: torch.Tensor     # (k,) place value of each coefficient's index inside the token


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """Triangular mel filters ``(n_mels, n_fft // 2 + 1)`` (HTK mel scale).

    Each filter is at least one bin wide (narrow low bands fall back to the
    nearest bin), so no band is empty.
    """
    n_bins = n_fft // 2 + 1
    freqs = torch.linspace(0, sample_rate / 2, n_bins, dtype=torch.float64)
    mel_max = 2595.0 * math.log10(1.0 + (sample_rate / 2) / 700.0)
    mel_pts = torch.linspace(0.0, mel_max, n_mels + 2, dtype=torch.float64)
    hz_pts = 700.0 * (10.0 ** (mel_pts / 2595.0) - 1.0)
    fb = torch.zeros(n_mels, n_bins, dtype=torch.float64)
    for b in range(n_mels):
        lo, mid, hi = hz_pts[b], hz_pts[b + 1], hz_pts[b + 2]
        up = (freqs - lo) / (mid - lo)
        down = (hi - freqs) / (hi - mid)
        fb[b] = torch.clamp(torch.minimum(up, down), min=0.0)
        if fb[b].sum() == 0:
            fb[b, int(torch.argmin((freqs - mid).abs()))] = 1.0
    return fb.float()


def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``D`` with ``c = D @ x`` and ``x = D.T @ c``."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi / n * (i + 0.5) * k) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.float()


def prior_scales(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prior centre and spread (standard deviation) of each mel-cepstral coefficient.

    Figures measured on synthesised music normalised to -24 LUFS, rounded into
    a simple law: c0 (level) about -60 ± 45, c1 (tilt) about 45 ± 28, c2 about
    20, and a spread falling as ``27 / (1 + j) ** 0.94`` for the rest.
    """
    j = torch.arange(n, dtype=torch.float32)
    centre = torch.zeros(n)
    centre[:3] = torch.tensor([-60.0, 45.0, 20.0])[:n]
    spread = torch.clamp(27.0 / (1.0 + j) ** 0.94, min=0.3)
    spread[:2] = torch.tensor([45.0, 28.0])[:n]
    return centre, spread


def allocate_stages(widths: torch.Tensor, n_stages: int, bits_per_stage: int) -> list[Stage]:
    """Greedy successive refinement: each bit halves the currently widest coefficient."""
    width = widths.clone().double()
    stages = []
    for _ in range(n_stages):
        start = width.clone()
        bits: dict[int, int] = {}
        for _ in range(bits_per_stage):
            j = int(torch.argmax(width))
            bits[j] = bits.get(j, 0) + 1
            width[j] /= 2.0
        dims = torch.tensor(sorted(bits), dtype=torch.long)
        b = torch.tensor([bits[int(d)] for d in dims], dtype=torch.long)
        radix = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), 2 ** b[:-1]]), 0)
        stages.append(Stage(dims=dims, bits=b, widths=start[dims].float(), radix=radix))
    return stages


class ReferenceCodec:
    """Encoder/decoder between audio ``(batch, 1, samples)`` and codes ``(batch, 14, T)``."""

    def __init__(self, sample_rate: int = 44100, hop_length: int = 768, n_codebooks: int = 14,
                 codebook_bits: int = 10, n_fft: int = 1536, n_mels: int = 80,
                 floor: float = 1e-8, phase_seed: int = 0, phase_iterations: int = 8):
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.n_codebooks = n_codebooks
        self.codebook_size = 2 ** codebook_bits
        self.n_fft = n_fft
        self.n_mels = n_mels
        self.floor = floor
        self.phase_iterations = phase_iterations
        self.window = torch.hann_window(n_fft)
        self.fb = mel_filterbank(sample_rate, n_fft, n_mels)
        self.fb_avg = self.fb / self.fb.sum(1, keepdim=True)           # band = mean power
        self.fb_inv = (self.fb / self.fb.sum(0, keepdim=True).clamp_min(1e-12)).T  # bin = mean of bands
        self.dct = dct_matrix(n_mels)
        self.centre, spread = prior_scales(n_mels)
        self.stages = allocate_stages(6.0 * spread, n_codebooks, codebook_bits)
        gen = torch.Generator().manual_seed(phase_seed)
        self.phase0 = 2 * math.pi * torch.rand(n_fft // 2 + 1, generator=gen)
        self.phase_step = 2 * math.pi * torch.arange(n_fft // 2 + 1) * hop_length / n_fft
        self.embeddings = [self._codewords(s) for s in self.stages]

    # ---------------------------------------------------------- features
    def cepstra(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio ``(batch, 1, samples)`` (a multiple of hop) → cepstra ``(batch, n_mels, T)``."""
        batch, _, n = audio.shape
        n_steps = n // self.hop_length
        spec = torch.stft(audio.reshape(batch, n).float().cpu(), self.n_fft, self.hop_length,
                          window=self.window, center=True, return_complex=True)[..., :n_steps]
        power = spec.abs() ** 2
        logmel = torch.log(self.fb_avg @ power + self.floor)
        return self.dct @ logmel

    def synthesize(self, cepstra: torch.Tensor, block_frames: int | None = None,
                   margin: int = 16) -> torch.Tensor:
        """Cepstra ``(batch, n_mels, T)`` → audio ``(batch, 1, T * hop)``.

        With ``block_frames``, a longer clip is synthesised block by block
        (each with ``margin`` frames of context either side, its phases
        continuing the clip's frame clock) and the blocks are cross-faded over
        ``margin * hop`` samples, so memory stays bounded by the block; a clip
        of at most ``block_frames`` frames is synthesised exactly as a whole.
        """
        n_steps = cepstra.shape[-1]
        if block_frames is None or n_steps <= block_frames:
            return self._synthesize(cepstra, 0)
        n_blocks = math.ceil(n_steps / block_frames)      # equal blocks, each >= block_frames / 2
        edges = [round(i * n_steps / n_blocks) for i in range(n_blocks + 1)]
        margin = min(margin, max(0, block_frames // 2 - 1))   # the fades must fit in a block
        hop, fade = self.hop_length, margin * self.hop_length // 2
        out = torch.zeros(cepstra.shape[0], 1, n_steps * hop)
        for start, stop in zip(edges[:-1], edges[1:]):
            lo, hi = max(0, start - margin), min(n_steps, stop + margin)
            audio = self._synthesize(cepstra[..., lo:hi], lo)
            s0 = start * hop - (fade if start > 0 else 0)
            s1 = stop * hop + (fade if stop < n_steps else 0)
            piece = audio[..., s0 - lo * hop:s1 - lo * hop]
            weight = torch.ones(s1 - s0)
            if fade:
                ramp = (torch.arange(2 * fade, dtype=torch.float32) + 0.5) / (2 * fade)
                if start > 0:
                    weight[:2 * fade] = ramp
                if stop < n_steps:
                    weight[-2 * fade:] = 1.0 - ramp
            out[..., s0:s1] += piece * weight
        return out

    def _synthesize(self, cepstra: torch.Tensor, first_frame: int) -> torch.Tensor:
        """Synthesise a stretch whose first frame is frame ``first_frame`` of the clip."""
        batch, _, n_steps = cepstra.shape
        band_power = torch.exp(self.dct.T @ cepstra) - self.floor
        magnitude = torch.sqrt(torch.clamp(self.fb_inv @ band_power.clamp_min(0), min=0))
        frames = torch.arange(n_steps + 1, dtype=torch.float32) + first_frame
        phase = self.phase0[:, None] + self.phase_step[:, None] * frames[None, :]
        magnitude = torch.cat([magnitude, magnitude[..., -1:]], dim=-1)
        spec = torch.polar(magnitude, phase.expand_as(magnitude).contiguous())
        length = n_steps * self.hop_length
        for _ in range(self.phase_iterations):  # Griffin-Lim refinement of the phases
            audio = torch.istft(spec, self.n_fft, self.hop_length, window=self.window, length=length)
            rebuilt = torch.stft(audio, self.n_fft, self.hop_length, window=self.window,
                                 return_complex=True)
            spec = torch.polar(magnitude, torch.angle(rebuilt))
        audio = torch.istft(spec, self.n_fft, self.hop_length, window=self.window, length=length)
        return audio[:, None, :]

    # ------------------------------------------------------ quantisation
    def _codewords(self, stage: Stage) -> torch.Tensor:
        """Values ``(codebook_size, k)`` that each token of a stage adds to its coefficients."""
        tokens = torch.arange(self.codebook_size)[:, None]
        levels = 2 ** stage.bits
        index = (tokens // stage.radix) % levels
        return ((index.float() + 0.5) / levels - 0.5) * stage.widths

    def quantize(self, cepstra: torch.Tensor) -> torch.Tensor:
        """Cepstra ``(batch, n_mels, T)`` → codes ``(batch, n_codebooks, T)``."""
        residual = cepstra - self.centre[None, :, None]
        codes = []
        for stage in self.stages:
            levels = (2 ** stage.bits)[None, :, None]
            r = residual[:, stage.dims, :]
            width = stage.widths[None, :, None]
            index = torch.floor((r / width + 0.5) * levels).long()
            index = torch.minimum(torch.clamp(index, min=0), levels - 1)
            value = ((index.float() + 0.5) / levels - 0.5) * width
            residual[:, stage.dims, :] = r - value
            codes.append((index * stage.radix[None, :, None]).sum(1))
        return torch.stack(codes, dim=1)

    def dequantize(self, codes: torch.Tensor, n_codebooks: int | None = None) -> torch.Tensor:
        """Codes → cepstra, summing the first ``n_codebooks`` stages (all by default)."""
        batch, _, n_steps = codes.shape
        out = self.centre[None, :, None].repeat(batch, 1, n_steps)
        for s, stage in enumerate(self.stages[: n_codebooks or self.n_codebooks]):
            values = self.embeddings[s][codes[:, s, :].cpu()]       # (batch, T, k)
            out[:, stage.dims, :] += values.permute(0, 2, 1)
        return out

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        return self.quantize(self.cepstra(audio))

    def decode(self, codes: torch.Tensor, n_codebooks: int | None = None,
               block_frames: int | None = None) -> torch.Tensor:
        """Codes → audio, through the bounded output stage (:func:`bounded_output`)."""
        return bounded_output(self.synthesize(self.dequantize(codes, n_codebooks), block_frames))


#: Where the decoder's output stage starts to bend towards full scale.
OUTPUT_KNEE = 0.95


def bounded_output(audio: torch.Tensor, knee: float = OUTPUT_KNEE) -> torch.Tensor:
    """The decoder's output stage: identity up to ``knee``, then a tanh curve towards ±1.

    A neural codec's decoder ends in a bounded nonlinearity (LAC's and DAC's last
    layer is ``tanh``), so even tokens that no real audio produces — the noise
    control's uniformly random tokens — decode to a signal within full scale. The
    reference codec's synthesis has no such bound of its own: random cepstra can
    put tens of nats of log power into a band (peaks of 10⁶ were seen). Below
    ``knee`` the stage changes nothing (slope 1 at the knee, continuous), so the
    codec's resynthesis of preprocessed audio is the synthesis itself.
    """
    excess = (audio.abs() - knee).clamp_min(0.0)
    bent = knee + (1.0 - knee) * torch.tanh(excess / (1.0 - knee))
    return torch.where(audio.abs() > knee, torch.sign(audio) * bent, audio)
