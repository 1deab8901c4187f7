"""The listening test's design and statistics, each against an independent computation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from vampstudy.listen import design as dz
from vampstudy.listen import stats
from vampstudy.listen.results import analyse

CONDITIONS = ["interval=3", "interval=7", "interval=20"]


def _rows(scores: dict, training: bool = False) -> list[dict]:
    """Rating rows from {(rater, item, condition): score}."""
    return [{"rater_id": r, "item": i, "condition": c, "role": dz.role_of(c), "score": s,
             "training": training} for (r, i, c), s in scores.items()]


def _panel(n_raters: int = 4, n_items: int = 12, seed: int = 0, overrides=None) -> dict:
    """Plausible ratings: hidden reference ~97, anchors low, conditions 80/60/40 + noise."""
    rng = np.random.default_rng(seed)
    base = {dz.HIDDEN_REFERENCE: 97, dz.ANCHOR_7K: 45, dz.ANCHOR_3K5: 20,
            "interval=3": 80, "interval=7": 60, "interval=20": 40}
    out = {}
    for r in range(n_raters):
        for i in range(n_items):
            for c, b in base.items():
                noise = 0 if c == dz.HIDDEN_REFERENCE else rng.normal(0, 6)
                out[(f"r{r}", f"item{i}", c)] = float(np.clip(b + noise, 0, 100))
    out.update(overrides or {})
    return out


# --------------------------------------------------------------------------- screening
def test_hidden_reference_below_90_on_2_of_12_items_excludes_the_rater():
    scores = _panel(overrides={("r1", "item0", dz.HIDDEN_REFERENCE): 80.0,
                               ("r1", "item5", dz.HIDDEN_REFERENCE): 89.9})
    result = stats.screen(_rows(scores))
    assert list(result["excluded"]) == ["r1"]
    assert "hidden reference < 90 on 2 of 12 items" in result["excluded"]["r1"][0]
    assert (result["n_before"], result["n_after"]) == (4, 3)


def test_hidden_reference_below_90_on_1_of_12_items_keeps_the_rater():
    scores = _panel(overrides={("r1", "item0", dz.HIDDEN_REFERENCE): 50.0})
    result = stats.screen(_rows(scores))
    assert result["excluded"] == {}
    assert result["n_after"] == 4


def test_anchor_above_90_on_more_than_15_percent_excludes():
    over = {("r2", f"item{i}", dz.ANCHOR_7K): 95.0 for i in (1, 2)}
    result = stats.screen(_rows(_panel(overrides=over)))
    assert list(result["excluded"]) == ["r2"]
    assert "7 kHz anchor > 90 on 2 of 12" in result["excluded"]["r2"][0]


def test_items_where_over_25_percent_rate_the_anchor_above_90_are_not_used():
    # item3 and item4: 2 of 4 raters (50 %) rate the anchor > 90 → those items are ignored,
    # so r2 (> 90 on exactly those two items) is kept; with 1 of 4 raters (25 %) it is not.
    over = {(r, f"item{i}", dz.ANCHOR_7K): 95.0 for r in ("r2", "r3") for i in (3, 4)}
    result = stats.screen(_rows(_panel(overrides=over)))
    assert result["anchor_items_ignored"] == ["item3", "item4"]
    assert result["excluded"] == {}
    only_r2 = {("r2", f"item{i}", dz.ANCHOR_7K): 95.0 for i in (3, 4)}
    assert list(stats.screen(_rows(_panel(overrides=only_r2)))["excluded"]) == ["r2"]


def test_training_ratings_are_never_analysed():
    scores = _panel()
    training = _rows({(r, "item0", dz.HIDDEN_REFERENCE): 0.0 for r in ("r0", "r1")},
                     training=True)
    training += _rows({("r0", "item0", "interval=3"): 0.0}, training=True)
    rows = _rows(scores) + training
    assert stats.screen(rows)["excluded"] == {}
    assert stats.item_scores(rows) == stats.item_scores(_rows(scores))


def test_noref_design_skips_the_reference_rule():
    scores = _panel(overrides={("r1", f"item{i}", dz.HIDDEN_REFERENCE): 10.0 for i in range(12)})
    assert list(stats.screen(_rows(scores))["excluded"]) == ["r1"]
    assert stats.screen(_rows(scores), reference_rule=False)["excluded"] == {}


# ------------------------------------------------------------------------ statistics
def test_mean_ci_median_iqr_match_scipy_and_numpy():
    scores = _panel(n_raters=5, seed=3)
    raters = [f"r{r}" for r in range(5)]
    table = stats.describe(scores, CONDITIONS, raters)
    for row in table:
        x = np.array([s for (_, _, c), s in scores.items() if c == row["condition"]])
        lo, hi = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
        assert row["n"] == len(x) == 60
        assert row["mean"] == pytest.approx(x.mean(), abs=1e-9)
        assert row["ci95"] == pytest.approx((hi - lo) / 2, abs=1e-9)
        assert row["median"] == pytest.approx(np.median(x), abs=1e-9)
        assert row["iqr"] == pytest.approx(sps.iqr(x), abs=1e-9)


def test_friedman_matches_scipy_with_and_without_ties():
    rng = np.random.default_rng(1)
    for matrix in (rng.normal(size=(15, 4)), rng.integers(0, 4, size=(20, 3)).astype(float)):
        ours = stats.friedman(matrix)
        ref = sps.friedmanchisquare(*matrix.T)
        assert ours["statistic"] == pytest.approx(ref.statistic, rel=1e-9)
        assert ours["p"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert ours["df"] == matrix.shape[1] - 1


def _exact_wilcoxon(d: np.ndarray) -> tuple[float, float]:
    """Two-sided exact signed-rank test by enumerating every sign pattern (no ties, no zeros)."""
    ranks = sps.rankdata(np.abs(d))
    w_plus = ranks[d > 0].sum()
    stat = min(w_plus, ranks.sum() - w_plus)
    sums = np.array([ranks[list(s)].sum() for k in range(len(d) + 1)
                     for s in itertools.combinations(range(len(d)), k)])
    p = min(1.0, 2 * np.mean(sums <= stat))
    return float(stat), float(p)


def test_wilcoxon_of_neighbours_matches_exact_enumeration_and_holm():
    rng = np.random.default_rng(7)
    matrix = np.column_stack([rng.normal(0, 1, 10), rng.normal(0.8, 1, 10), rng.normal(0.9, 1, 10)])
    rows = stats.wilcoxon_neighbours(matrix, CONDITIONS)
    assert [(r["a"], r["b"]) for r in rows] == [(CONDITIONS[0], CONDITIONS[1]),
                                                (CONDITIONS[1], CONDITIONS[2])]
    for j, row in enumerate(rows):
        stat, p = _exact_wilcoxon(matrix[:, j + 1] - matrix[:, j])
        assert row["statistic"] == pytest.approx(stat)
        assert row["p"] == pytest.approx(p, abs=1e-12)
    p = sorted(r["p"] for r in rows)
    expected = [min(1, 2 * p[0]), min(1, max(2 * p[0], p[1]))]
    assert sorted(r["p_holm"] for r in rows) == pytest.approx(expected)


def test_holm_matches_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = [0.01, 0.04, 0.03, 0.005, 0.5, math.nan]
    ours = stats.holm(p)
    ref = multitest.multipletests(p[:-1], method="holm")[1]
    assert ours[:-1] == pytest.approx(list(ref), abs=1e-12)
    assert math.isnan(ours[-1])


def test_mixed_model_recovers_injected_effects():
    pytest.importorskip("statsmodels")
    rng = np.random.default_rng(11)
    effects = {"interval=3": 0.0, "interval=7": -15.0, "interval=20": -30.0}
    rater_shift = rng.normal(0, 8, 8)
    item_shift = rng.normal(0, 5, 10)
    scores = {}
    for r, i, c in itertools.product(range(8), range(10), CONDITIONS):
        scores[(f"r{r}", f"item{i}", c)] = 80 + effects[c] + rater_shift[r] + item_shift[i] + \
            rng.normal(0, 3)
    fit = stats.mixed_model(scores, CONDITIONS, [f"r{r}" for r in range(8)])
    assert fit["fitted"] and fit["converged"]
    # balanced crossed design: GLS fixed effects equal the differences of condition means
    means = {c: np.mean([s for (_, _, cc), s in scores.items() if cc == c]) for c in CONDITIONS}
    for c in CONDITIONS[1:]:
        assert fit["effects"][c] == pytest.approx(means[c] - means[CONDITIONS[0]], abs=1e-4)
        assert fit["effects"][c] == pytest.approx(effects[c], abs=2.0)
    assert fit["variance"]["rater"] > fit["variance"]["item"] > 0


def test_mixed_model_needs_enough_raters():
    fit = stats.mixed_model(_panel(n_raters=2, n_items=5), CONDITIONS, ["r0", "r1"])
    assert not fit["fitted"] and "raters" in fit["note"]


def test_analyse_uses_retained_raters_only():
    scores = _panel(overrides={("r1", f"item{i}", dz.HIDDEN_REFERENCE): 50.0 for i in range(3)})
    design = {"design": "mushra", "conditions": [{"condition": c} for c in CONDITIONS]}
    screening, summary = analyse(_rows(scores), design)
    assert screening["excluded"].keys() == {"r1"}
    row = next(r for r in summary["conditions"] if r["condition"] == "interval=7")
    kept = [s for (r, _, c), s in scores.items() if c == "interval=7" and r != "r1"]
    assert row["n"] == len(kept) and row["mean"] == pytest.approx(np.mean(kept))
    assert summary["friedman"]["n_blocks"] == 36 and summary["friedman"]["p"] < 1e-6
    assert [r["b"] for r in summary["wilcoxon_holm"]] == ["interval=7", "interval=20"]


# ------------------------------------------------------------------------------ design
def _conds(n):
    return [{"condition": f"c{j}"} for j in range(n)]


def test_more_than_nine_conditions_make_a_recorded_blocked_design():
    items = [{"item": f"i{k}"} for k in range(3)]
    plan = dz.plan_design("run", items, _conds(11))
    assert plan["blocked"] and [len(b) for b in plan["blocks"]] == [6, 5]
    assert len(plan["trials"]) == 6
    assert all(len(t["stimuli"]) <= 12 for t in plan["trials"])
    assert sorted(c for b in plan["blocks"] for c in b) == sorted(f"c{j}" for j in range(11))
    small = dz.plan_design("run", items, _conds(9))
    assert not small["blocked"] and len(small["trials"][0]["stimuli"]) == 12


def test_orders_and_letters_differ_per_rater_and_are_stable():
    items = [{"item": f"i{k}"} for k in range(8)]
    plan = dz.plan_design("run", items, _conds(4))
    a, b = dz.rater_order(plan, "alice"), dz.rater_order(plan, "bob")
    assert a[0] == b[0] == dz.TRAINING and sorted(a) == sorted(b) and a != b
    assert a == dz.rater_order(plan, "alice")
    trial = plan["trials"][0]
    la, lb = dz.trial_letters(plan, "alice", trial), dz.trial_letters(plan, "bob", trial)
    assert sorted(la.values()) == sorted(trial["stimuli"]) and list(la) == list("ABCDEFG")
    assert la != lb
    tok = dz.stimulus_token(b"k" * 32, "alice", "T01", "A")
    assert tok != dz.stimulus_token(b"k" * 32, "bob", "T01", "A")
    assert len(tok) == 24 and set(tok) <= set("0123456789abcdef")   # names no condition


def test_ab_design_pairs_neighbours():
    plan = dz.plan_design("run", [{"item": "i0"}], _conds(3), design="ab")
    assert [t["stimuli"] for t in plan["trials"]] == [["c0", "c1"], ["c1", "c2"]]
    with pytest.raises(ValueError, match="two conditions"):
        dz.plan_design("run", [{"item": "i0"}], _conds(1), design="ab")
