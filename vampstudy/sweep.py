"""Sweeps over VampNet's mask and sampling options: the base of most built-in studies.

A :class:`SweepStudy` runs the cartesian product of one or more options
(``build_mask`` or ``vamp`` keywords), with the study's other parameters as
the fixed options of every condition. Its analysis logs the summary table,
one plot of each metric against each swept option (means over the other
options, error bars when there are repeats) and a heat map when exactly two
options are swept.

A one-knob study is then a short file::

    class DropoutStudy(SweepStudy):
        \"\"\"Time dropout: force whole steps to be generated.\"\"\"
        name = "dropout"

        def __init__(self, values: tuple[float, ...] = (0.0, 0.2, 0.4),
                     periodic_prompt: int = 3, upper_codebook_mask: int = 3):
            self.values = values
            self.periodic_prompt = periodic_prompt
            self.upper_codebook_mask = upper_codebook_mask

        def sweep_axes(self):
            return {"_dropout": self.values}
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np

from . import plots
from .backends.base import MASK_OPTIONS, SAMPLING_OPTIONS
from .errors import ConfigError
from .study import Condition, MaskingStudy, Outcome, Session, Summary
from .listening import listening_report
from .summary import STANDARD_METRICS, standard_tables

logger = logging.getLogger(__name__)

#: Friendlier study-parameter names for VampNet's underscore options.
ALIASES = {"dropout": "_dropout", "sampling_steps": "_sampling_steps"}
OPTION_NAMES = tuple(MASK_OPTIONS) + tuple(o for o in SAMPLING_OPTIONS
                                            if o not in ("seed", "return_mask"))


def parse_value(text: str) -> Any:
    """``"3"`` → 3, ``"0.5"`` → 0.5, ``"true"`` → True, ``"none"`` → None, else the text."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


class SweepStudy(MaskingStudy):
    """Base for studies that sweep mask or sampling options (not registered itself)."""

    abstract = True
    #: metrics plotted against each swept option
    plot_metrics = ("tokens_changed_pct", "mask_density")

    def sweep_axes(self) -> dict[str, tuple]:
        """Name → values to sweep; each combination is one condition.

        Names are VampNet keywords (see :data:`OPTION_NAMES`), or names of the
        study's own that its :meth:`mask_options` translates.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement sweep_axes()")

    def fixed_options(self) -> dict:
        """Options from the study's parameters that are VampNet keywords (aliases resolved)."""
        out = {}
        for name, value in self.get_params().items():
            option = ALIASES.get(name, name)
            if option in OPTION_NAMES:
                out[option] = value
        return out

    # ------------------------------------------------------------ hooks
    def validate(self, backend) -> None:
        axes = self.sweep_axes()
        maps_own = type(self).mask_options is not SweepStudy.mask_options
        for option, values in axes.items():
            if option not in OPTION_NAMES and not maps_own:
                raise ConfigError(f"{self.name}: cannot sweep {option!r}; sweepable options: "
                                  f"{', '.join(OPTION_NAMES)}")
            if not values:
                raise ConfigError(f"{self.name}: no values given for {option}")
        options = {**self.fixed_options()}
        uppers = list(axes.get("upper_codebook_mask", [options.get("upper_codebook_mask", 3)]))
        for k in uppers:
            if not (isinstance(k, (int, np.integer)) and 1 <= k <= backend.n_codebooks):
                raise ConfigError(f"upper_codebook_mask must be an integer in "
                                  f"1..{backend.n_codebooks}, got {k}")
        for p in axes.get("periodic_prompt", [options.get("periodic_prompt", 0)]):
            if not isinstance(p, (int, np.integer)) or p < 0:
                raise ConfigError(f"periodic_prompt must be an integer >= 0, got {p}")

    def iterate(self) -> list[Condition]:
        axes = self.sweep_axes()
        names = list(axes)
        return [Condition(dict(zip(names, combo)))
                for combo in itertools.product(*(axes[n] for n in names))]

    def _options(self, condition: Condition) -> dict:
        return {**self.fixed_options(), **condition.params}

    def mask_options(self, condition: Condition) -> dict:
        return {k: v for k, v in self._options(condition).items() if k in MASK_OPTIONS}

    def sampling_options(self, condition: Condition) -> dict:
        return {k: v for k, v in self._options(condition).items()
                if k in SAMPLING_OPTIONS and k not in MASK_OPTIONS}

    def analyze(self, outcomes: list[Outcome], session: Session) -> Summary:
        label = plots.backend_label(session.backend)
        axes = self.sweep_axes()
        metrics = list(dict.fromkeys(list(STANDARD_METRICS) + [
            m for o in outcomes for m in o.metrics if "_cb" not in m]))
        tables = standard_tables(outcomes, metrics)
        rows = tables["summary"]
        figures = {}
        for option in axes:
            for metric in self.plot_metrics:
                x, y, err = self._marginal(rows, option, metric)
                if not x:
                    continue
                numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x)
                figures[f"{option.strip('_')}_vs_{metric}"] = plots.metric_figure(
                    x if numeric else list(range(len(x))), y, yerr=err,
                    xlabel=option, ylabel=metric, title=f"{self.name}: {option} vs {metric}",
                    label=label, annotations=None if numeric else [str(v) for v in x])
        if len(axes) == 2:
            (a, av), (b, bv) = axes.items()
            grid = np.full((len(av), len(bv)), np.nan)
            for row in rows:
                grid[list(av).index(row[a]), list(bv).index(row[b])] = \
                    row["tokens_changed_pct_mean"]
            figures["heatmap_tokens_changed_pct"] = plots.heatmap_figure(
                grid, list(bv), list(av), xlabel=b, ylabel=a,
                title=f"{self.name}: % tokens changed", label=label)
        report = listening_report(outcomes, session, f"{self.name}: listening report")
        return Summary(tables=tables, figures=figures, texts={"report.html": report})

    @staticmethod
    def _marginal(rows: list[dict], option: str, metric: str):
        """Mean of a metric per value of one option (over the other options)."""
        values: dict[Any, list[float]] = {}
        for row in rows:
            mean = row.get(f"{metric}_mean")
            if mean is not None:
                values.setdefault(row[option], []).append(mean)
        x = list(values)
        y = [float(np.mean(v)) for v in values.values()]
        ci = [row.get(f"{metric}_ci95") for row in rows]
        err = None
        if len(rows) == len(x) and all(c is not None for c in ci):
            err = ci
        return x, y, err
