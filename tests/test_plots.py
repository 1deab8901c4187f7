"""Image tests of the figure builders: tick labels, mask grid edges, aggregation helper."""

import numpy as np
import pytest
import torch

from vampstudy import plots
from vampstudy.study import Condition, Outcome, PreparedClip, Trial
from vampstudy.summary import mean_ci

NOTEBOOK = [2, 3, 5, 7, 10, 13, 20, 30, 50, 70, 100]


def _overlaps(boxes) -> list:
    boxes = sorted(boxes, key=lambda b: b.x0)
    return [(a, b) for a, b in zip(boxes, boxes[1:]) if b.x0 < a.x1]


@pytest.mark.parametrize("width", [6, 3.5])
def test_log_axis_tick_labels_do_not_overlap(width):
    fig = plots.metric_figure(NOTEBOOK, np.linspace(80, 99, 11), xlabel="P", ylabel="%",
                              title="t", label="backend: test", logx=True,
                              annotations=[f"{p} ms" for p in NOTEBOOK])
    fig.set_size_inches(width, 4)
    ax = fig.axes[0]
    plots._thin_tick_labels(fig, ax)
    boxes = plots.visible_tick_boxes(fig, ax)
    assert boxes and not _overlaps(boxes)
    shown = [t.get_text() for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
    assert shown[0] == "2" and shown[-1] == "100"
    if width == 6:   # at the default size every interval is labelled, 3, 13 and 70 included
        assert shown == [str(p) for p in NOTEBOOK]


def test_mask_grid_has_no_white_strip_at_the_right_edge():
    masks = []
    for p in (2, 7, 100):
        m = torch.ones(1, 14, 300, dtype=torch.long)
        m[..., ::p] = 0
        masks.append((f"P={p}", m))
    masks.append(("short", torch.ones(1, 14, 150, dtype=torch.long)))
    fig = plots.mask_grid_figure(masks, "backend: test")
    for ax in fig.axes[:3]:   # the full-length masks (the short one is shorter by data)
        image = ax.get_images()[0]
        left, right = image.get_extent()[:2]
        x0, x1 = ax.get_xlim()
        assert x0 >= left - 1e-9 and x1 <= right + 1e-9, (ax.get_title(), (x0, x1), (left, right))
    # rendered: the last panel's rightmost pixel column inside the axes is not white
    renderer = plots._renderer(fig)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    box = fig.axes[-2].get_window_extent(renderer)      # a full-width (300-step) panel
    height = rgba.shape[0]
    col = rgba[int(height - box.y1) + 2:int(height - box.y0) - 2, int(box.x1) - 2, :3]
    assert (col < 250).any(), "white strip at the right edge of the mask panel"


def test_integer_values_get_integer_ticks():
    fig = plots.metric_figure([1, 2, 3, 4], [0.1, 0.3, 0.2, 0.5], xlabel="steps", ylabel="y",
                              title="t", label="l")
    plots._renderer(fig)
    locs = [v for v in fig.axes[0].get_xticks() if 1 <= v <= 4]
    assert locs and all(float(v).is_integer() for v in locs)


def _outcome(interval, seed, clip, value):
    clip = PreparedClip(clip, {"sha256": clip}, None, None)
    o = Outcome(metrics={"tokens_changed_pct": value})
    o.trial = Trial(Condition({"interval": interval}), clip, seed)
    return o


def test_condition_figure_pools_seeds_and_clips_in_condition_order():
    rng = np.random.default_rng(0)
    outcomes = [_outcome(p, s, c, 50 + p / 2 + rng.normal())
                for s in (2, 0, 1) for c in ("a", "b") for p in (13, 2, 100, 7)]
    fig = plots.condition_figure(outcomes, "interval", "tokens_changed_pct", label="l", logx=True)
    line = fig.axes[0].lines[0]
    x, y = line.get_xdata(), line.get_ydata()
    assert list(x) == [2, 7, 13, 100]                  # sorted: no zig-zag
    expected = mean_ci([o.metrics["tokens_changed_pct"] for o in outcomes
                        if o.trial.condition.params["interval"] == 13])
    assert y[2] == pytest.approx(expected["mean"]) and expected["n"] == 6
    assert fig.axes[0].containers[0].has_yerr
    assert "n=6" in fig.axes[0].get_title()


def test_reused_trial_figures_are_the_pngs_of_fresh_figures():
    """vampstudy.trialfigures draws each trial on the last trial's figure: the PNG must be
    byte for byte what a figure built for that trial alone gives (data, colour range, title)."""
    from audiotools import AudioSignal

    from vampstudy import trialfigures

    gen = torch.Generator().manual_seed(0)
    sr = 44100
    # two lengths (two layouts), interleaved, and loud/quiet signals (different colour ranges)
    signals = [AudioSignal(torch.randn(1, 1, n, generator=gen) * gain, sr)
               for n, gain in ((3 * sr, 0.5), (2 * sr, 0.1), (3 * sr, 0.01), (2 * sr, 0.3))]
    masks = [(torch.rand(1, 14, n, generator=gen) > p).long()
             for n, p in ((300, 0.5), (150, 0.9), (300, 0.1), (150, 0.5))]
    for i, (signal, mask) in enumerate(zip(signals, masks)):
        title, label = f"condition {i}", f"backend: test {i % 2}"
        fresh = plots.RenderedFigure.of(plots.mask_figure(mask, title, label)).png
        assert trialfigures.mask_png(mask, title, label).png == fresh, i
        fresh = plots.RenderedFigure.of(plots.spectrogram_figure(signal, title, label)).png
        assert trialfigures.spectrogram_png(signal, title, label).png == fresh, i
    assert len(trialfigures._FIGURES) <= trialfigures.KEPT
