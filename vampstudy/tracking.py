"""MLflow: store resolution, the run layout, logging, and finding runs again.

This is the only module that imports mlflow. It uses :class:`MlflowClient`
with explicit run ids (never the fluent active-run stack) and sets
``mlflow.parentRunId`` explicitly on child runs.

Tracking URI resolution: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``,
else a sqlite database ``mlruns/mlflow.db`` under the current directory with
artifacts in ``mlruns/artifacts`` (MLflow 3 refuses the old ``./mlruns`` file store).
URI checks, the artifact folder of sqlite stores and the store lock live in
:mod:`vampstudy.stores`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import tempfile
import time
from contextlib import contextmanager
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

from . import stores
from .errors import TrackingError
from .spool import write_artifact

logger = logging.getLogger(__name__)

DEFAULT_STORE_DIR = "mlruns"
PARAM_MAX = 6000
TAG_LOGGED_ARTIFACTS = "mlflow.loggedArtifacts"  # MLflow: the run's tables, for the UI and load_table

from .layout import (TAG_BACKEND, TAG_CHECK, TAG_CONDITION, TAG_CONFIG, TAG_NOTE,  # noqa: E402,F401
                     TAG_PARENT, TAG_ROLE, TAG_STUDY, TAG_TRIAL)
TAG_LATEST_VIEW = "vampstudy.latest_view"  # experiment tag: key of the newest saved runs view
VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # MLflow UI: experiment tag of a shared view
VIEW_URL_PARAM = "viewStateShareKey"         # MLflow UI: URL parameter naming that view


def default_store(root: str | Path | None = None) -> tuple[str, str]:
    """``(tracking_uri, artifact_root_uri)`` for the default sqlite store under ``root/mlruns``."""
    base = Path(root or os.getcwd()) / DEFAULT_STORE_DIR
    return f"sqlite:///{(base / 'mlflow.db').resolve()}", (base / "artifacts").resolve().as_uri()


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else the default sqlite store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_store()[0]


def _plain(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)


@contextmanager
def _short_http_retries(force: bool = False):
    """Fail fast when probing a server (MLflow retries HTTP for minutes by default); the
    user's own MLFLOW_HTTP_REQUEST_* settings win unless ``force``."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                             "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    put = os.environ.__setitem__ if force else os.environ.setdefault
    put("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    put("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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


class StoreFileGone(TrackingError):
    """A statement refused because the sqlite database file vanished or was replaced."""


_OPENED: dict[str, tuple[int, int]] = {}   # sqlite database path → its file when opened


def _guard_database_file(client: MlflowClient, path: Path) -> None:
    """Refuse every statement, commit and new connection of ``client``'s sqlite store while
    its database file is not the file the Tracker opened (:data:`_OPENED`).

    Without this, a connection MLflow keeps open goes on writing into a deleted file (work
    lost without an error) and a new connection creates an empty database at the path. With
    it, the store call fails with :class:`StoreFileGone`, the probe says why
    (:func:`vampstudy.stores.database_file_problem`), and :mod:`vampstudy.patience` waits for
    the file to come back.
    """
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    engine = getattr(store, "engine", None)
    if engine is None or getattr(engine, "_vampstudy_guarded", False):
        return
    from sqlalchemy import event

    key = str(path)

    def check(*_args, **_kwargs):
        if key not in _OPENED:   # a Tracker is opening (or creating) the store right now
            return None
        problem = stores.database_file_problem(path, _OPENED[key])
        if problem is not None:
            raise StoreFileGone(f"the tracking store refused a write: {problem}")
        return None

    for name in ("before_cursor_execute", "commit", "do_connect"):
        event.listen(engine, name, check)
    engine._vampstudy_guarded = True


class _Client(MlflowClient):
    """An :class:`MlflowClient` whose artifact uploads fail with one clear line."""


for _name in ("log_artifact", "log_artifacts", "log_text", "log_figure", "log_table", "log_dict",
              "log_image"):
    if hasattr(MlflowClient, _name):
        setattr(_Client, _name, _artifact_write(getattr(MlflowClient, _name)))


def _column_type(values: list) -> str:
    """MLflow's column type for a list of plain values."""
    if all(isinstance(v, bool) for v in values):
        return "boolean"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "long"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "double"
    return "string"


def clips_dataset(name: str, clips: list[dict]):
    """An MLflow dataset entity whose rows are the clips' identities.

    Its source is the folder the clip files share (``local``), or, for clips with
    no file (the built-in demo), a ``code`` source naming them. The digest is the
    first 8 hex digits of the SHA-256 of the rows (as canonical JSON).
    """
    columns = list(dict.fromkeys(k for c in clips for k in c))
    schema = {"mlflow_colspec": [
        {"type": _column_type([c[k] for c in clips if k in c]), "name": k,
         "required": all(k in c for c in clips)} for k in columns]}
    rows = json.dumps(clips, sort_keys=True, default=str)
    paths = [Path(str(c.get("path"))) for c in clips]
    if paths and all(p.exists() for p in paths):
        source_type = "local"
        source = {"uri": os.path.commonpath([str(p.resolve().parent) for p in paths])}
    else:  # the built-in demo clip has no file
        source_type = "code"
        source = {"tags": {"vampstudy.source": ", ".join(map(str, paths))}}
    return mlflow.entities.Dataset(
        name=name, digest=hashlib.sha256(rows.encode()).hexdigest()[:8],
        source_type=source_type, source=json.dumps(source), schema=json.dumps(schema),
        profile=json.dumps({"num_rows": len(clips), "num_elements": len(clips) * len(columns)}))


def table_files(rows: list[dict]) -> tuple[bytes, bytes]:
    """``(json, csv)`` of a table: the JSON in MLflow's table format (pandas' ``split``
    orient without index: ``{"columns": [...], "data": [[...], ...]}``, non-finite numbers
    as null), the CSV with a header row. Columns in first-seen order."""
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def plain(value):
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not np.isfinite(value):
            return None
        return value

    data = [[plain(row.get(c)) for c in columns] for row in rows]
    text = json.dumps({"columns": columns, "data": data}, default=str)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return text.encode(), buf.getvalue().encode()


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
            with stores.store_lock(self.uri), _short_http_retries():
                if db is not None:
                    _OPENED.pop(str(db), None)
                self.client = _Client(tracking_uri=self.uri)
                self.client.search_experiments(max_results=1)  # creates a new store's tables
                self._use_artifact_root()
                if db is not None:
                    self._db_identity = stores.file_identity(db)
                    _OPENED[str(db)] = self._db_identity
                    _guard_database_file(self.client, db)
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

    def ui_url(self, experiment_id: str | None, host: str = "127.0.0.1", port: int = 5000,
               view_key: str | None = None, charts: bool = False) -> str:
        """The classic runs table (MLflow 3's UI opens the GenAI view otherwise), opened on the
        saved view ``view_key`` (:meth:`save_view`) when given, on its charts when ``charts``."""
        base = f"http://{host}:{port}/"
        if experiment_id is None:
            return base
        url = f"{base}#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        if view_key:
            url += f"&{VIEW_URL_PARAM}={view_key}"
        return url + "&compareRunsMode=CHART" if charts else url

    def save_view(self, experiment_id: str, state: dict, key: str, name: str = "") -> str:
        """Store a runs-view state (columns, sort, charts; see :mod:`vampstudy.views`) as the
        MLflow UI's shared view ``key`` and mark it the experiment's latest; returns ``key``.

        MLflow's UI reads the experiment tag ``mlflow.sharedViewState.<key>`` when the URL
        carries ``viewStateShareKey=<key>``; the value is a saved-view envelope
        ``{"name", "createdAt", "state"}`` whose ``state`` is the view as JSON text.
        """
        envelope = {"name": name or key, "createdAt": int(time.time() * 1000),
                    "state": json.dumps(state, separators=(",", ":"))}
        self.client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + key,
                                       json.dumps(envelope, separators=(",", ":")))
        self.client.set_experiment_tag(experiment_id, TAG_LATEST_VIEW, key)
        return key

    def load_view(self, experiment_id: str, key: str) -> dict | None:
        """The state saved by :meth:`save_view` under ``key`` (None when absent)."""
        value = self.client.get_experiment(experiment_id).tags.get(VIEW_TAG_PREFIX + key)
        return None if value is None else json.loads(json.loads(value)["state"])

    def latest_view(self, experiment_id: str | None) -> str | None:
        """The key of the view saved last on the experiment (None when there is none)."""
        if experiment_id is None:
            return None
        return self.client.get_experiment(experiment_id).tags.get(TAG_LATEST_VIEW)

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

    def log_arrays(self, run_id: str, arrays: dict, path: str = "arrays.npz") -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        self.log_bytes(run_id, buf.getvalue(), path)

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
        return _short_http_retries(force)

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
        a request while the run is open)."""
        with tempfile.TemporaryDirectory() as tmp:
            for path, data in files.items():
                local = Path(tmp) / path
                local.parent.mkdir(parents=True, exist_ok=True)
                write_artifact(local, data)
            uri = self._artifact_uris.get(run_id)
            if uri is None:
                self.client.log_artifacts(run_id, tmp)
                return
            try:
                get_artifact_repository(uri, tracking_uri=self.uri).log_artifacts(tmp)
            except OSError as exc:
                raise TrackingError(stores.artifact_error(uri, exc)) from exc

    @staticmethod
    def arrays_bytes(arrays: dict) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        return buf.getvalue()

    # ----------------------------------------------------------- search
    def find_runs(self, experiment_id: str, tags: dict, statuses: tuple[str, ...] = ()) -> list:
        """Runs whose tags equal ``tags`` (newest first), optionally of the given statuses."""
        clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        runs = self.client.search_runs([experiment_id], " and ".join(clauses),
                                       order_by=["attributes.start_time DESC"], max_results=5000)
        if statuses:
            runs = [r for r in runs if r.info.status in statuses]
        return runs

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

    # ------------------------------------------------------------ study runs
    def study_runs(self, max_results: int = 50) -> list:
        """Parent (study) runs across experiments, newest first."""
        exps = [e.experiment_id for e in self.client.search_experiments()]
        if not exps:
            return []
        return self.client.search_runs(exps, f"tags.`{TAG_ROLE}` = 'study'",
                                       order_by=["attributes.start_time DESC"],
                                       max_results=max_results)

    def latest_study_experiment(self) -> str | None:
        runs = self.study_runs(max_results=1)
        return runs[0].info.experiment_id if runs else None

    def resolve_study_run(self, run_id: str = "latest"):
        """A study's parent run by id, or the newest one for ``latest``."""
        if run_id == "latest":
            runs = self.study_runs(max_results=1)
            if not runs:
                raise TrackingError(f"no study runs in {self.uri}; run `vampstudy run periodic` first")
            return runs[0]
        try:
            return self.client.get_run(run_id)
        except Exception as exc:
            raise TrackingError(f"no run {run_id!r} in {self.uri}; `vampstudy show` without an id shows "
                      "the latest study run") from exc

    # --------------------------------------------------------------- checks
    CHECK_EXPERIMENT = "vampstudy-checks"

    def log_check(self, backend, rows: list[dict], status: str, clip: dict,
                  figures: dict | None = None) -> str:
        """Record a ``vampstudy check`` battery as a run tagged as a check (not a study).

        ``figures`` maps artifact paths (e.g. ``figures/sampling_schedule.png``)
        to matplotlib figures logged on the run.
        """
        exp = self.experiment_id(self.CHECK_EXPERIMENT)
        run_id = self.start_run(exp, f"check · {backend.name} · {time.strftime('%Y-%m-%d %H:%M:%S')}",
                                {TAG_ROLE: "check", TAG_BACKEND: backend.name,
                                 "vampstudy.check_status": status})
        try:
            self.log_params(run_id, {**backend.info(), **backend.options(),
                                     "audio_path": clip.get("path"), "audio_sha256": clip.get("sha256")})
            metrics = {}
            for row in rows:
                key = "check_" + "".join(ch if ch.isalnum() else "_" for ch in row["check"])
                metrics[key] = {"PASS": 1.0, "WARN": 0.5, "FAIL": 0.0}[row["status"]]
                if row.get("value") is not None:
                    metrics[key + "_value"] = row["value"]
            self.log_metrics(run_id, metrics)
            self.log_table(run_id, rows, "checks")
            for path, figure in (figures or {}).items():
                self.log_figure(run_id, figure, path)
        finally:
            self.finish(run_id, "FINISHED")
        return run_id

    def last_check(self, backend_name: str) -> str:
        """``STATUS (check run ID, date)`` of the newest check of this backend, or ``never``."""
        exp = self.experiment_id(self.CHECK_EXPERIMENT, create=False)
        if exp is None:
            return "never"
        runs = self.find_runs(exp, {TAG_ROLE: "check", TAG_BACKEND: backend_name})
        if not runs:
            return "never"
        run = runs[0]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.info.start_time / 1000))
        return f"{run.data.tags.get('vampstudy.check_status', '?')} (check run {run.info.run_id}, {when})"


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
    """The command line that starts MLflow's UI on the tracker's store."""
    import sys

    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracker.uri,
           "--host", host, "--port", str(port)]
    if tracker.artifact_root:
        cmd += ["--default-artifact-root", tracker.artifact_root]
    return cmd

