"""Ratings onto the study's runs: ``listening/*`` on the parent, ``listen_*`` on the children.

Artifacts of the parent run
---------------------------
``listening/ratings.csv``   every rated stimulus (columns :data:`~.journal.COLUMNS`), rewritten
                            after each submitted trial
``listening/design.json``   the design (items, conditions, blocks, trials, loudness target)
``listening/screening.json`` BS.1534-3 post-screening: ``excluded`` (rater → reasons),
                            ``n_before``, ``n_after``, ``anchor_items_ignored``
``listening/summary.json``  per condition n, mean, ci95, median, q1, q3, iqr; Friedman;
                            Wilcoxon–Holm of neighbours; the mixed model
``listening/boxplot.png``   box plot of the retained item scores per stimulus

Metrics of each condition's child runs (condition level, retained raters only):
``listen_mean`` (mean score 0–100), ``listen_ci95`` (half-width of its 95 % t CI),
``listen_n`` (number of item scores). Writing the same ratings again changes nothing.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math

from .. import sharedviews, views
from ..layout import TAG_STUDY
from . import stats
from .design import ANCHOR_3K5, ANCHOR_7K, HIDDEN_REFERENCE
from .journal import COLUMNS

logger = logging.getLogger(__name__)

PREFIX = "listening"
METRICS = ("listen_mean", "listen_ci95", "listen_n")


def ratings_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _clean(value):
    """JSON-safe: nan/inf → None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def analyse(rows: list[dict], design: dict) -> tuple[dict, dict]:
    """Screening and summary of the ratings (pure; see :mod:`.stats` for the definitions)."""
    conditions = [c["condition"] for c in design["conditions"]]
    mushra = design["design"] != "ab"
    screening = stats.screen(rows, reference_rule=design["design"] == "mushra")
    if not mushra:
        screening = {**screening, "excluded": {}, "retained": sorted({r["rater_id"] for r in rows})}
        screening["n_after"] = len(screening["retained"])
    scores = stats.item_scores(rows)
    retained = screening["retained"]
    shown = ([HIDDEN_REFERENCE] if mushra else []) + conditions + \
        ([ANCHOR_7K, ANCHOR_3K5] if mushra else [])
    summary = {"design": design["design"], "n_raters_before": screening["n_before"],
               "n_raters_after": screening["n_after"],
               "conditions": stats.describe(scores, shown, retained)}
    matrix = stats.complete_blocks(scores, conditions, retained)
    summary["friedman"] = stats.friedman(matrix) if mushra else None
    summary["wilcoxon_holm"] = stats.wilcoxon_neighbours(matrix, conditions) if mushra else []
    summary["mixed_model"] = stats.mixed_model(scores, conditions, retained) if mushra else None
    return _clean(screening), _clean(summary)


def boxplot(rows: list[dict], summary: dict, screening: dict):
    """A matplotlib figure: box plot (median, IQR, 1.5 IQR whiskers) per stimulus, mean ± CI."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    scores = stats.item_scores(rows)
    keep = set(screening["retained"])
    names = [c["condition"] for c in summary["conditions"]]
    data = [[s for (r, _, c), s in scores.items() if c == name and r in keep] for name in names]
    fig = Figure(figsize=(max(5.0, 0.7 * len(names) + 2), 4.2))
    ax = fig.add_subplot()
    ax.boxplot([d or [math.nan] for d in data])
    ax.set_xticks(range(1, len(names) + 1), names)
    for x, c in enumerate(summary["conditions"], start=1):
        if c["mean"] is not None:
            ax.errorbar(x, c["mean"], yerr=c["ci95"] or 0, fmt="o", color="C3", capsize=3)
    ax.set_ylim(0, 100)
    ax.set_ylabel("score (0–100)")
    ax.set_title(f"MUSHRA scores, {screening['n_after']} of {screening['n_before']} raters "
                 "after screening (red: mean ± 95 % CI)", fontsize=9)
    ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    fig.tight_layout()
    return fig


def publish_ratings(tracker, test, journal) -> None:
    """``listening/ratings.csv`` and ``listening/design.json`` on the parent (after each trial)."""
    tracker.log_run_batch(test.run_id, files={
        f"{PREFIX}/ratings.csv": ratings_csv(journal.rows()).encode(),
        f"{PREFIX}/design.json": json.dumps(test.design, indent=1).encode()})


def record_analysis(tracker, test, journal) -> dict | None:
    """Screening, summary, box plot on the parent; ``listen_*`` metrics on the children; the
    comparison view gains the columns. Returns the summary (None without ratings)."""
    rows = journal.rows()
    if not any(str(r["training"]).lower() not in ("true", "1") for r in rows):
        return None
    screening, summary = analyse(rows, test.design)
    tracker.log_run_batch(test.run_id, files={
        f"{PREFIX}/screening.json": json.dumps(screening, indent=1).encode(),
        f"{PREFIX}/summary.json": json.dumps(summary, indent=1).encode()})
    tracker.log_figure(test.run_id, boxplot(rows, summary, screening), f"{PREFIX}/boxplot.png")
    by_name = {c["condition"]: c for c in summary["conditions"]}
    for cond in test.design["conditions"]:
        row = by_name.get(cond["condition"])
        if row and row["n"]:
            metrics = {"listen_mean": row["mean"], "listen_ci95": row["ci95"],
                       "listen_n": row["n"]}
            for run_id in cond["run_ids"]:
                tracker.log_metrics(run_id, metrics)
    _extend_view(tracker, test.run_id)
    return summary


def _extend_view(tracker, run_id: str) -> None:
    run = tracker.get_run(run_id)
    exp, key = run.info.experiment_id, views.view_key(run_id)
    state = sharedviews.load_view(tracker, exp, key)
    if state is not None:
        name = f"{run.data.tags.get(TAG_STUDY, 'study')} · {run_id[:8]}"
        sharedviews.save_view(tracker, exp, views.with_columns(state, METRICS[:2]), key, name)


def summary_rows(summary: dict) -> list[dict]:
    """The table ``vampstudy show`` prints: one row per stimulus."""
    return [{"stimulus": c["condition"], "n": c["n"], "mean": c["mean"], "ci95": c["ci95"],
             "median": c["median"], "iqr": c["iqr"]} for c in summary["conditions"]]


def test_lines(summary: dict) -> list[str]:
    """Friedman and the Holm-adjusted Wilcoxon tests of neighbours, as text lines."""
    f = summary.get("friedman") or {}
    if f.get("p") is None:
        return [f"Friedman: not computed ({f.get('note', 'no data')})"] if f else []
    lines = [f"Friedman chi2({f['df']}) = {f['statistic']:.3g}, p = {f['p']:.3g} "
             f"({f['n_blocks']} rater x item blocks)"]
    for w in summary.get("wilcoxon_holm", []):
        p = "-" if w["p_holm"] is None else f"{w['p_holm']:.3g}"
        lines.append(f"  {w['a']} vs {w['b']}: median diff {w['median_diff']:.3g}, "
                     f"Wilcoxon p (Holm) = {p}")
    return lines


def load_summary(tracker, run_id: str) -> dict | None:
    """The parent's ``listening/summary.json`` (None when no test was analysed)."""
    import tempfile
    from pathlib import Path

    if f"{PREFIX}/summary.json" not in tracker.list_artifacts(run_id, PREFIX):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(tracker.download(run_id, f"{PREFIX}/summary.json", tmp)).read_text())
