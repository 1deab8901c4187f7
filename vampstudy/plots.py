"""Figure builders: data in, :class:`matplotlib.figure.Figure` out. No files, no pyplot state.

Every figure carries the backend's label (e.g. "reference backend — not
VampNet") so a saved image can never be mistaken for VampNet output.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(**kwargs) -> "Figure":
    """A matplotlib :class:`~matplotlib.figure.Figure` (no pyplot state; saved off-screen).

    matplotlib is imported here, on the first figure, not with this module: a study file
    imports this module, and under ``--executor process`` the model process (which draws
    nothing) never loads matplotlib."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _ticker():
    import matplotlib.ticker

    return matplotlib.ticker


class RenderedFigure:
    """A figure already rendered to PNG: stands in for a matplotlib Figure in
    :attr:`vampstudy.study.Record.figures` and saves as exactly those bytes.

    Workers ship figures this way, and the recorder keeps each logged figure as one
    (its PNG, not the Figure) so the listening report reuses it instead of drawing
    it again.
    """

    def __init__(self, png: bytes):
        self.png = png

    @classmethod
    def of(cls, figure) -> "RenderedFigure":
        """Render a matplotlib figure (at its own dpi) or pass a rendered one through."""
        if isinstance(figure, cls):
            return figure
        buf = io.BytesIO()
        # zlib level 1: a fifth faster to encode than the default 6, about 13 % larger
        figure.savefig(buf, format="png", dpi="figure", pil_kwargs={"compress_level": 1})
        return cls(buf.getvalue())

    def savefig(self, fname, format=None, **kwargs) -> None:  # noqa: A002 (matplotlib's name)
        if hasattr(fname, "write"):
            fname.write(self.png)
        else:
            with open(fname, "wb") as f:
                f.write(self.png)


def backend_label(backend) -> str:
    """How figures name the backend."""
    if getattr(backend, "is_vampnet", False):
        return "backend: VampNet"
    return f"backend: {backend.name} (not VampNet)"


def _stamp(fig: Figure, label: str) -> None:
    fig.text(0.995, 0.005, label, ha="right", va="bottom", fontsize=7, color="0.35")


def _fixed_margins(fig: Figure, left: float = 0.6, right: float = 0.15, bottom: float = 0.5,
                   top: float = 0.3) -> None:
    """Margins in inches, for the figures drawn once per trial.

    Their labels are known in advance (``codebook`` 0–3, ``kHz`` 0–11, one title
    line), so fixed margins fit; the layout engine's text measuring would
    otherwise take a third of each figure's drawing time.
    """
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h)


def _fixed_grid(fig: Figure, n_rows: int, gap: float, left: float = 0.6, right: float = 0.15,
                bottom: float = 0.55, top: float = 0.7) -> None:
    """Fixed margins (inches) for a column of ``n_rows`` panels, ``gap`` inches apart
    (room for each panel's one-line title), the figure's title in the top margin.
    See :func:`_fixed_margins`."""
    w, h = fig.get_size_inches()
    panel = max((h - bottom - top - gap * (n_rows - 1)) / n_rows, 0.1)
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h,
                        hspace=gap / panel)


def mask_image_data(mask: torch.Tensor, n_codebooks: int = 4, n_steps: int = 200) -> np.ndarray:
    """What :func:`mask_figure` draws: batch item 0's first ``n_codebooks`` × ``n_steps``."""
    return mask[0, :n_codebooks, :n_steps].cpu().numpy()


def _mask_image(ax, mask: torch.Tensor, n_codebooks: int, n_steps: int) -> None:
    m = mask_image_data(mask, n_codebooks, n_steps)
    ax.imshow(m, aspect="auto", interpolation="nearest", cmap="Greys", vmin=0, vmax=1,
              origin="lower")
    ax.set_ylabel("codebook")
    ax.set_yticks(range(m.shape[0]))


def mask_figure(mask: torch.Tensor, title: str, label: str, n_codebooks: int = 4,
                n_steps: int = 200) -> Figure:
    """The first ``n_codebooks`` × ``n_steps`` of a mask (black = generate, white = keep)."""
    fig = new_figure(figsize=(8, 2.2))
    _fixed_margins(fig)
    ax = fig.add_subplot()
    _mask_image(ax, mask, n_codebooks, n_steps)
    ax.set_xlabel("token step")
    ax.set_title(title, fontsize=9)
    _stamp(fig, label)
    return fig


def mask_grid_figure(items: Sequence[tuple[str, torch.Tensor]], label: str, n_codebooks: int = 4,
                     n_steps: int = 200) -> Figure:
    """One row per (title, mask): the notebook's mask overview."""
    fig = new_figure(figsize=(9, 1.25 * len(items) + 0.6))
    _fixed_grid(fig, len(items), gap=0.3)
    axes = fig.subplots(len(items), 1, squeeze=False)[:, 0]
    for ax, (title, mask) in zip(axes, items):
        _mask_image(ax, mask, n_codebooks, n_steps)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
    shown = max(int(min(n_steps, mask.shape[-1])) for _, mask in items)
    last = shown - 1
    axes[-1].set_xticks(np.unique(np.linspace(0, last, 5).round().astype(int)))
    for ax in axes:   # ticks must not widen the axes past the image (a white strip)
        ax.set_xlim(-0.5, shown - 0.5)
    axes[-1].set_xlabel("token step (black = generate, white = keep prompt)")
    fig.suptitle(f"Masks, first {n_codebooks} codebooks × {n_steps} steps — {label}", fontsize=10,
                 y=1 - 0.12 / fig.get_size_inches()[1], va="top")
    return fig


def metric_figure(x: Sequence[float], y: Sequence[float], *, xlabel: str, ylabel: str, title: str,
                  label: str, logx: bool = False, yerr: Sequence[float] | None = None,
                  annotations: Sequence[str] | None = None) -> Figure:
    """A line plot of one metric against one parameter, with optional error bars."""
    fig = new_figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.errorbar(x, y, yerr=yerr, marker="o", capsize=3 if yerr is not None else 0)
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(_ticker().FixedLocator(sorted(set(float(v) for v in x))))
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_minor_formatter(_ticker().NullFormatter())
    elif all(float(v).is_integer() for v in x):
        ax.xaxis.set_major_locator(_ticker().MaxNLocator(integer=True))
    if annotations:
        for xi, yi, text in zip(x, y, annotations):
            ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(3, 4), fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n{label}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if logx:
        _thin_tick_labels(fig, ax)
    return fig


def _renderer(fig: Figure):
    """Lay the figure out (constrained layout included) and return an Agg renderer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    return fig.canvas.get_renderer()


def _thin_tick_labels(fig: Figure, ax) -> None:
    """Hide x tick labels that would overlap the previous visible one (left to right)."""
    renderer = _renderer(fig)
    right = -math.inf
    for label in sorted(ax.get_xticklabels(), key=lambda t: t.get_position()[0]):
        if not label.get_text():
            continue
        box = label.get_window_extent(renderer)
        if box.x0 < right + 2:
            label.set_visible(False)
        else:
            right = box.x1


def visible_tick_boxes(fig: Figure, ax, axis: str = "x") -> list:
    """Window extents of an axis' visible, non-empty tick labels (major and minor)."""
    renderer = _renderer(fig)
    getter = ax.xaxis if axis == "x" else ax.yaxis
    labels = getter.get_ticklabels(which="both")
    return [t.get_window_extent(renderer) for t in labels if t.get_visible() and t.get_text()]


def condition_figure(outcomes, param: str, metric: str, *, label: str, logx: bool = False,
                     title: str | None = None, ylabel: str | None = None) -> Figure:
    """``metric`` against the condition parameter ``param``: the mean over every seed and
    clip of a condition with its 95 % CI (:func:`vampstudy.summary.metric_by_condition`),
    conditions in increasing ``param`` order, ``n`` in the title."""
    from .summary import metric_by_condition

    rows = metric_by_condition(outcomes, param, metric)
    x = [r["x"] for r in rows]
    y = [r["mean"] for r in rows]
    n = min((r["n"] for r in rows), default=0)
    err = [r["ci95"] or 0.0 for r in rows] if n > 1 else None
    note = f" (mean ± 95% CI, n={n})" if err else ""
    return metric_figure(x, y, yerr=err, logx=logx, xlabel=param, ylabel=ylabel or metric,
                         title=(title or f"{metric} vs {param}") + note, label=label)


def heatmap_figure(values: np.ndarray, xticks: Sequence, yticks: Sequence, *, xlabel: str,
                   ylabel: str, title: str, label: str) -> Figure:
    """A heat map of a metric over two parameters, each cell annotated."""
    fig = new_figure(figsize=(6, 4.5), layout="constrained")
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


def spectrogram_image_data(signal, max_hz: float = 11025.0, max_columns: int = 1600
                           ) -> tuple[np.ndarray, tuple, float]:
    """What :func:`spectrogram_figure` draws: ``(dB image, extent (s, s, kHz, kHz), vmax)``;
    the colour range is ``vmax - 80`` to ``vmax``."""
    db, duration, nyquist = log_spectrogram(signal)
    top = min(max_hz, nyquist)
    rows = int(math.ceil(db.shape[0] * top / nyquist))
    db = _pool_columns(db[:rows], max_columns)
    return db, (0, duration, 0, top / 1000), float(db.max())


def _spec_image(ax, signal, max_hz: float = 11025.0, max_columns: int = 1600) -> None:
    db, extent, vmax = spectrogram_image_data(signal, max_hz, max_columns)
    ax.imshow(db, aspect="auto", origin="lower", cmap="magma", vmin=vmax - 80, vmax=vmax,
              extent=extent)
    ax.set_ylabel("kHz")


def spectrogram_figure(signal, title: str, label: str) -> Figure:
    """One spectrogram (0–11 kHz, 80 dB range)."""
    fig = new_figure(figsize=(8, 3))
    _fixed_margins(fig)
    ax = fig.add_subplot()
    _spec_image(ax, signal)
    ax.set_xlabel("seconds")
    ax.set_title(f"{title} — {label}", fontsize=9)
    return fig


def spectrogram_grid_figure(items: Sequence[tuple[str, object]], label: str) -> Figure:
    """Spectrograms stacked, one per (title, signal): the notebook's comparison grid."""
    fig = new_figure(figsize=(9, 1.9 * len(items) + 0.6))
    _fixed_grid(fig, len(items), gap=0.3)
    axes = fig.subplots(len(items), 1, squeeze=False, sharex=True)[:, 0]
    for ax, (title, signal) in zip(axes, items):
        _spec_image(ax, signal)
        ax.set_title(title, fontsize=8)
    axes[-1].set_xlabel("seconds")
    fig.suptitle(f"Spectrograms — {label}", fontsize=10,
                 y=1 - 0.12 / fig.get_size_inches()[1], va="top")
    return fig


def _bitrate_panel(ax, rows: Sequence[dict], metric: str, ylabel: str,
                   intervals: dict | None = None) -> bool:
    """One panel of :func:`bitrate_quality_figure`; False when no row has ``metric``.

    ``intervals`` maps a row's label to its (low, high) interval; otherwise the row's
    ``<metric>_ci95`` half-width is drawn either side.
    """
    intervals = intervals or {}

    def err(r):
        if r.get("condition") in intervals and None not in intervals[r["condition"]]:
            low, high = intervals[r["condition"]]
            return (max(r[metric] - low, 0.0), max(high - r[metric], 0.0))
        half = r.get(f"{metric}_ci95") or 0.0
        return (half, half)

    def series(kind):
        pts = [(r["prompt_bitrate_bps_mean"], r[metric], err(r),
                r.get("condition", "")) for r in rows
               if (r.get("control") or "") == kind and r.get(metric) is not None
               and (r.get("prompt_bitrate_bps_mean") or 0) > 0]
        return sorted(pts)

    conditions, noise, codec = series(""), series("noise"), series("codec")
    if not (conditions or noise or codec):
        ax.set_axis_off()
        return False
    if conditions:
        x, y, e, names = zip(*conditions)
        ax.errorbar(x, y, yerr=np.array(e).T, marker="o", capsize=3, label="conditions (95% CI)")
        for xi, yi, name in zip(x, y, names):
            ax.annotate(name.split("=")[-1], (xi, yi), textcoords="offset points", xytext=(3, 4),
                        fontsize=7)
    if noise:
        x, y, e, _ = zip(*noise)
        ax.errorbar(x, y, yerr=np.array(e).T, marker="x", linestyle="--", color="tab:red", capsize=3,
                    label="noise baseline (random tokens)")
    for _, y, _, _ in codec[:1]:
        ax.axhline(y, color="tab:green", linestyle=":", label="codec resynthesis (ceiling)")
    ax.set_xscale("log")
    xs = sorted({float(p[0]) for p in conditions + noise})
    if xs:
        ax.xaxis.set_major_locator(_ticker().FixedLocator(xs))
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:.0f}")
    ax.xaxis.set_minor_formatter(_ticker().NullFormatter())
    ys = [p[1] for p in conditions + noise + codec[:1]]
    if min(ys) > 0 and max(ys) / min(ys) > 30:   # the noise floor would flatten the rest
        ax.set_yscale("log")
        ylabel += " (log scale)"
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    return True


def bitrate_quality_figure(rows: Sequence[dict], embedding: str, *, label: str,
                           title: str = "Prompt bitrate vs quality",
                           intervals: dict | None = None) -> Figure:
    """The paper's figure: mel distance (top), FAD and KAD (bottom) against prompt bitrate.

    ``rows`` are summary rows with ``control``, ``condition``, ``prompt_bitrate_bps_mean``,
    ``mel_distance_mean`` (+ ``_ci95``), ``fad_<embedding>`` and ``kad_<embedding>``
    (+ ``_ci95``). Conditions are points with 95 % intervals, the noise controls a dashed
    curve, the codec control a horizontal line (its bitrate is the codec's own). Rows with
    a bitrate of 0 (nothing kept) cannot sit on the log axis and are left out.
    ``intervals``: ``{"fad": {label: (low, high)}, "kad": {...}}``, the bootstrap intervals
    (asymmetric), drawn instead of the ``_ci95`` half-widths.
    """
    fig = new_figure(figsize=(9, 7), layout="constrained")
    grid = fig.add_gridspec(2, 2)
    top = fig.add_subplot(grid[0, :])
    rows = [{**r, "mel_distance": r.get("mel_distance_mean")} for r in rows]
    _bitrate_panel(top, rows, "mel_distance", "mel distance (lower = closer)")
    if top.get_legend_handles_labels()[1]:   # a study without controls may label nothing
        top.legend(fontsize=8, loc="best")
    for col, metric in enumerate(("fad", "kad")):
        ax = fig.add_subplot(grid[1, col], sharex=top)
        name = f"{metric}_{embedding}"
        if _bitrate_panel(ax, rows, name, f"{metric.upper()} ({embedding})",
                          (intervals or {}).get(metric)):
            ax.set_xlabel("prompt bitrate (bits/s, log scale)")
    fig.suptitle(f"{title}\n{label}", fontsize=10)
    return fig
