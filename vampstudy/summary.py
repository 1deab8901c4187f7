"""Summaries across outcomes: per-condition statistics and plain-language observations.

``condition_table`` groups outcomes by condition and reports, per metric, the
mean, the sample standard deviation (ddof=1), n, and the half-width of the
95 % confidence interval of the mean (Student t, ``t(0.975, n-1) * sd / sqrt(n)``);
with one observation the spread and interval are left empty.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

#: The metrics every masking study summarises (token metrics, then audio fidelity).
STANDARD_METRICS = ("mask_density", "tokens_changed_pct", "masked_changed_pct", "kept_changed_pct",
                    "prompt_bitrate_bps", "mel_distance", "chroma_similarity", "onset_correlation",
                    "tempo_difference_bpm", "visqol_moslqo")


def mean_ci(values: Sequence[float]) -> dict:
    """``mean``, ``std`` (ddof=1), ``n`` and ``ci95`` (half-width) of finite values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return {"mean": None, "std": None, "n": 0, "ci95": None}
    if n == 1:
        return {"mean": float(v[0]), "std": None, "n": 1, "ci95": None}
    from scipy import stats  # here, not at import: a one-seed study never needs it

    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    return {"mean": float(v.mean()), "std": sd, "n": n, "ci95": half}


def condition_table(outcomes, metrics: Sequence[str]) -> list[dict]:
    """One row per condition and control run (in first-seen order): ``condition`` (its
    label, e.g. ``interval=2``, ``noise interval=2``, ``codec``), ``control`` (empty,
    ``codec`` or ``noise``), its params, n, and statistics per metric."""
    groups: dict[str, list] = {}
    for o in outcomes:
        groups.setdefault(o.trial.condition.key, []).append(o)
    rows = []
    for group in groups.values():
        condition = group[0].trial.condition
        row = {"condition": condition.name, "control": condition.control,
               **{k: v for k, v in condition.params.items() if k != "control"}}
        row["n"] = len(group)
        for m in metrics:
            st = mean_ci([o.metrics.get(m, float("nan")) for o in group])
            for k in ("mean", "std", "ci95"):
                row[f"{m}_{k}"] = None if st[k] is None else round(st[k], 4)
        rows.append(row)
    return rows


def metric_by_condition(outcomes, param: str, metric: str) -> list[dict]:
    """Per value of the condition parameter ``param`` (sorted, numbers numerically): ``x``,
    and the ``mean``, ``std``, ``n`` and ``ci95`` of ``metric`` over every seed and clip.

    Trials are pooled by ``param`` alone; conditions that differ in other params are
    averaged together.
    """
    groups: dict = {}
    for o in outcomes:
        value = o.trial.condition.params.get(param, o.params.get(param))
        if value is None or metric not in o.metrics:
            continue
        groups.setdefault(value, []).append(o.metrics[metric])

    def order(v):
        return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) \
            else (1, 0.0, str(v))

    return [{"x": v, **mean_ci(groups[v])} for v in sorted(groups, key=order)]


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v))
    sorted_v = v[order]
    start = 0
    for end in range(1, len(v) + 1):
        if end == len(v) or sorted_v[end] != sorted_v[start]:
            ranks[order[start:end]] = (start + end + 1) / 2   # mean of ranks start+1 .. end
            start = end
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation: the Pearson correlation of the average ranks of ``x``
    and ``y`` (NaN when undefined: fewer than 3 points, or either side constant)."""
    if len(x) < 3 or len(set(y)) < 2 or len(set(x)) < 2:
        return float("nan")
    return float(np.corrcoef(average_ranks(x), average_ranks(y))[0, 1])


def observations(rows: list[dict], rho: float, backend) -> str:
    """The notebook's printed summary and closing observation, as text."""
    who = "VampNet" if backend.is_vampnet else f"the {backend.name} backend (not VampNet)"
    lines = [f"Results with {who}:"]
    for r in rows:
        changed = r["tokens_changed_pct_mean"]
        lines.append(
            f"  interval {r['interval']:>4} ({r['interval_ms']:7.1f} ms): density "
            f"{r['mask_density_mean']:.3f} (expected {r['expected_density']:.3f}), "
            f"tokens changed {changed:5.1f}%" + (f" ± {r['tokens_changed_pct_ci95']:.1f}"
                                                  if r.get("tokens_changed_pct_ci95") else ""))
    if np.isfinite(rho):
        if rho > 0.5:
            trend = "rises with the prompt interval: small intervals stay closer to the original"
        elif rho < -0.5:
            trend = "falls as the prompt interval grows: large intervals stay closer"
        else:
            trend = "shows no clear trend with the prompt interval"
        lines.append(f"Observation: % tokens changed {trend} (Spearman rho = {rho:.2f}).")
    return "\n".join(lines)


# ----------------------------------------------------------------- paired
def paired_comparison(outcomes, key_a: str, key_b: str, metric: str, n_boot: int = 10000,
                      seed: int = 0) -> dict:
    """Compare two conditions on a metric, paired by (clip, seed).

    Returns the number of pairs ``n``, the mean paired difference (b − a), its
    95 % bootstrap confidence interval (percentile method, ``n_boot`` resamples
    of the pairs), the two-sided Wilcoxon signed-rank p-value, and ``differs``:
    True when the interval excludes 0. With every difference 0 the interval is
    [0, 0], p is 1 and nothing differs.
    """
    def by_pair(key):
        return {(o.trial.clip.identity["sha256"], o.trial.seed): o.metrics.get(metric)
                for o in outcomes if o.trial.condition.key == key}

    a, b = by_pair(key_a), by_pair(key_b)
    pairs = [k for k in a if k in b and a[k] is not None and b[k] is not None
             and np.isfinite(a[k]) and np.isfinite(b[k])]
    d = np.array([b[k] - a[k] for k in pairs], dtype=float)
    n = len(d)
    if n == 0:
        return {"n": 0, "mean_diff": None, "ci_low": None, "ci_high": None, "p_value": None,
                "differs": None}
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    low, high = (float(v) for v in np.percentile(boots, [2.5, 97.5]))
    if np.allclose(d, 0):
        p = 1.0
    elif n >= 2:
        from scipy import stats

        p = float(stats.wilcoxon(d, zero_method="zsplit").pvalue)
    else:
        p = None
    return {"n": n, "mean_diff": float(d.mean()), "ci_low": low, "ci_high": high, "p_value": p,
            "differs": bool(n >= 2 and (low > 0 or high < 0))}


def neighbour_comparisons(outcomes, metric: str = "tokens_changed_pct") -> list[dict]:
    """Paired comparisons of each condition with the next (in run order); controls excluded."""
    order: dict[str, object] = {}
    for o in outcomes:
        if not o.trial.condition.control:
            order.setdefault(o.trial.condition.key, o.trial.condition)
    conditions = list(order.values())
    rows = []
    for a, b in zip(conditions, conditions[1:]):
        result = paired_comparison(outcomes, a.key, b.key, metric)
        if result["n"] < 2:
            continue
        rows.append({"a": a.name, "b": b.name, "metric": metric,
                     **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()}})
    return rows


#: Metrics on which each condition is compared with its own noise control (lower is closer).
NOISE_COMPARISON_METRICS = ("mel_distance",)


def noise_comparisons(outcomes, metrics: Sequence[str] = NOISE_COMPARISON_METRICS) -> list[dict]:
    """Each condition paired with its own ``noise`` control (same clip, seed and mask).

    ``mean_diff`` is noise − condition: for a distance, a positive difference whose
    interval excludes 0 (``differs``) says the model beats random tokens at that density.
    """
    noise = {o.trial.condition.base.key: o.trial.condition for o in outcomes
             if o.trial.condition.control == "noise" and o.trial.condition.base is not None}
    conditions: dict[str, object] = {}
    for o in outcomes:
        if not o.trial.condition.control and o.trial.condition.key in noise:
            conditions.setdefault(o.trial.condition.key, o.trial.condition)
    rows = []
    for key, condition in conditions.items():
        for metric in metrics:
            result = paired_comparison(outcomes, key, noise[key].key, metric)
            if result["n"] == 0:
                continue
            rows.append({"a": condition.name, "b": noise[key].name, "metric": metric,
                         **{k: (round(v, 4) if isinstance(v, float) else v)
                            for k, v in result.items()}})
    return rows


def standard_tables(outcomes, metrics) -> dict[str, list[dict]]:
    """The tables every study logs: pooled summary, per-clip summary (several clips),
    paired comparisons of neighbouring conditions (repeats or several clips; controls
    excluded) and of each condition with its own noise control (when controls ran)."""
    tables = {"summary": condition_table(outcomes, metrics)}
    clips = list(dict.fromkeys(o.trial.clip.name for o in outcomes))
    if len(clips) > 1:
        rows = []
        for clip in clips:
            for row in condition_table([o for o in outcomes if o.trial.clip.name == clip], metrics):
                rows.append({"clip": clip, **row})
        tables["summary_by_clip"] = rows
    paired = neighbour_comparisons(outcomes)
    if paired:
        tables["paired_comparisons"] = paired
    versus_noise = noise_comparisons(outcomes)
    if versus_noise:
        tables["noise_comparisons"] = versus_noise
    return tables
