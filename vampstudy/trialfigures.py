"""The two figures every masking trial carries (its mask, its output's spectrogram), drawn
on reused figure objects and rendered to PNG at once.

A trial's figure differs from the last trial's of the same clip only in its image data,
colour range and title, so the figure built for the first trial is kept and, for the
next ones, given the new data and drawn again: its axes, ticks, labels and text layout
are not built anew. The PNG is the one :func:`vampstudy.plots.mask_figure` or
:func:`vampstudy.plots.spectrogram_figure` would give (the same pixels; tested).

Figures are kept per layout (image shape, extent, label) for the last
:data:`KEPT` layouts; drawing is serialised by one lock (a figure is drawn by one
thread at a time).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from . import plots

#: How many figure layouts are kept for reuse.
KEPT = 6

_FIGURES: "OrderedDict[tuple, object]" = OrderedDict()
_LOCK = threading.Lock()


def _reused(key: tuple, build, update) -> "plots.RenderedFigure":
    """Render the kept figure of ``key`` after ``update(figure)``, or ``build()`` a new one."""
    with _LOCK:
        fig = _FIGURES.get(key)
        if fig is None:
            fig = _FIGURES[key] = build()
            while len(_FIGURES) > KEPT:
                _FIGURES.popitem(last=False)
        else:
            update(fig)
        _FIGURES.move_to_end(key)
        return plots.RenderedFigure.of(fig)


def mask_png(mask, title: str, label: str, n_codebooks: int = 4,
             n_steps: int = 200) -> "plots.RenderedFigure":
    """:func:`vampstudy.plots.mask_figure` of ``mask``, rendered."""
    data = plots.mask_image_data(mask, n_codebooks, n_steps)

    def update(fig):
        ax = fig.axes[0]
        ax.images[0].set_data(data)
        ax.title.set_text(title)

    return _reused(("mask", data.shape, label, n_codebooks, n_steps),
                   lambda: plots.mask_figure(mask, title, label, n_codebooks, n_steps), update)


def spectrogram_png(signal, title: str, label: str) -> "plots.RenderedFigure":
    """:func:`vampstudy.plots.spectrogram_figure` of ``signal``, rendered."""
    data, extent, vmax = plots.spectrogram_image_data(signal)

    def update(fig):
        ax = fig.axes[0]
        image = ax.images[0]
        image.set_data(data)
        image.set_clim(vmax - 80, vmax)
        ax.title.set_text(f"{title} — {label}")

    def build():
        return plots.spectrogram_figure(signal, title, label)

    return _reused(("spectrogram", data.shape, extent, label), build, update)
