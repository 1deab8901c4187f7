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
from scipy import stats


def mean_ci(values: Sequence[float]) -> dict:
    """``mean``, ``std`` (ddof=1), ``n`` and ``ci95`` (half-width) of finite values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return {"mean": None, "std": None, "n": 0, "ci95": None}
    if n == 1:
        return {"mean": float(v[0]), "std": None, "n": 1, "ci95": None}
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    return {"mean": float(v.mean()), "std": sd, "n": n, "ci95": half}


def condition_table(outcomes, metrics: Sequence[str]) -> list[dict]:
    """One row per condition (in first-seen order): its params, n, and statistics per metric."""
    groups: dict[str, list] = {}
    for o in outcomes:
        groups.setdefault(o.trial.condition.key, []).append(o)
    rows = []
    for group in groups.values():
        row = dict(group[0].trial.condition.params)
        row["n"] = len(group)
        for m in metrics:
            st = mean_ci([o.metrics.get(m, float("nan")) for o in group])
            for k in ("mean", "std", "ci95"):
                row[f"{m}_{k}"] = None if st[k] is None else round(st[k], 4)
        rows.append(row)
    return rows


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (NaN when undefined)."""
    if len(x) < 3 or len(set(y)) < 2:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


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
