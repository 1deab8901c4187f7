"""Tracking stores without MLflow: URI checks, where artifacts go, locks, experiment names.

Rules (the README's "Where results go" section documents them):

* A tracking URI is ``sqlite:///path/x.db`` (relative) or ``sqlite:////abs/x.db``,
  ``http(s)://host:port``, a SQLAlchemy database URI (``postgresql://``, ``mysql://``,
  ``mssql://``) or ``databricks``. Anything else — a typo'd scheme, a bare folder, the old
  ``file:`` store that MLflow 3 refuses — is refused in one line that says what to pass.
* For every sqlite store the artifacts live in the folder ``artifacts/`` beside the
  database file, one sub-folder per experiment *id* (never its name), so any string is a
  safe experiment name and nothing lands in the current folder's ``./mlruns``.
* Processes sharing one sqlite store serialise store creation and experiment creation with
  an advisory lock file ``<db>.lock`` beside the database.

Nothing here imports mlflow (:mod:`vampstudy.tracking` is the only module that does).
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from .errors import ConfigError, TrackingError

#: URI schemes MLflow can use as a tracking store (``+driver`` suffixes allowed for databases).
SUPPORTED_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
#: MLflow's limit on experiment names (``mlflow.utils.validation.MAX_EXPERIMENT_NAME_LENGTH``).
MAX_EXPERIMENT_NAME = 500
ARTIFACTS_DIR = "artifacts"
DEFAULT_STORE_DIR = "mlruns"
_DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def _sqlite_hint(path: Path) -> str:
    """``sqlite:///…`` for a path the user gave (a database file or a folder to hold one)."""
    target = path if path.suffix.lower() in _DB_SUFFIXES else path / "mlflow.db"
    return f"sqlite:///{target.expanduser().resolve()}"


def check_tracking_uri(uri: str) -> str:
    """Return ``uri`` if MLflow can use it as a tracking store, else raise one clear error.

    Raises
    ------
    TrackingError
        Empty, malformed or unsupported URIs, a folder or file path given without a
        scheme, the ``file:`` store, an ``http`` URI without a host or with a bad port, an
        in-memory sqlite database.
    """
    text = (uri or "").strip()
    if not text:
        raise TrackingError("the tracking URI is empty; pass --tracking-uri sqlite:///path/mlflow.db "
                            "or http://host:port, or leave it out to use ./mlruns")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if text == "databricks" or text.startswith("databricks://"):  # MLflow's Databricks profiles
        return text
    if not scheme or len(scheme) == 1:  # a plain path (or a Windows drive letter)
        p = Path(text)
        what = "a folder" if p.is_dir() or p.suffix.lower() not in _DB_SUFFIXES else "a file path"
        raise TrackingError(f"tracking URI {text!r} is {what}, not a URI; MLflow 3 keeps runs in a "
                            f"database: pass --tracking-uri {_sqlite_hint(p)}")
    if scheme == "file":
        p = Path(url2pathname(unquote(parts.path)))
        raise TrackingError(f"tracking URI {text!r} is MLflow's old file store, which MLflow 3 "
                            f"refuses; pass --tracking-uri {_sqlite_hint(p)} (to migrate old runs: "
                            "`mlflow migrate-filestore`)")
    base = scheme.split("+")[0]
    if base not in SUPPORTED_SCHEMES:
        raise TrackingError(f"tracking URI {text!r} has an unsupported scheme {parts.scheme!r}; use "
                            "sqlite:///path/mlflow.db, http(s)://host:port, postgresql://, "
                            "mysql:// or databricks")
    if base in ("http", "https"):
        try:
            port = parts.port
        except ValueError:
            raise TrackingError(f"tracking URI {text!r} has an invalid port; ports are 1-65535, "
                                f"e.g. {base}://127.0.0.1:5000") from None
        if not parts.hostname or port == 0:
            raise TrackingError(f"tracking URI {text!r} names no server; pass e.g. "
                                f"--tracking-uri {base}://127.0.0.1:5000")
    if base == "sqlite" and sqlite_path(text) is None:
        raise TrackingError(f"tracking URI {text!r} is an in-memory sqlite database that is lost "
                            "when vampstudy exits; pass a file: --tracking-uri sqlite:///mlruns/mlflow.db")
    return text


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:`` URI (relative to the current folder if the URI is),
    or None for other stores and for in-memory databases."""
    parts = urlsplit(uri)
    if parts.scheme.lower().split("+")[0] != "sqlite":
        return None
    rest = uri.split(":", 1)[1]
    if not rest.startswith("///"):
        return None  # sqlite:// (memory) or sqlite://host/... which sqlite does not have
    path = rest[3:].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(unquote(path))


def artifact_root(uri: str) -> str | None:
    """The artifact root (a ``file:`` URI) of a sqlite store: ``artifacts/`` beside the database."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.parent / ARTIFACTS_DIR).resolve().as_uri()


def local_path(root_uri: str) -> Path | None:
    """The local folder of a ``file:`` URI, else None."""
    parts = urlsplit(root_uri)
    return Path(url2pathname(unquote(parts.path))) if parts.scheme == "file" else None


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "it is read-only or not writable by this user"
    return exc.strerror or str(exc)


def prepare_sqlite_store(uri: str) -> None:
    """Create the database's folder and check the artifact folder is writable (a probe file).

    Raises
    ------
    TrackingError
        The folder cannot be created, or the artifact location cannot be written
        (read-only, not a folder, full disk): one line naming the place and the fix.
    """
    db = sqlite_path(uri)
    if db is None:
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(f"cannot create the folder {db.parent} for the tracking database "
                            f"({_os_reason(exc)}); pass --tracking-uri sqlite:///a/writable/place/"
                            "mlflow.db") from exc
    probe_artifact_root(artifact_root(uri))


def probe_artifact_root(root_uri: str | None) -> None:
    """Write and delete a small probe file in a local artifact root; raise TrackingError if that fails."""
    root = local_path(root_uri) if root_uri else None
    if root is None:
        return
    probe = root / f".vampstudy-probe-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise TrackingError(artifact_error(str(root), exc)) from exc
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


def artifact_error(where: str, exc: OSError) -> str:
    """One line for an artifact location that cannot be written."""
    return (f"cannot write artifacts to {where}: {_os_reason(exc)}; free space or fix its "
            "permissions, or pass --tracking-uri sqlite:///a/writable/place/mlflow.db "
            "(finished conditions are kept: re-run with --resume)")


@contextmanager
def store_lock(uri: str):
    """An exclusive advisory lock shared by every process using the same sqlite store.

    MLflow's sqlite store races when two processes create its tables or the same
    experiment at once (mlflow#4123, mlflow#6490); vampstudy holds this lock around
    both. Other stores need no lock (the server or database serialises).
    """
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    import fcntl

    lock_path = db.parent / f"{db.name}.lock"
    try:
        fh = open(lock_path, "a+")
    except OSError:  # a read-only folder: nothing to serialise, MLflow reports the real error
        yield
        return
    with fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def check_experiment_name(name) -> str:
    """An experiment name is any non-empty string of at most 500 characters (MLflow's limit).

    Names are never used as paths: artifacts live in a folder named by the experiment id.
    """
    if name is None or not isinstance(name, str) or not name.strip():
        raise ConfigError("--experiment: the name is empty; give the experiment a name, or leave the option "
                          "out to use the study's name", option="--experiment")
    if len(name) > MAX_EXPERIMENT_NAME:
        raise ConfigError(f"--experiment: the name is {len(name)} characters long; MLflow allows at most "
                          f"{MAX_EXPERIMENT_NAME}", option="--experiment")
    return name


def file_identity(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of the file at ``path``, or None when there is none: the same
    pair later means the same file (moved away and back included), another pair a new file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def database_file_problem(path: Path, identity: tuple[int, int] | None) -> str | None:
    """Why the sqlite database ``path`` opened as ``identity`` cannot be written now (it is
    gone, or another file is at its path), else None. Creates nothing."""
    now = file_identity(path)
    if now is None:
        return f"its database file {path} is gone"
    if identity is not None and now != identity:
        return (f"its database file {path} was replaced (another file is at its path; "
                "put the original back)")
    return None


def probe_store(uri: str, timeout: float = 2.0,
                identity: tuple[int, int] | None = None) -> str | None:
    """Ask the tracking store whether it answers now, without MLflow, within ``timeout`` s.

    Returns None when it answers, else why not (a short phrase for the terminal). An
    ``http(s)`` server is asked ``GET /health`` (any HTTP answer below 500 counts: a proxy
    asking for a login is still there); a sqlite store must have its database file and let
    a write transaction begin (another process holding a lock for longer fails); with
    ``identity`` (:func:`file_identity` of the file when the store was opened) it must still
    be that file, not a new one at its path. Nothing is created: a vanished database is
    reported, never replaced by an empty one. Stores it cannot ask this way (other databases,
    Databricks) count as answering: their calls alone tell.
    """
    import sqlite3
    import urllib.error
    import urllib.request

    scheme = urlsplit(uri).scheme.lower().split("+")[0]
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
                return None
        except urllib.error.HTTPError as exc:
            return None if exc.code < 500 else f"it answers HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            return f"no answer ({getattr(reason, 'strerror', None) or reason})"
    db = sqlite_path(uri) if scheme == "sqlite" else None
    if db is None:
        return None
    problem = database_file_problem(db, identity)
    if problem is not None:
        return problem
    try:
        conn = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=timeout)
    except sqlite3.Error as exc:
        return f"its database file cannot be opened ({exc})"
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.rollback()
        return None
    except sqlite3.Error as exc:
        return f"its database is {'locked' if 'locked' in str(exc) else exc}"
    finally:
        conn.close()


def default_store(root: str | Path | None = None) -> tuple[str, str]:
    """``(tracking_uri, artifact_root_uri)`` for the default sqlite store under ``root/mlruns``."""
    base = Path(root or os.getcwd()) / DEFAULT_STORE_DIR
    return f"sqlite:///{(base / 'mlflow.db').resolve()}", (base / "artifacts").resolve().as_uri()


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else the default sqlite store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_store()[0]


@contextmanager
def short_http_retries(force: bool = False):
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
