"""The MLflow UI: runs views stored on an experiment, the URL that opens one, the command
that starts the UI.

MLflow's UI reads the experiment tag ``mlflow.sharedViewState.<key>`` when its URL
carries ``viewStateShareKey=<key>``; the value is a saved-view envelope
``{"name", "createdAt", "state"}`` whose ``state`` is the view as JSON text (the view
itself is built by :mod:`vampstudy.views`). Functions of a
:class:`vampstudy.tracking.Tracker` (its public methods only).
"""

from __future__ import annotations

import json
import sys
import time

TAG_LATEST_VIEW = "vampstudy.latest_view"  # experiment tag: key of the newest saved runs view
VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # MLflow UI: experiment tag of a shared view
VIEW_URL_PARAM = "viewStateShareKey"         # MLflow UI: URL parameter naming that view


def save_view(tracker, experiment_id: str, state: dict, key: str, name: str = "") -> str:
    """Store a runs-view state (columns, sort, charts) as the UI's shared view ``key`` and
    mark it the experiment's latest; returns ``key``."""
    envelope = {"name": name or key, "createdAt": int(time.time() * 1000),
                "state": json.dumps(state, separators=(",", ":"))}
    tracker.set_experiment_tags(experiment_id, {
        VIEW_TAG_PREFIX + key: json.dumps(envelope, separators=(",", ":")),
        TAG_LATEST_VIEW: key})
    return key


def load_view(tracker, experiment_id: str, key: str) -> dict | None:
    """The state saved by :func:`save_view` under ``key`` (None when absent)."""
    value = tracker.experiment_tags(experiment_id).get(VIEW_TAG_PREFIX + key)
    return None if value is None else json.loads(json.loads(value)["state"])


def latest_view(tracker, experiment_id: str | None) -> str | None:
    """The key of the view saved last on the experiment (None when there is none)."""
    if experiment_id is None:
        return None
    return tracker.experiment_tags(experiment_id).get(TAG_LATEST_VIEW)


def ui_url(experiment_id: str | None, host: str = "127.0.0.1", port: int = 5000,
           view_key: str | None = None, charts: bool = False) -> str:
    """The classic runs table (MLflow 3's UI opens the GenAI view otherwise), opened on the
    saved view ``view_key`` (:func:`save_view`) when given, on its charts when ``charts``."""
    base = f"http://{host}:{port}/"
    if experiment_id is None:
        return base
    url = f"{base}#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if view_key:
        url += f"&{VIEW_URL_PARAM}={view_key}"
    return url + "&compareRunsMode=CHART" if charts else url


def ui_command(tracker, host: str, port: int) -> list[str]:
    """The command line that starts MLflow's UI on the tracker's store."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracker.uri,
           "--host", host, "--port", str(port)]
    if tracker.artifact_root:
        cmd += ["--default-artifact-root", tracker.artifact_root]
    return cmd
