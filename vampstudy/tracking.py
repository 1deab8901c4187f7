"""MLflow: opening a store, the run layout, logging runs and reading them back.

This is the only module that imports mlflow. It uses :class:`MlflowClient`
with explicit run ids (never the fluent active-run stack) and sets
``mlflow.parentRunId`` explicitly on child runs.

Tracking URI resolution: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``,
else a sqlite database ``mlruns/mlflow.db`` under the current directory with
artifacts in ``mlruns/artifacts`` (MLflow 3 refuses the old ``./mlruns`` file store).
URI checks, the default store, the artifact folder of sqlite stores and the store lock
live in :mod:`vampstudy.stores`; the sqlite file guard in :mod:`vampstudy.storeguard`;
what run files are made of in :mod:`vampstudy.runfiles`. Jobs a running study never does
are functions of a Tracker in their own modules: saved UI views and the UI's URL and
command (:mod:`vampstudy.sharedviews`), check records (:mod:`vampstudy.checklog`) and
finding study runs again (:mod:`vampstudy.studyruns`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# MLflow 3 sends usage telemetry; an offline cluster node must not wait on it. Off in
# vampstudy's processes (and the MLflow servers they start) unless the user set it.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# On a tracking server MLflow prints a link for every run it closes, fetching the run first:
# one request per child run, and lines through the progress bar.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

_APP_LEVEL = logging.getLogger("mlflow").level   # set by the application (0: nothing)
import mlflow  # noqa: E402  (the setting above must precede the import)
if _APP_LEVEL:   # importing mlflow resets its logger to INFO: keep what the application chose
    logging.getLogger("mlflow").setLevel(_APP_LEVEL)
import numpy as np
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from . import storeguard, stores
from .errors import TrackingError
from .runfiles import dataset_fields, table_files
from .spool import write_artifact
from .storeguard import StoreFileGone  # noqa: F401  (raised by a guarded store's statements)
from .stores import DEFAULT_STORE_DIR, default_store, resolve_tracking_uri  # noqa: F401

logger = logging.getLogger(__name__)

PARAM_MAX = 6000
TAG_LOGGED_ARTIFACTS = "mlflow.loggedArtifacts"  # MLflow: the run's tables, for the UI and load_table

from .layout import (TAG_BACKEND, TAG_CHECK, TAG_CONDITION, TAG_CONFIG, TAG_NOTE,  # noqa: E402,F401
                     TAG_PARENT, TAG_ROLE, TAG_STUDY, TAG_TRIAL)


def _plain(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)


def _artifact_write(method):
    """Wrap an MlflowClient artifact upload: OSError (full disk, read-only) → one TrackingError."""
    import functools

    @functools.wraps(method)
    def wrapper(self, run_id, *args, **kwargs):
        try:
            return method(self, run_id, *args, **kwargs)
        except OSError as exc:
            try:
                where = self.get_run(run_id).info.artifact_uri
            except Exception:
                where = f"the artifact store of run {run_id}"
            raise TrackingError(stores.artifact_error(str(where), exc)) from exc
    return wrapper


class _Client(MlflowClient):
    """An :class:`MlflowClient` whose artifact uploads fail with one clear line."""


for _name in ("log_artifact", "log_artifacts", "log_text", "log_figure", "log_table", "log_dict",
              "log_image"):
    if hasattr(MlflowClient, _name):
        setattr(_Client, _name, _artifact_write(getattr(MlflowClient, _name)))


def clips_dataset(name: str, clips: list[dict]):
    """An MLflow dataset entity whose rows are the clips' identities
    (:func:`vampstudy.runfiles.dataset_fields`)."""
    return mlflow.entities.Dataset(**dataset_fields(name, clips))


def write_artifact_files(folder: Path, files: dict) -> None:
    """Write ``files`` (path relative to ``folder`` → bytes or a
    :class:`~vampstudy.spool.SpooledFile`) under ``folder``, as MLflow's local artifact
    repository lays a run's artifacts out (OSError propagates)."""
    made: set[Path] = set()
    for path, data in files.items():
        local = folder / path
        if local.parent not in made:
            local.parent.mkdir(parents=True, exist_ok=True)
            made.add(local.parent)
        write_artifact(local, data)


class Tracker:
    """A tracking store and the vampstudy run layout on it."""

    def __init__(self, tracking_uri: str | None = None):
        self.uri = stores.check_tracking_uri(resolve_tracking_uri(tracking_uri))
        # every sqlite store keeps its artifacts in artifacts/ beside the database file
        self.artifact_root: str | None = stores.artifact_root(self.uri)
        self._artifact_uris: dict[str, str] = {}   # run id → artifact URI, while a run is open
        self._locations: dict[str, str] = {}       # run id → artifact URI, every run seen
        stores.prepare_sqlite_store(self.uri)
        db = stores.sqlite_path(self.uri)
        self._db_identity: tuple[int, int] | None = None   # the database file, once opened
        try:
            with stores.store_lock(self.uri), stores.short_http_retries():
                if db is not None:
                    storeguard.forget(db)
                self.client = _Client(tracking_uri=self.uri)
                self.client.search_experiments(max_results=1)  # creates a new store's tables
                self._use_artifact_root()
                if db is not None:
                    self._db_identity = stores.file_identity(db)
                    storeguard.remember(db, self._db_identity)
                    storeguard.guard(self.client, db)
        except Exception as exc:
            raise TrackingError(
                f"cannot reach the MLflow tracking store at {self.uri} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); start the server or pass "
                "another --tracking-uri (or unset MLFLOW_TRACKING_URI to use ./mlruns)") from exc

    def _use_artifact_root(self) -> None:
        """New experiments of a sqlite store get ``<artifact root>/<experiment id>``.

        MLflow derives an experiment's artifact location from its store's default
        artifact root and the new experiment's id; a client-side store would otherwise
        take ``./mlruns`` of whatever folder the process started in.
        """
        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        if self.artifact_root and hasattr(store, "artifact_root_uri"):
            store.artifact_root_uri = self.artifact_root

    # ------------------------------------------------------ experiments
    def experiment_id(self, name: str, create: bool = True) -> str | None:
        """The id of experiment ``name`` (any non-empty string), created if missing.

        Its artifacts go to a folder named by the id, never by the name. Creation is
        serialised across processes on a sqlite store, and a name another process
        created meanwhile is read back instead of failing.
        """
        name = stores.check_experiment_name(name)
        exp = self.client.get_experiment_by_name(name)
        if exp is None and create:
            with stores.store_lock(self.uri):
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    try:
                        return self.client.create_experiment(name)
                    except mlflow.exceptions.MlflowException as exc:
                        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                            raise
                        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            return None
        if exp.lifecycle_stage == "deleted":
            self.client.restore_experiment(exp.experiment_id)
        return exp.experiment_id

    def experiment_tags(self, experiment_id: str) -> dict:
        """The experiment's tags."""
        return dict(self.client.get_experiment(experiment_id).tags)

    def set_experiment_tags(self, experiment_id: str, tags: dict) -> None:
        """Set the experiment's tags ``tags`` (in their order)."""
        for key, value in tags.items():
            self.client.set_experiment_tag(experiment_id, key, str(value))

    # ------------------------------------------------------------- runs
    def start_run(self, experiment_id: str, run_name: str, tags: dict,
                  parent_id: str | None = None) -> str:
        tags = {k: str(v) for k, v in tags.items()}
        if parent_id:
            tags[TAG_PARENT] = parent_id
        run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
        # uploads to this run need no request to look its artifact location up again
        self._artifact_uris[run.info.run_id] = run.info.artifact_uri
        self._locations[run.info.run_id] = run.info.artifact_uri
        return run.info.run_id

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)
        self._artifact_uris.pop(run_id, None)

    def set_tags(self, run_id: str, tags: dict) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_params(self, run_id: str, params: dict) -> None:
        items = [Param(k, _plain(v)[:PARAM_MAX]) for k, v in params.items()]
        existing = self.client.get_run(run_id).data.params
        items = [p for p in items if p.key not in existing]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: dict, series: dict | None = None) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, 0) for k, v in metrics.items()
                 if v is not None and np.isfinite(float(v))]
        for name, values in (series or {}).items():
            items += [Metric(name, float(v), now, i) for i, v in enumerate(values)
                      if np.isfinite(float(v))]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i:i + 1000])

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self.client.log_text(run_id, text, path)

    def log_figure(self, run_id: str, figure, path: str) -> None:
        self.client.log_figure(run_id, figure, path)

    def log_bytes(self, run_id: str, data: bytes, path: str) -> None:
        directory, name = os.path.split(path)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / name
            local.write_bytes(data)
            self.client.log_artifact(run_id, str(local), directory or None)

    def log_table(self, run_id: str, rows: list[dict], name: str) -> None:
        """An MLflow table (``<name>.json``, shown in the UI) and ``<name>.csv``."""
        if rows:
            self.log_run_batch(run_id, tables={name: rows})

    def answers(self, timeout: float = 2.0) -> bool:
        """Whether the store answers now (asked directly, within ``timeout`` s; see
        :func:`vampstudy.stores.probe_store`)."""
        return self.probe(timeout) is None

    def probe(self, timeout: float = 2.0) -> str | None:
        """None when the store answers now, else why not (:func:`vampstudy.stores.probe_store`;
        a sqlite store must still be the database file this Tracker opened)."""
        return stores.probe_store(self.uri, timeout, self._db_identity)

    def fail_fast(self, force: bool = False):
        """A context in which HTTP calls to a tracking server are not retried for minutes
        (for closing runs after the server went away); ``force``: even where the user set
        MLFLOW_HTTP_REQUEST_* (for a Ray worker, whose failed recording the driver redoes
        patiently with the user's settings)."""
        return stores.short_http_retries(force)

    # ------------------------------------------------------ batched writes
    def log_run_batch(self, run_id: str, params: dict | None = None, metrics: dict | None = None,
                      series: dict | None = None, tags: dict | None = None,
                      files: dict[str, bytes] | None = None, tables: dict | None = None,
                      skip_existing_params: bool = True) -> None:
        """Params, metrics, series and tags in as few ``log_batch`` calls as MLflow allows, and
        every file (artifact path → bytes or :class:`vampstudy.spool.SpooledFile`) in one
        ``log_artifacts`` upload.

        ``tables`` (name → rows) become ``<name>.json`` (MLflow's table format, listed in the
        run's ``mlflow.loggedArtifacts`` tag as MLflow's ``log_table`` does) and ``<name>.csv``
        in the same upload. ``skip_existing_params=False`` (a run just created) saves reading
        the run back for params it already has and tables it already lists.
        """
        params, tags, files = params or {}, dict(tags or {}), dict(files or {})
        tables = {name: rows for name, rows in (tables or {}).items() if rows}
        existing = (self.client.get_run(run_id).data if skip_existing_params and (params or tables)
                    else None)
        if existing is not None:
            params = {k: v for k, v in params.items() if k not in existing.params}
        if tables:
            listed = json.loads(existing.tags.get(TAG_LOGGED_ARTIFACTS, "[]")) if existing else []
            for name, rows in tables.items():
                files[f"{name}.json"], files[f"{name}.csv"] = table_files(rows)
                entry = {"path": f"{name}.json", "type": "table"}
                listed += [] if entry in listed else [entry]
            tags[TAG_LOGGED_ARTIFACTS] = json.dumps(listed)
        items_p = [Param(k, _plain(v)[:PARAM_MAX]) for k, v in params.items()]
        now = int(time.time() * 1000)
        items_m = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()
                   if v is not None and np.isfinite(float(v))]
        for name, values in (series or {}).items():
            items_m += [Metric(name, float(v), now, i) for i, v in enumerate(values)
                        if np.isfinite(float(v))]
        items_t = [RunTag(k, str(v)) for k, v in tags.items()]
        first = True
        while first or items_p or items_m:
            first = False
            self.client.log_batch(run_id, metrics=items_m[:1000], params=items_p[:100],
                                  tags=items_t)
            items_m, items_p, items_t = items_m[1000:], items_p[100:], []
        if files:
            self._upload(run_id, files)

    def _upload(self, run_id: str, files: dict[str, bytes]) -> None:
        """Every file in one ``log_artifacts`` of the run's artifact repository (found without
        a request while the run is open); straight into the run's folder when that is local."""
        uri = self._artifact_uris.get(run_id)
        folder = stores.local_path(uri) if uri is not None else None
        if folder is not None:
            try:
                write_artifact_files(folder, files)
            except OSError as exc:
                raise TrackingError(stores.artifact_error(uri, exc)) from exc
            return
        with tempfile.TemporaryDirectory() as tmp:
            write_artifact_files(Path(tmp), files)
            if uri is None:
                self.client.log_artifacts(run_id, tmp)
                return
            try:
                get_artifact_repository(uri, tracking_uri=self.uri).log_artifacts(tmp)
            except OSError as exc:
                raise TrackingError(stores.artifact_error(uri, exc)) from exc

    # ----------------------------------------------------------- search
    def find_runs(self, experiment_id: str, tags: dict, statuses: tuple[str, ...] = ()) -> list:
        """Runs whose tags equal ``tags`` (newest first), optionally of the given statuses."""
        runs = self.search_runs([experiment_id], tags)
        if statuses:
            runs = [r for r in runs if r.info.status in statuses]
        return runs

    def search_runs(self, experiment_ids: list[str] | None, tags: dict,
                    max_results: int = 5000) -> list:
        """Runs of the experiments (None: every experiment) whose tags equal ``tags``, newest
        first, at most ``max_results``."""
        if experiment_ids is None:
            experiment_ids = [e.experiment_id for e in self.client.search_experiments()]
        if not experiment_ids:
            return []
        clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        return self.client.search_runs(experiment_ids, " and ".join(clauses),
                                       order_by=["attributes.start_time DESC"],
                                       max_results=max_results)

    def get_run(self, run_id: str):
        return self.client.get_run(run_id)

    def download(self, run_id: str, path: str, dst: str) -> str:
        return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                   dst_path=dst, tracking_uri=self.uri)

    def artifact_reader(self, run_id: str):
        """A :class:`vampstudy.stored.ArtifactReader` of the run: its local artifact folder
        (sqlite stores), else downloads through this tracker."""
        from .stored import ArtifactReader

        uri = self._locations.get(run_id)
        if uri is None:
            uri = self._locations[run_id] = self.client.get_run(run_id).info.artifact_uri
        local = stores.local_path(uri) if uri.startswith("file:") else (
            Path(uri) if "://" not in uri else None)
        if local is not None and local.is_dir():
            return ArtifactReader(local_dir=local)
        return ArtifactReader(download=lambda path, dst: self.download(run_id, path, dst))

    def system_metrics(self, run_id: str) -> SystemMetrics:
        """Start logging MLflow's system metrics on ``run_id``; call ``.stop()`` before closing it."""
        return SystemMetrics(self.uri, run_id)

    def load_arrays(self, run_id: str, dst: str, path: str = "arrays.npz") -> dict:
        try:
            local = self.download(run_id, path, dst)
        except Exception:  # no arrays were logged
            return {}
        with np.load(local) as data:
            return {k: data[k] for k in data.files}

    def load_table(self, run_id: str, name: str = "summary") -> list[dict]:
        with tempfile.TemporaryDirectory() as tmp:
            local = self.download(run_id, f"{name}.json", tmp)
            data = json.loads(Path(local).read_text())
        columns, rows = data["columns"], data["data"]
        return [dict(zip(columns, row)) for row in rows]

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        return [f.path for f in self.client.list_artifacts(run_id, path)]

    def log_dataset(self, run_id: str, name: str, clips: list[dict]) -> None:
        """Record the clips as an MLflow dataset input (data lineage in the UI).

        One row per clip (its identity: name, path, sha256, ...). The dataset
        entity is built here rather than through ``mlflow.data.from_pandas``,
        which would build a DataFrame and infer its schema for every run.
        """
        inputs = [mlflow.entities.DatasetInput(clips_dataset(name, clips), tags=[])]
        try:
            self.client.log_inputs(run_id, datasets=inputs)
        except mlflow.exceptions.MlflowException as exc:
            # Runs that log the same new dataset at once (workers starting on one clip) race
            # in MLflow's store, which looks the dataset up and then inserts it: the later
            # insert breaks the dataset's unique key and the request fails. The dataset
            # exists now, so the same request links it.
            text = str(exc).lower()
            if "dataset" not in text or not ("unique" in text or "duplicate" in text):
                raise
            logger.info("dataset %s was created by another run meanwhile; linking it", name)
            self.client.log_inputs(run_id, datasets=inputs)

    # --------------------------------------- the CLI's calls (delegates; see the modules)
    # cli.py still calls these; they load their module on use, so that a process that only
    # records runs (the measuring process) never imports them.
    def ui_url(self, experiment_id, host="127.0.0.1", port=5000, view_key=None, charts=False):
        from .sharedviews import ui_url

        return ui_url(experiment_id, host, port, view_key, charts)

    def load_view(self, experiment_id: str, key: str):
        from .sharedviews import load_view

        return load_view(self, experiment_id, key)

    def latest_view(self, experiment_id):
        from .sharedviews import latest_view

        return latest_view(self, experiment_id)

    def latest_study_experiment(self):
        from .studyruns import latest_study_experiment

        return latest_study_experiment(self)

    def resolve_study_run(self, run_id: str = "latest"):
        from .studyruns import resolve_study_run

        return resolve_study_run(self, run_id)

    def log_check(self, backend, rows, status, clip, figures=None) -> str:
        from .checklog import log_check

        return log_check(self, backend, rows, status, clip, figures)

    def last_check(self, backend_name: str) -> str:
        from .checklog import last_check

        return last_check(self, backend_name)


class SystemMetrics:
    """MLflow's system metrics (CPU, memory, disk, network; GPU through ``nvidia-ml-py``
    when it is importable) logged on one run as ``system/*`` metrics while it runs.

    MLflow samples every ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` seconds (10 by
    default) in a thread; :meth:`stop` also logs the samples taken since the last logged
    step, so that even a study shorter than one interval has its figures.
    """

    def __init__(self, tracking_uri: str, run_id: str):
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._monitor = SystemMetricsMonitor(run_id, tracking_uri=tracking_uri)
        self._monitor.start()

    def stop(self) -> None:
        """Stop sampling and log the last samples (idempotent)."""
        monitor, self._monitor = self._monitor, None
        if monitor is None:
            return
        monitor.finish()
        monitor.collect_metrics()
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()


def ui_command(tracker: Tracker, host: str, port: int) -> list[str]:
    """:func:`vampstudy.sharedviews.ui_command` (cli.py imports it from here)."""
    from .sharedviews import ui_command as command

    return command(tracker, host, port)
