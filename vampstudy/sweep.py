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
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import plots
from .backends.base import MASK_OPTIONS, SAMPLING_OPTIONS
from .errors import ConfigError
from .study import Condition, MaskingStudy, Outcome, Session, Summary
from .listening import listening_report_file
from .summary import STANDARD_METRICS, standard_tables

logger = logging.getLogger(__name__)

#: Friendlier study-parameter names for VampNet's underscore options.
ALIASES = {"dropout": "_dropout", "sampling_steps": "_sampling_steps"}
OPTION_NAMES = tuple(MASK_OPTIONS) + tuple(o for o in SAMPLING_OPTIONS
                                            if o not in ("seed", "return_mask"))


@dataclass(frozen=True)
class Range:
    """The values an option accepts: a kind and optional bounds.

    ``high="n_codebooks"`` stands for the backend's number of codebooks; ``open_low``
    excludes ``low`` itself; ``none_ok`` also accepts None (the option switched off).
    """

    kind: type
    low: float | None = None
    high: float | str | None = None
    open_low: bool = False
    none_ok: bool = False

    def describe(self, n_codebooks: int | None = None) -> str:
        if self.kind is bool:
            return "true or false"
        noun = "an integer" if self.kind is int else "a number"
        high = n_codebooks if self.high == "n_codebooks" else self.high
        if self.low is not None and high is not None:
            text = (f"{noun} in {self.low}..{high}" if self.kind is int
                    else f"{noun} in [{self.low:g}, {high:g}]")
        elif self.low is not None:
            text = f"{noun} {'>' if self.open_low else '>='} {self.low:g}"
        else:
            text = noun
        return text + (" or none" if self.none_ok else "")

    def check(self, value, n_codebooks: int | None = None) -> bool:
        """True when ``value`` is acceptable."""
        if value is None:
            return self.none_ok
        if self.kind is bool:
            return isinstance(value, (bool, np.bool_))
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            return False
        if self.kind is int and not isinstance(value, (int, np.integer)):
            return False
        if not math.isfinite(float(value)):
            return False
        high = n_codebooks if self.high == "n_codebooks" else self.high
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return high is None or value <= high


#: What each VampNet option accepts (see shared/VAMPNET.md for their meaning).
OPTION_RANGES: dict[str, Range] = {
    "rand_mask_intensity": Range(float, 0.0, 1.0),
    "prefix_s": Range(float, 0.0),
    "suffix_s": Range(float, 0.0),
    "periodic_prompt": Range(int, 0),
    "periodic_prompt_width": Range(int, 1),
    "onset_mask_width": Range(int, 0),
    "_dropout": Range(float, 0.0, 1.0),
    "upper_codebook_mask": Range(int, 1, "n_codebooks"),
    "ncc": Range(int, 0, "n_codebooks"),
    "temperature": Range(float, 0.0),
    "typical_filtering": Range(bool),
    "typical_mass": Range(float, 0.0, 1.0),
    "typical_min_tokens": Range(int, 1),
    "top_p": Range(float, 0.0, 1.0, none_ok=True),
    "_sampling_steps": Range(int, 1),
    "mask_temperature": Range(float, 0.0),
    "sample_cutoff": Range(float, 0.0, 1.0),
    "causal_weight": Range(float),
    "cfg_scale": Range(float),
    "cfg_guidance": Range(float, none_ok=True),
    "batch_size": Range(int, 1),
    "feedback_steps": Range(int, 1),
    "time_stretch_factor": Range(float, 0.0, open_low=True),
}


def flag(name: str) -> str:
    """The command-line option of a study parameter: ``_dropout`` → ``--dropout``."""
    return "--" + name.strip("_").replace("_", "-")


def check_value(option: str, value, rng: Range, where: str, n_codebooks: int | None = None) -> None:
    """Raise a :class:`ConfigError` naming ``where`` (the CLI option) unless ``rng`` accepts ``value``."""
    if not rng.check(value, n_codebooks):
        shown = repr(value) if isinstance(value, str) else value
        what = f"{where}" if where.endswith(option) else f"{where}: {option}"
        raise ConfigError(f"{what} must be {rng.describe(n_codebooks)}, got {shown}",
                          option=where.split(" ")[0] if where.startswith("--") else None)


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


def averaging_notes(axes: dict) -> list[str]:
    """One line per swept option whose plots average over the other swept options."""
    if len(axes) < 2:
        return []
    lines = []
    for option in axes:
        others = [f"{o} ({len(v)} values)" for o, v in axes.items() if o != option]
        lines.append(f"plots of {option} show the mean over the other swept options: "
                     f"{', '.join(others)}; the summary table has every combination")
    return lines


class SweepStudy(MaskingStudy):
    """Base for studies that sweep mask or sampling options (not registered itself)."""

    abstract = True
    #: metrics plotted against each swept option
    plot_metrics = ("tokens_changed_pct", "mask_density")
    #: ranges of the study's own parameters that are not VampNet options (name → Range)
    param_ranges: dict = {}

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

    def axis_flag(self, option: str, values) -> str:
        """The command-line option that gave an axis its values (for error messages)."""
        for name, value in self.get_params().items():
            if isinstance(value, (list, tuple)) and tuple(value) == tuple(values):
                return flag(name)
        return flag(option)

    # ------------------------------------------------------------ hooks
    def validate(self, backend) -> None:
        """Every swept and fixed value against :data:`OPTION_RANGES` and :attr:`param_ranges`.

        Raises :class:`ConfigError` naming the command-line option and the allowed range,
        before any run is created.
        """
        axes = self.sweep_axes()
        maps_own = type(self).mask_options is not SweepStudy.mask_options
        n = backend.n_codebooks
        for option, values in axes.items():
            where = self.axis_flag(option, values)
            if option not in OPTION_NAMES and not maps_own:
                raise ConfigError(f"{where}: cannot sweep {option!r}; sweepable options: "
                                  f"{', '.join(OPTION_NAMES)}", option=where.split(" ")[0])
            if not values:
                raise ConfigError(f"{where}: no values given for {option}",
                                  option=where.split(" ")[0])
            if len({repr(v) for v in values}) != len(values):
                raise ConfigError(f"{where}: {option} lists a value twice: "
                                  f"{', '.join(map(str, values))}", option=where.split(" ")[0])
            rng = OPTION_RANGES.get(option) or self.param_ranges.get(option)
            for v in values if rng is not None else ():
                check_value(option, v, rng, where, n)
        for name, value in self.get_params().items():
            option = ALIASES.get(name, name)
            rng = OPTION_RANGES.get(option) or self.param_ranges.get(name)
            if rng is not None and option not in axes and not isinstance(value, (list, tuple)):
                check_value(option, value, rng, flag(name), n)
        for option, value in self.fixed_options().items():  # constants a subclass adds
            if option in OPTION_RANGES and option not in axes:
                check_value(option, value, OPTION_RANGES[option], f"{self.name} ({option})", n)

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
        rows = [r for r in tables["summary"] if not r["control"]]   # controls: tables only
        figures = {}
        notes = averaging_notes(axes)
        for line in notes:
            logger.info(line)
        for option in axes:
            others = [o for o in axes if o != option]
            for metric in self.plot_metrics:
                x, y, err = self._marginal(rows, option, metric)
                if not x:
                    continue
                numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x)
                title = f"{self.name}: {option} vs {metric}"
                if others:
                    title += f"\n(mean over {', '.join(others)})"
                figures[f"{option.strip('_')}_vs_{metric}"] = plots.metric_figure(
                    x if numeric else list(range(len(x))), y, yerr=err,
                    xlabel=option, ylabel=metric, title=title,
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
        report = listening_report_file(outcomes, session, f"{self.name}: listening report")
        texts = {"observations.txt": "\n".join(notes) + "\n"} if notes else {}
        summary = Summary(tables=tables, figures=figures, texts=texts, files={"report.html": report})
        return self.add_evidence(summary, outcomes, session)

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
