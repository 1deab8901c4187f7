"""A ready comparison in the MLflow UI: the runs view a study's URL opens.

MLflow's UI (3.x) restores a *shared view* when its URL carries
``viewStateShareKey=<key>``: it reads the experiment tag
``mlflow.sharedViewState.<key>`` and applies the search facets
(filter, sort) and UI state (visible columns, grouping, charts) stored there.
:func:`comparison_view` builds that state for a finished study, from its
outcomes alone (pure, no I/O); :func:`vampstudy.sharedviews.save_view`
stores it. The view shows

* this study's runs only (its run and its conditions, filtered by the
  configuration hash), sorted by condition;
* columns for the parameters that vary (e.g. ``interval``, ``interval_ms``)
  and the key metrics (% tokens changed, mask density, mel distance, …),
  instead of MLflow's default of none;
* every run in the charts (MLflow's default shows the first 10), with the
  study's key charts first: condition vs % tokens changed, mask density vs
  % tokens changed, condition vs mel distance and chroma similarity.

Field names follow MLflow 3.17's UI source (``ExperimentPageUIState``,
``ExperimentPageSearchFacetsState``, ``RunsChartsScatterCardConfig``).
Fields MLflow does not take from a shared view (expanded rows, pinned and
hidden runs) are not set.
"""

from __future__ import annotations

import math
from typing import Sequence

from .sharedviews import save_view
from .summary import STANDARD_METRICS

#: Metrics shown as columns, in this order, when a study logs them.
KEY_METRICS = ("tokens_changed_pct", "mask_density", "masked_changed_pct", "mel_distance",
               "chroma_similarity", "visqol_moslqo", "listen_mean")
#: At most this many metric columns (custom metrics after the key ones).
MAX_METRIC_COLUMNS = 10
SECTION_ID = "vampstudy-key-charts"


def view_key(parent_run_id: str) -> str:
    """The shared-view key of a study run (stable: re-saving replaces the view)."""
    return f"vampstudy-{parent_run_id}"


def column(kind: str, name: str) -> str:
    """MLflow's canonical column key, e.g. ``params.`interval```."""
    return f"{kind}.`{name}`"


def _logged_params(o) -> dict:
    """The params that vary per trial on a child run (condition, derived, seed, clip)."""
    return {**o.trial.condition.params, **o.params, "seed": o.trial.seed, "clip": o.trial.clip.name}


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    try:
        return math.isfinite(float(str(value)))
    except ValueError:
        return False


def varying_params(outcomes) -> list[str]:
    """Params whose value differs between trials: condition params first, then params
    the study derived (e.g. ``interval_ms``), then ``seed`` and ``clip``."""
    order: dict[str, set] = {}
    for o in outcomes:
        for k, v in _logged_params(o).items():
            order.setdefault(k, set()).add(str(v))
    condition = list(dict.fromkeys(k for o in outcomes for k in o.trial.condition.params))
    rest = [k for k in order if k not in condition and k not in ("seed", "clip")]
    names = condition + rest + ["seed", "clip"]
    return [k for k in names if k in order and (len(order[k]) > 1 or k in condition)]


def key_metrics(outcomes, metrics: Sequence[str] | None = None) -> list[str]:
    """Metric columns: ``metrics`` if given, else the key metrics the outcomes carry and then
    their other scalar metrics (no per-codebook ones), at most :data:`MAX_METRIC_COLUMNS`."""
    present = list(dict.fromkeys(m for o in outcomes for m in o.metrics
                                 if "_cb" not in m and "_by_codebook" not in m))
    if metrics:
        return [m for m in metrics if m in present]
    ordered = [m for m in KEY_METRICS if m in present]
    ordered += [m for m in present if m not in ordered and m not in STANDARD_METRICS]
    return ordered[:MAX_METRIC_COLUMNS]


def condition_axis(outcomes) -> str | None:
    """The numeric param to plot conditions along: the first condition param whose values are
    all numbers, else a numeric param the study derived from it (``interval`` given as
    ``beat`` → ``interval_tokens``); None when there is none."""
    params = varying_params(outcomes)
    condition = [k for k in params if any(k in o.trial.condition.params for o in outcomes)]
    preferred = [f"{k}_tokens" for k in condition if f"{k}_tokens" in params]
    for name in condition + preferred + params:
        if name in ("seed", "clip"):
            continue
        values = [_logged_params(o).get(name) for o in outcomes]
        if all(v is not None and _is_number(v) for v in values) and len({str(v) for v in values}) > 1:
            return name
    return None


def order_metric(outcomes, axis: str | None) -> str | None:
    """A metric that sorts runs in condition order: one that is constant within each
    condition and strictly increases with ``axis`` (MLflow sorts params as text, so a
    numeric param cannot sort itself: ``100`` < ``2``). None when there is none."""
    if axis is None:
        return None
    by_value: dict[float, dict[str, set]] = {}
    for o in outcomes:
        x = float(_logged_params(o)[axis])
        slot = by_value.setdefault(x, {})
        for m, v in o.metrics.items():
            if "_cb" not in m and isinstance(v, (int, float)) and math.isfinite(v):
                slot.setdefault(m, set()).add(round(float(v), 9))
    xs = sorted(by_value)
    designed = ("expected_density", "mask_density")   # set by the condition, not the model
    candidates = [m for m in designed + KEY_METRICS if all(m in by_value[x] for x in xs)]
    candidates += sorted(set.intersection(*(set(by_value[x]) for x in xs)) - set(candidates)) if xs else []
    for m in candidates:
        values = [by_value[x][m] for x in xs]
        if all(len(v) == 1 for v in values):
            seq = [next(iter(v)) for v in values]
            if all(a < b for a, b in zip(seq, seq[1:])):
                return m
    return None


def _scatter(uuid: str, x: tuple[str, str], y: tuple[str, str], n_runs: int,
             title: str = "") -> dict:
    card = {"uuid": uuid, "type": "SCATTER", "deleted": False, "isGenerated": False,
            "metricSectionId": SECTION_ID, "runsCountToCompare": max(100, n_runs),
            "xaxis": {"key": x[1], "type": x[0]}, "yaxis": {"key": y[1], "type": y[0]}}
    if title:
        card["displayName"] = title
    return card


def key_charts(outcomes, axis: str | None, metrics: Sequence[str], n_runs: int) -> list[dict]:
    """Scatter charts of every run: condition vs the key metrics, and mask density vs
    % tokens changed (the notebook's two plots first)."""
    charts = []
    primary = metrics[0] if metrics else None
    if axis and primary:
        charts.append(_scatter("vampstudy-axis-primary", ("PARAM", axis), ("METRIC", primary),
                               n_runs, f"{axis} vs {primary}"))
    if "mask_density" in metrics and primary and primary != "mask_density":
        charts.append(_scatter("vampstudy-density-primary", ("METRIC", "mask_density"),
                               ("METRIC", primary), n_runs, f"mask_density vs {primary}"))
    if axis:
        for m in ("mel_distance", "chroma_similarity"):
            if m in metrics and m != primary:
                charts.append(_scatter(f"vampstudy-axis-{m}", ("PARAM", axis), ("METRIC", m),
                                       n_runs, f"{axis} vs {m}"))
    return charts


def comparison_view(study, outcomes, metrics: Sequence[str] | None = None,
                    config_hash: str | None = None) -> dict:
    """The MLflow runs-view state for a finished study (see the module docstring).

    Parameters
    ----------
    study : Study
        The study (its name titles the charts section).
    outcomes : list of Outcome
        Every finished outcome (``trial`` set); their params and metrics choose the
        columns, the chart axis and the sort order.
    metrics : sequence of str, optional
        Metric columns to show, in order (default: :func:`key_metrics`).
    config_hash : str, optional
        The study's configuration hash (tag ``vampstudy.config_hash``): the view then
        shows this study's runs only (its run and its conditions, also across resumes).

    Returns
    -------
    dict
        Search facets and UI state, JSON-serialisable, for
        :func:`vampstudy.sharedviews.save_view`.
    """
    outcomes = [o for o in outcomes if o.trial is not None]
    params = varying_params(outcomes)
    shown = key_metrics(outcomes, metrics)
    axis = condition_axis(outcomes)
    sort_by = order_metric(outcomes, axis)
    n_runs = len(outcomes) + 1
    name = getattr(study, "name", type(study).__name__)
    state: dict = {
        "orderByKey": column("metrics", sort_by) if sort_by else "attributes.start_time",
        "orderByAsc": True,
        "selectedColumns": [column("params", p) for p in params]
                           + [column("metrics", m) for m in shown],
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": key_charts(outcomes, axis, shown, n_runs),
        "compareRunSections": [
            {"uuid": SECTION_ID, "name": f"{name}: key charts", "display": True,
             "isReordered": True},
            {"uuid": "vampstudy-model-metrics", "name": "Model metrics", "display": False,
             "isReordered": False},
            {"uuid": "vampstudy-system-metrics", "name": "System metrics", "display": False,
             "isReordered": False},
        ],
        "isAccordionReordered": True,
        "hideEmptyCharts": True,
        "useGroupedValuesInCharts": False,
        "viewMaximized": False,
        "runListHidden": False,
        "chartsSearchFilter": "",
    }
    if config_hash:
        state["searchFilter"] = f"tags.`vampstudy.config_hash` = '{config_hash}'"
    return state


def with_columns(state: dict, metrics: Sequence[str]) -> dict:
    """A copy of a view state showing the metric columns ``metrics`` too (e.g. ``listen_mean``
    and ``listen_ci95`` after a listening test), each once, after the columns it had."""
    columns = list(state.get("selectedColumns", []))
    columns += [column("metrics", m) for m in metrics if column("metrics", m) not in columns]
    return {**state, "selectedColumns": columns}


def save_comparison_view(tracker, experiment_id: str, parent_run_id: str, study,
                         outcomes, metrics: Sequence[str] | None = None) -> str:
    """Build the study's comparison view and store it on the experiment; returns its key,
    for :func:`vampstudy.sharedviews.ui_url` (``view_key=``)."""
    tags = tracker.get_run(parent_run_id).data.tags
    state = comparison_view(study, outcomes, metrics, tags.get("vampstudy.config_hash"))
    name = f"{getattr(study, 'name', 'study')} · {parent_run_id[:8]}"
    return save_view(tracker, experiment_id, state, view_key(parent_run_id), name)
