"""``vampstudy check`` batteries on the tracking store: one run per check, the newest found again.

A check is a run in the experiment :data:`CHECK_EXPERIMENT` tagged ``vampstudy.role=check``
(not a study), with its backend, status, one metric per check (PASS 1, WARN 0.5, FAIL 0;
``<name>_value`` for its figure), the ``checks`` table and its figures. Functions of a
:class:`vampstudy.tracking.Tracker` (its public methods only).
"""

from __future__ import annotations

import time

from .layout import TAG_BACKEND, TAG_ROLE

CHECK_EXPERIMENT = "vampstudy-checks"
TAG_CHECK_STATUS = "vampstudy.check_status"
SCORES = {"PASS": 1.0, "WARN": 0.5, "FAIL": 0.0}


def check_metrics(rows: list[dict]) -> dict:
    """``check_<name>`` (the status as a score) and ``check_<name>_value`` per check row."""
    metrics = {}
    for row in rows:
        key = "check_" + "".join(ch if ch.isalnum() else "_" for ch in row["check"])
        metrics[key] = SCORES[row["status"]]
        if row.get("value") is not None:
            metrics[key + "_value"] = row["value"]
    return metrics


def log_check(tracker, backend, rows: list[dict], status: str, clip: dict,
              figures: dict | None = None) -> str:
    """Record a ``vampstudy check`` battery as a run tagged as a check; returns its id.

    ``figures`` maps artifact paths (e.g. ``figures/sampling_schedule.png``)
    to matplotlib figures logged on the run.
    """
    exp = tracker.experiment_id(CHECK_EXPERIMENT)
    run_id = tracker.start_run(exp, f"check · {backend.name} · {time.strftime('%Y-%m-%d %H:%M:%S')}",
                               {TAG_ROLE: "check", TAG_BACKEND: backend.name,
                                TAG_CHECK_STATUS: status})
    try:
        tracker.log_params(run_id, {**backend.info(), **backend.options(),
                                    "audio_path": clip.get("path"), "audio_sha256": clip.get("sha256")})
        tracker.log_metrics(run_id, check_metrics(rows))
        tracker.log_table(run_id, rows, "checks")
        for path, figure in (figures or {}).items():
            tracker.log_figure(run_id, figure, path)
    finally:
        tracker.finish(run_id, "FINISHED")
    return run_id


def last_check(tracker, backend_name: str) -> str:
    """``STATUS (check run ID, date)`` of the newest check of this backend, or ``never``."""
    exp = tracker.experiment_id(CHECK_EXPERIMENT, create=False)
    if exp is None:
        return "never"
    runs = tracker.find_runs(exp, {TAG_ROLE: "check", TAG_BACKEND: backend_name})
    if not runs:
        return "never"
    run = runs[0]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.info.start_time / 1000))
    return f"{run.data.tags.get(TAG_CHECK_STATUS, '?')} (check run {run.info.run_id}, {when})"
