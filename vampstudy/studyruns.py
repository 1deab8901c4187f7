"""Finding study runs again: every study's parent run, the newest, one by id.

Functions of a :class:`vampstudy.tracking.Tracker` (its public methods only); used by
``vampstudy show``, ``ui``, ``listen`` and the tests, never by a running study.
"""

from __future__ import annotations

from .errors import TrackingError
from .layout import TAG_ROLE


def study_runs(tracker, max_results: int = 50) -> list:
    """Parent (study) runs across experiments, newest first."""
    return tracker.search_runs(None, {TAG_ROLE: "study"}, max_results=max_results)


def latest_study_experiment(tracker) -> str | None:
    """The experiment of the newest study run (None when there is none)."""
    runs = study_runs(tracker, max_results=1)
    return runs[0].info.experiment_id if runs else None


def resolve_study_run(tracker, run_id: str = "latest"):
    """A study's parent run by id, or the newest one for ``latest``."""
    if run_id == "latest":
        runs = study_runs(tracker, max_results=1)
        if not runs:
            raise TrackingError(f"no study runs in {tracker.uri}; run `vampstudy run periodic` first")
        return runs[0]
    try:
        return tracker.get_run(run_id)
    except Exception as exc:
        raise TrackingError(f"no run {run_id!r} in {tracker.uri}; `vampstudy show` without an id "
                            "shows the latest study run") from exc
