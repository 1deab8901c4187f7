"""Post-screening and statistics of MUSHRA ratings, as ITU-R BS.1534-3 says (pure functions).

Input: rating rows (``rater_id, item, condition, role, score, training``). Training
ratings are never analysed. When a design is blocked an item's hidden reference and
anchors are heard once per block; a rater's *item score* for a condition is the mean
of their ratings of it on that item.

Definitions
-----------
Screening (BS.1534-3 §4.1.2)
    A rater is excluded who scores the hidden reference below 90 on more than 15 %
    of the items they rated, or the 7 kHz anchor above 90 on more than 15 % of them.
    For the anchor rule, items on which more than 25 % of the raters score the
    7 kHz anchor above 90 are not counted (the anchor did not degrade that item).
Mean and 95 % CI
    Over the retained raters' item scores of a condition: mean ± t(0.975, n−1)·s/√n
    (``ci95`` is the half-width).
Median and IQR
    Numpy's linear-interpolation quartiles of the same scores; IQR = q3 − q1.
Friedman test
    Conditions (role ``condition``) as treatments, each (rater, item) with a score for
    every condition as a block; χ² with the tie correction, df = k − 1.
Wilcoxon–Holm
    Two-sided paired Wilcoxon signed-rank tests of neighbouring conditions (study
    order) over the same blocks, p-values adjusted by Holm's step-down method.
Mixed model
    ``score ~ condition`` with crossed random intercepts for rater and item
    (statsmodels ``MixedLM``, variance components); fitted when statsmodels is
    installed and at least :data:`MIXED_MIN_RATERS` raters are retained.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from scipy import stats as sps

HIDDEN_REFERENCE, ANCHOR_7K, CONDITION = "hidden_reference", "anchor_7k", "condition"
#: Thresholds of BS.1534-3's post-screening.
REFERENCE_MIN, ANCHOR_MAX, RATER_SHARE, ITEM_SHARE = 90.0, 90.0, 0.15, 0.25
#: Fewest retained raters for which the mixed model is fitted.
MIXED_MIN_RATERS = 3


def item_scores(rows: list[dict]) -> dict[tuple[str, str, str], float]:
    """(rater, item, condition) → mean score over that rater's ratings of it (training dropped)."""
    acc: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        if str(r.get("training")).lower() in ("true", "1"):
            continue
        acc[(str(r["rater_id"]), str(r["item"]), str(r["condition"]))].append(float(r["score"]))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def _share_per_rater(scores: dict, condition: str, bad, items_used=None) -> dict[str, tuple]:
    """rater → (items failing ``bad``, items counted) for ``condition``."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (rater, item, cond), score in scores.items():
        if cond != condition or (items_used is not None and item not in items_used):
            continue
        out[rater][1] += 1
        out[rater][0] += int(bad(score))
    return {r: tuple(v) for r, v in out.items()}


def screen(rows: list[dict], reference_rule: bool = True) -> dict:
    """BS.1534-3 post-screening of the raters (see the module docstring).

    Returns
    -------
    dict
        ``excluded`` (rater → list of reasons), ``retained`` (raters), ``n_before``,
        ``n_after``, ``anchor_items_ignored`` (items not used for the anchor rule), ``rules``.
    """
    scores = item_scores(rows)
    raters = sorted({k[0] for k in scores})
    excluded: dict[str, list[str]] = defaultdict(list)
    if reference_rule:
        for rater, (n_bad, n) in sorted(_share_per_rater(
                scores, HIDDEN_REFERENCE, lambda s: s < REFERENCE_MIN).items()):
            if n and n_bad / n > RATER_SHARE:
                excluded[rater].append(f"hidden reference < {REFERENCE_MIN:g} on {n_bad} of {n} "
                                       f"items (> {RATER_SHARE:.0%})")
    per_item: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (rater, item, cond), score in scores.items():
        if cond == ANCHOR_7K:
            per_item[item][1] += 1
            per_item[item][0] += int(score > ANCHOR_MAX)
    ignored = sorted(i for i, (bad, n) in per_item.items() if n and bad / n > ITEM_SHARE)
    used = set(per_item) - set(ignored)
    for rater, (n_bad, n) in sorted(_share_per_rater(
            scores, ANCHOR_7K, lambda s: s > ANCHOR_MAX, used).items()):
        if n and n_bad / n > RATER_SHARE:
            excluded[rater].append(f"7 kHz anchor > {ANCHOR_MAX:g} on {n_bad} of {n} items "
                                   f"(> {RATER_SHARE:.0%})")
    retained = [r for r in raters if r not in excluded]
    return {"excluded": dict(excluded), "retained": retained, "n_before": len(raters),
            "n_after": len(retained), "anchor_items_ignored": ignored,
            "rules": {"reference_rule": reference_rule, "reference_min": REFERENCE_MIN,
                      "anchor_max": ANCHOR_MAX, "rater_share": RATER_SHARE,
                      "item_share": ITEM_SHARE}}


def mean_ci95(values) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t confidence interval (nan for n < 2)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    if x.size < 2:
        return float(x.mean()), math.nan
    half = sps.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(half)


def describe(scores: dict, conditions: list[str], raters: list[str]) -> list[dict]:
    """Per condition: n, mean, ci95, median, q1, q3, iqr over the retained raters' item scores."""
    keep = set(raters)
    out = []
    for cond in conditions:
        x = [s for (r, _, c), s in scores.items() if c == cond and r in keep]
        mean, ci = mean_ci95(x)
        q1, med, q3 = (np.percentile(x, [25, 50, 75]) if x else (math.nan,) * 3)
        out.append({"condition": cond, "n": len(x), "mean": mean, "ci95": ci,
                    "median": float(med), "q1": float(q1), "q3": float(q3),
                    "iqr": float(q3 - q1)})
    return out


def complete_blocks(scores: dict, conditions: list[str], raters: list[str]) -> np.ndarray:
    """Matrix blocks × conditions: each retained (rater, item) that scored every condition."""
    keep = set(raters)
    by_block: dict[tuple, dict] = defaultdict(dict)
    for (r, i, c), s in scores.items():
        if r in keep and c in conditions:
            by_block[(r, i)][c] = s
    rows = [[b[c] for c in conditions] for _, b in sorted(by_block.items())
            if all(c in b for c in conditions)]
    return np.asarray(rows, dtype=float).reshape(len(rows), len(conditions))


def friedman(matrix: np.ndarray) -> dict:
    """Friedman's χ² (tie-corrected) of a blocks × treatments matrix; df = k − 1."""
    n, k = matrix.shape
    if n < 2 or k < 3:
        return {"statistic": math.nan, "df": k - 1, "p": math.nan, "n_blocks": n,
                "note": "needs ≥ 3 conditions and ≥ 2 complete (rater, item) blocks"}
    ranks = np.apply_along_axis(sps.rankdata, 1, matrix)
    r_sum = ranks.sum(axis=0)
    chi2 = 12.0 / (n * k * (k + 1)) * float((r_sum ** 2).sum()) - 3.0 * n * (k + 1)
    ties = 0.0
    for row in matrix:
        _, counts = np.unique(row, return_counts=True)
        ties += float((counts ** 3 - counts).sum())
    denom = 1.0 - ties / (n * k * (k * k - 1))
    chi2 = chi2 / denom if denom > 0 else math.nan
    p = float(sps.chi2.sf(chi2, k - 1)) if np.isfinite(chi2) else math.nan
    return {"statistic": float(chi2), "df": k - 1, "p": p, "n_blocks": n}


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given; nan stays nan)."""
    p = np.asarray(pvalues, dtype=float)
    valid = np.flatnonzero(np.isfinite(p))
    out = np.full(p.shape, math.nan)
    order = valid[np.argsort(p[valid], kind="stable")]
    m, running = len(order), 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return out.tolist()


def wilcoxon_neighbours(matrix: np.ndarray, conditions: list[str]) -> list[dict]:
    """Paired two-sided Wilcoxon signed-rank tests of neighbouring conditions, Holm-adjusted."""
    out = []
    for j in range(len(conditions) - 1):
        a, b = matrix[:, j], matrix[:, j + 1]
        d = b - a
        if len(d) < 1 or not np.any(d != 0):
            stat, p = math.nan, 1.0 if len(d) else math.nan
        else:
            res = sps.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
            stat, p = float(res.statistic), float(res.pvalue)
        out.append({"a": conditions[j], "b": conditions[j + 1], "n": int(len(d)),
                    "median_diff": float(np.median(d)) if len(d) else math.nan,
                    "statistic": stat, "p": p})
    for row, p_adj in zip(out, holm([r["p"] for r in out])):
        row["p_holm"] = p_adj
    return out


def mixed_model(scores: dict, conditions: list[str], raters: list[str]) -> dict:
    """``score ~ condition + (1|rater) + (1|item)`` via statsmodels MixedLM (see module doc)."""
    keep = set(raters)
    if len(keep) < MIXED_MIN_RATERS or len(conditions) < 2:
        return {"fitted": False, "note": f"needs ≥ {MIXED_MIN_RATERS} retained raters and ≥ 2 "
                                         "conditions"}
    try:
        import pandas as pd
        import statsmodels.formula.api as smf
    except ImportError:
        return {"fitted": False, "note": "statsmodels is not installed (pip install "
                                         "'vampstudy[listen]')"}
    data = pd.DataFrame([{"rater": r, "item": i, "condition": c, "score": s}
                         for (r, i, c), s in scores.items() if r in keep and c in conditions])
    data["condition"] = pd.Categorical(data["condition"], categories=conditions)
    data["group"] = 1
    model = smf.mixedlm("score ~ C(condition)", data, groups="group", re_formula="0",
                        vc_formula={"rater": "0 + C(rater)", "item": "0 + C(item)"})
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = model.fit(reml=True)
    notes = sorted({str(w.message).splitlines()[0] for w in caught})
    effects = {conditions[0]: 0.0}
    for j, cond in enumerate(conditions[1:], start=1):
        effects[cond] = float(fit.fe_params[f"C(condition)[T.{cond}]"])
    pvalues = {cond: float(fit.pvalues[f"C(condition)[T.{cond}]"]) for cond in conditions[1:]}
    vc = dict(zip(model.exog_vc.names, np.asarray(fit.vcomp, dtype=float).tolist()))
    return {"fitted": True, "baseline": conditions[0], "intercept": float(fit.fe_params["Intercept"]),
            "effects": effects, "p": pvalues, "variance": vc, "n": int(len(data)),
            "converged": bool(getattr(fit, "converged", True)), "warnings": notes}
