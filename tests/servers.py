"""Throwaway servers for tests: an MLflow tracking server and a PostgreSQL cluster.

Both bind 127.0.0.1 on a free port, live in their own process group and
temp directory, and are stopped (process group killed, files removed) by
their handle — also when a test fails half-way, if used as context managers.

Examples
--------
>>> with postgres_cluster() as pg:                                      # doctest: +SKIP
...     uri = pg.create_database("mlflow")
...     with start_mlflow_server(uri, tmp_path / "artifacts") as server:
...         Tracker(server.url) ...

``start_mlflow_server`` works on any backend store MLflow accepts (sqlite too);
``server.kill()`` SIGKILLs it (for fault tests), ``server.stop()`` ends it cleanly.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["MlflowServer", "PostgresCluster", "free_port", "postgres_binaries",
           "postgres_cluster", "start_mlflow_server"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _killpg(proc: subprocess.Popen, sig: int, timeout: float) -> None:
    """Send ``sig`` to the process group of ``proc`` and wait; SIGKILL the group if it lingers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    # children (uvicorn/gunicorn workers) may outlive their leader: sweep the group
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(timeout=timeout)


# --------------------------------------------------------------------- MLflow
@dataclass
class MlflowServer:
    """A running ``mlflow server`` (see :func:`start_mlflow_server`)."""

    url: str
    process: subprocess.Popen
    log_path: Path
    backend_store_uri: str
    artifacts_dir: Path

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after ``timeout``."""
        _killpg(self.process, signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the server's process group at once (a crash, for fault tests)."""
        _killpg(self.process, signal.SIGKILL, 10.0)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> "MlflowServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _wait_healthy(url: str, proc: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode} during start-up:\n"
                               f"{log_path.read_text(errors='replace')[-4000:]}")
        try:  # /health answers before the store is usable: ask the tracking API itself
            with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
                healthy = resp.status == 200
            if healthy:
                with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?"
                                            "max_results=1", timeout=30) as resp:
                    if resp.status == 200:
                        return
        except OSError:
            pass
        time.sleep(0.25)
    _killpg(proc, signal.SIGKILL, 10.0)
    raise RuntimeError(f"mlflow server at {url} not healthy after {timeout:.0f} s:\n"
                       f"{log_path.read_text(errors='replace')[-4000:]}")


def start_mlflow_server(backend_store_uri: str, artifacts_dir: str | Path, *,
                        port: int | None = None, workers: int = 1,
                        timeout: float = 180.0, serve_artifacts: bool = True) -> MlflowServer:
    """Start ``mlflow server`` on 127.0.0.1 and wait until ``/health`` answers.

    Parameters
    ----------
    backend_store_uri : str
        ``sqlite:///…`` or ``postgresql+psycopg://…`` (any store MLflow accepts).
    artifacts_dir : path
        Where the server stores artifacts (``--serve-artifacts``: clients
        upload and download through the server, runs get ``mlflow-artifacts:/`` URIs).
    port : int, optional
        Default: a free port.
    workers : int
        Server worker processes. Keep 1 on sqlite (one writer).
    timeout : float
        Seconds to wait for the server to answer.
    serve_artifacts : bool
        False: ``--no-serve-artifacts``, runs get ``artifacts_dir`` itself as their artifact
        location and clients write there directly (as with a shared file system or an
        object store), the server handles no file.

    Returns
    -------
    MlflowServer
        ``url``, ``stop()``, ``kill()``; also a context manager that stops it.
    """
    artifacts_dir = Path(artifacts_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = artifacts_dir.parent / f"mlflow-server-{port}.log"
    cmd = [sys.executable, "-m", "mlflow", "server",
           "--backend-store-uri", backend_store_uri,
           *(["--serve-artifacts", "--artifacts-destination", str(artifacts_dir.resolve())]
             if serve_artifacts else
             ["--no-serve-artifacts", "--default-artifact-root", str(artifacts_dir.resolve())]),
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    # no GenAI job runner (extra processes a tracking test does not need)
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url, proc, log_path, timeout)
    return MlflowServer(url, proc, log_path, backend_store_uri, artifacts_dir)


# ----------------------------------------------------------------- PostgreSQL
def postgres_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: from PATH, else the newest
    ``/usr/lib/postgresql/*/bin`` (where Debian's ``postgresql`` package puts them)."""
    found = shutil.which("initdb"), shutil.which("pg_ctl")
    if all(found):
        return Path(os.path.realpath(found[0])).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)
    for folder in reversed(candidates):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


@dataclass
class PostgresCluster:
    """A throwaway PostgreSQL cluster (see :func:`postgres_cluster`)."""

    host: str
    port: int
    root: Path
    bin_dir: Path
    user: str = "postgres"
    _as_user: list = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def uri(self, database: str = "postgres", driver: str = "psycopg") -> str:
        """A SQLAlchemy URI, e.g. ``postgresql+psycopg://postgres@127.0.0.1:5433/mlflow``."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its SQLAlchemy URI (psycopg 3 driver)."""
        import psycopg

        with psycopg.connect(host=self.host, port=self.port, user=self.user, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)

    def stop(self) -> None:
        """Stop the server (immediate shutdown) and delete its files."""
        try:
            if (self.data_dir / "postmaster.pid").exists():
                subprocess.run(self._as_user + [str(self.bin_dir / "pg_ctl"), "-D",
                                                str(self.data_dir), "-m", "immediate", "-w",
                                                "stop"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PostgresCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def postgres_cluster(timeout: float = 60.0) -> PostgresCluster:
    """Create and start a PostgreSQL cluster in a temp dir; skip the test if impossible.

    ``initdb``/``pg_ctl`` come from :func:`postgres_binaries`. PostgreSQL
    refuses to run as root, so as root the cluster belongs to ``nobody`` and
    the commands run through ``runuser``. It listens only on 127.0.0.1 on a
    free port (unix socket inside its temp dir), trusts local connections
    (user ``postgres``, no password) and skips fsync. Use it as a context
    manager, or call ``stop()``.
    """
    bin_dir = postgres_binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl on PATH or in "
                    "/usr/lib/postgresql/*/bin); `apt-get install postgresql` (CI does, "
                    "see .ci/system-packages)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed; pip install 'vampstudy[server]'")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="vampstudy-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip("running as root without `runuser`: cannot start PostgreSQL as an "
                        "unprivileged user")
        as_user = [runuser, "-u", "nobody", "--"]
        os.chmod(root, 0o755)
        shutil.chown(root, "nobody")
    port = free_port()
    cluster = PostgresCluster("127.0.0.1", port, root, bin_dir, _as_user=as_user)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")

    def run(args: list[str], what: str) -> None:
        proc = subprocess.run(as_user + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=env, cwd=root, timeout=timeout, text=True)
        if proc.returncode != 0:
            log = root / "server.log"
            detail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            cluster.stop()
            raise RuntimeError(f"PostgreSQL {what} failed ({proc.returncode}):\n"
                               f"{proc.stdout[-3000:]}\n{detail}")

    run([str(bin_dir / "initdb"), "-D", str(cluster.data_dir), "-U", "postgres",
         "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"], "initdb")
    options = (f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off "
               "-c full_page_writes=off -c max_connections=200")
    run([str(bin_dir / "pg_ctl"), "-D", str(cluster.data_dir), "-l", str(root / "server.log"),
         "-o", options, "-w", "-t", str(int(timeout)), "start"], "start")
    return cluster
