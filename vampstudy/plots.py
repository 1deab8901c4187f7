"""Figure builders: data in, :class:`matplotlib.figure.Figure` out. No files, no pyplot state.

Every figure carries the backend's label (e.g. "reference backend — not
VampNet") so a saved image can never be mistaken for VampNet output.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure


def backend_label(backend) -> str:
    """How figures name the backend."""
    if getattr(backend, "is_vampnet", False):
        return "backend: VampNet"
    return f"backend: {backend.name} (not VampNet)"


def _stamp(fig: Figure, label: str) -> None:
    fig.text(0.995, 0.005, label, ha="right", va="bottom", fontsize=7, color="0.35")


def _mask_image(ax, mask: torch.Tensor, n_codebooks: int, n_steps: int) -> None:
    m = mask[0, :n_codebooks, :n_steps].cpu().numpy()
    ax.imshow(m, aspect="auto", interpolation="nearest", cmap="Greys", vmin=0, vmax=1,
              origin="lower")
    ax.set_ylabel("codebook")
    ax.set_yticks(range(m.shape[0]))


def mask_figure(mask: torch.Tensor, title: str, label: str, n_codebooks: int = 4,
                n_steps: int = 200) -> Figure:
    """The first ``n_codebooks`` × ``n_steps`` of a mask (black = generate, white = keep)."""
    fig = Figure(figsize=(8, 2.2), layout="constrained")
    ax = fig.add_subplot()
    _mask_image(ax, mask, n_codebooks, n_steps)
    ax.set_xlabel("token step")
    ax.set_title(title, fontsize=9)
    _stamp(fig, label)
    return fig


def mask_grid_figure(items: Sequence[tuple[str, torch.Tensor]], label: str, n_codebooks: int = 4,
                     n_steps: int = 200) -> Figure:
    """One row per (title, mask): the notebook's mask overview."""
    fig = Figure(figsize=(9, 1.25 * len(items) + 0.6), layout="constrained")
    axes = fig.subplots(len(items), 1, squeeze=False)[:, 0]
    for ax, (title, mask) in zip(axes, items):
        _mask_image(ax, mask, n_codebooks, n_steps)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
    axes[-1].set_xticks(np.linspace(0, n_steps, 5).astype(int))
    axes[-1].set_xlabel("token step (black = generate, white = keep prompt)")
    fig.suptitle(f"Masks, first {n_codebooks} codebooks × {n_steps} steps — {label}", fontsize=10)
    return fig


def metric_figure(x: Sequence[float], y: Sequence[float], *, xlabel: str, ylabel: str, title: str,
                  label: str, logx: bool = False, yerr: Sequence[float] | None = None,
                  annotations: Sequence[str] | None = None) -> Figure:
    """A line plot of one metric against one parameter, with optional error bars."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.errorbar(x, y, yerr=yerr, marker="o", capsize=3 if yerr is not None else 0)
    if logx:
        ax.set_xscale("log")
    if annotations:
        for xi, yi, text in zip(x, y, annotations):
            ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(3, 4), fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n{label}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    return fig


def heatmap_figure(values: np.ndarray, xticks: Sequence, yticks: Sequence, *, xlabel: str,
                   ylabel: str, title: str, label: str) -> Figure:
    """A heat map of a metric over two parameters, each cell annotated."""
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(values, aspect="auto", origin="lower", cmap="viridis")
    ax.set_xticks(range(len(xticks)), [str(v) for v in xticks])
    ax.set_yticks(range(len(yticks)), [str(v) for v in yticks])
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=7,
                        color="w")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n{label}", fontsize=10)
    fig.colorbar(im, ax=ax)
    return fig


def log_spectrogram(signal, n_fft: int = 2048, hop: int = 512) -> tuple[np.ndarray, float, float]:
    """dB magnitude spectrogram of batch item 0 (mixed to mono): ``(db, duration_s, nyquist_hz)``."""
    audio = signal.audio_data[0].mean(0).detach().cpu().float()
    if audio.numel() < n_fft:
        audio = torch.nn.functional.pad(audio, (0, n_fft - audio.numel()))
    spec = torch.stft(audio, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True)
    db = 20 * torch.log10(spec.abs().clamp_min(1e-5))
    return db.numpy(), audio.numel() / signal.sample_rate, signal.sample_rate / 2


def _pool_columns(db: np.ndarray, max_columns: int) -> np.ndarray:
    """At most ``max_columns`` time frames: the max over groups of neighbouring frames
    (a long clip draws as fast as a short one and keeps its transients)."""
    factor = int(math.ceil(db.shape[1] / max_columns))
    if factor <= 1:
        return db
    pad = (-db.shape[1]) % factor
    if pad:
        db = np.concatenate([db, np.repeat(db[:, -1:], pad, axis=1)], axis=1)
    return db.reshape(db.shape[0], -1, factor).max(axis=2)


def _spec_image(ax, signal, max_hz: float = 11025.0, max_columns: int = 1600) -> None:
    db, duration, nyquist = log_spectrogram(signal)
    top = min(max_hz, nyquist)
    rows = int(math.ceil(db.shape[0] * top / nyquist))
    db = _pool_columns(db[:rows], max_columns)
    vmax = float(db.max())
    ax.imshow(db, aspect="auto", origin="lower", cmap="magma", vmin=vmax - 80, vmax=vmax,
              extent=(0, duration, 0, top / 1000))
    ax.set_ylabel("kHz")


def spectrogram_figure(signal, title: str, label: str) -> Figure:
    """One spectrogram (0–11 kHz, 80 dB range)."""
    fig = Figure(figsize=(8, 3), layout="constrained")
    ax = fig.add_subplot()
    _spec_image(ax, signal)
    ax.set_xlabel("seconds")
    ax.set_title(f"{title} — {label}", fontsize=9)
    return fig


def spectrogram_grid_figure(items: Sequence[tuple[str, object]], label: str) -> Figure:
    """Spectrograms stacked, one per (title, signal): the notebook's comparison grid."""
    fig = Figure(figsize=(9, 1.9 * len(items) + 0.6), layout="constrained")
    axes = fig.subplots(len(items), 1, squeeze=False, sharex=True)[:, 0]
    for ax, (title, signal) in zip(axes, items):
        _spec_image(ax, signal)
        ax.set_title(title, fontsize=8)
    axes[-1].set_xlabel("seconds")
    fig.suptitle(f"Spectrograms — {label}", fontsize=10)
    return fig
