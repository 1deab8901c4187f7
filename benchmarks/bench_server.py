"""What one tracking server holds: N writer processes recording child runs at once (issue 20).

One ``mlflow server --workers W`` on a real PostgreSQL (a throwaway cluster from
``initdb``/``pg_ctl``, artifacts served by the server into a local folder), all on
127.0.0.1; and, for comparison, the local sqlite store written directly (no server: how
the driver records). For each N in ``--writers`` (default 1, 2, 4, 8, 16), N processes
each record child runs under one parent for ``--seconds`` (at most ``--max-runs`` each),
through vampstudy's own recording code (:func:`vampstudy.record.record_child`, the path
a Ray worker takes with a tracking server), with the payload of a real trial: a periodic
trial of the reference backend on a 10 s clip, run once here — 14 params, 23 metrics and
3 series of 14 steps, ``audio/output.wav`` (10 s), ``figures/mask.png`` and
``figures/spectrogram.png``, ``arrays.npz``, the clips dataset, the parent link — plus a
14-row table (a real periodic child has none; the issue's payload has one).

Printed per N:

* ``runs/s`` — child runs recorded ÷ the wall time from the common start to the last run;
* ``p50 s``/``p95 s`` — the time one ``record_child`` takes (create → FINISHED);
* ``req/run`` — HTTP requests a writer sends per run (counted in the writer, retries included),
  and ``non-2xx`` — responses that were not 2xx (429/5xx are retried by MLflow's client);
* ``srv cpu s/run`` — CPU seconds of the mlflow server's processes per run, ``pg cpu s/run``
  those of PostgreSQL's, ``srv cores`` — the server's CPU seconds ÷ wall (how many cores it kept busy);
* ``rows/run`` — rows added to the store's tables per run, ``KB/run`` — artifact bytes per run;
* ``lost``/``dup`` — runs a writer recorded (got an id for) that the store does not list under
  the parent, and trial keys listed more than once; ``errors`` — runs whose recording raised.

Usage::

    python benchmarks/bench_server.py                          # writes benchmarks/results/server.txt
    python benchmarks/bench_server.py --writers 1,2,4 --seconds 10 --stores postgres

PostgreSQL needs Debian's ``postgresql`` package (``.ci/system-packages``) and, as root,
runs as ``nobody`` (``tests/servers.py``). The figures depend on the machine: on a shared
2-core machine the writers, the server and PostgreSQL compete for the same cores.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import pickle
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


# ------------------------------------------------------------------ the payload
def make_payload(path: Path, seconds: float = 10.0) -> dict:
    """Run one real trial (reference backend, periodic interval 7, a ``seconds`` clip) and
    pickle ``(planned trial, outcome)`` to ``path``; returns what it holds."""
    import soundfile as sf
    import torch

    from vampstudy.audio import synthesize_demo
    from vampstudy.backends import load_backend
    from vampstudy.execute import Job, execute_one
    from vampstudy.plan import plan_study
    from vampstudy.plots import RenderedFigure
    from vampstudy.registry import find_study
    from vampstudy.runner import prepare_clips
    from vampstudy.study import Session

    torch.set_num_threads(1)
    clip = path.parent / "clip.wav"
    sf.write(clip, synthesize_demo(duration=seconds, seed=1), 44100, subtype="PCM_16")
    backend = load_backend("reference", device="cpu")
    clips = prepare_clips(backend, [str(clip)])
    study = find_study("periodic").cls(intervals=(7,))
    study.prepare(Session(backend=backend, clips=clips, seeds=[0]))
    planned = plan_study(study, backend, clips, [0], experiment="bench").trials[0]
    result = execute_one(Job(study=study, backend=backend, backend_spec=("reference", {})), planned)
    if result.error:
        raise RuntimeError(f"the payload trial failed: {result.error}")
    outcome = result.outcome
    outcome.figures = {k: RenderedFigure.of(f) for k, f in outcome.figures.items()}
    outcome.tables = {"by_codebook": [
        {"codebook": i, **{name: values[i] for name, values in outcome.series.items()}}
        for i in range(len(next(iter(outcome.series.values()))))]}
    path.write_bytes(pickle.dumps((planned, outcome)))
    return {"params": len(planned.params) + len(outcome.params), "metrics": len(outcome.metrics),
            "series": sum(len(v) for v in outcome.series.values()),
            "files": len(outcome.audio) + len(outcome.figures) + bool(outcome.arrays),
            "tables": len(outcome.tables)}


# ------------------------------------------------------------------ a writer process
def _count_requests(counts: dict) -> None:
    """Count every HTTP request this process sends (by status) — retries included."""
    from urllib.parse import urlsplit

    import requests

    send = requests.Session.send

    def counting(self, request, **kwargs):
        response = send(self, request, **kwargs)
        counts["requests"] += 1
        path = urlsplit(request.url).path
        if "/artifacts/" in path:   # one name per artifact route, not per file
            path = path.split("/artifacts/")[0] + "/artifacts/…"
        endpoint = f"{request.method} {path.replace('/api/2.0/mlflow/', '')}"
        counts["endpoints"][endpoint] = counts["endpoints"].get(endpoint, 0) + 1
        if not 200 <= response.status_code < 300:
            counts["non2xx"] += 1
            counts.setdefault("statuses", {}).setdefault(response.status_code, 0)
            counts["statuses"][response.status_code] += 1
        return response

    requests.Session.send = counting


def writer(uri: str, experiment_id: str, parent_id: str, payload: str, index: int,
           seconds: float, max_runs: int, ready, start, results) -> None:
    """Record child runs under ``parent_id`` until ``seconds`` after ``start`` (at most
    ``max_runs``); put latencies, run ids and errors on ``results``."""
    import dataclasses

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    sys.stdout = open(os.devnull, "w")   # MLflow prints a link per finished run on a server
    from vampstudy.record import record_child
    from vampstudy.tracking import TAG_TRIAL, Tracker

    counts = {"requests": 0, "non2xx": 0, "endpoints": {}}
    _count_requests(counts)
    tracker = Tracker(uri)
    planned, outcome = pickle.loads(Path(payload).read_bytes())
    counts.update(requests=0, non2xx=0, endpoints={})
    ready.put(index)
    start.wait()
    t0 = time.time()
    latencies, recorded, errors = [], {}, []
    while len(latencies) < max_runs and time.time() - t0 < seconds:
        key = f"bench-w{index}-r{len(latencies)}"
        trial = dataclasses.replace(planned, run_name=f"w{index}-r{len(latencies)}",
                                    tags={**planned.tags, TAG_TRIAL: key})
        began = time.perf_counter()
        try:
            recorded[key] = record_child(tracker, experiment_id, parent_id, trial, outcome)
        except Exception as exc:  # noqa: BLE001 (counted and reported)
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
        latencies.append(time.perf_counter() - began)
    results.put({"index": index, "latencies": latencies, "recorded": recorded, "errors": errors,
                 "end": time.time(), **counts})


# ------------------------------------------------------------------ measuring the store
def _proc_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its reaped children (utime+stime+cutime+cstime)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def tree_cpu(root_pid: int | None) -> float:
    """CPU seconds of the process tree under ``root_pid`` (live processes and reaped ones)."""
    if root_pid is None:
        return 0.0
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(Path(entry, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0.0, [root_pid]
    while todo:
        pid = todo.pop()
        total += _proc_cpu(pid)
        todo += children.get(pid, [])
    return total


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class Store:
    """One store under test: its URI, row counter, artifact folder and CPU probes."""

    name = ""

    def __init__(self, root: Path, server_workers: int):
        self.root, self.server_workers = root, server_workers
        self.uri, self.artifacts, self.server_pid, self.db_pid = "", root, None, None

    def rows(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass


class PostgresStore(Store):
    name = "postgres"
    serve_artifacts = True

    def __init__(self, root: Path, server_workers: int):
        super().__init__(root, server_workers)
        from servers import postgres_cluster, start_mlflow_server

        self.pg = postgres_cluster()
        try:
            self.db_uri = self.pg.create_database("mlflow")
            self.artifacts = root / "artifacts"
            self.server = start_mlflow_server(self.db_uri, self.artifacts, workers=server_workers,
                                              serve_artifacts=self.serve_artifacts)
        except BaseException:
            self.pg.stop()
            raise
        self.uri, self.server_pid = self.server.url, self.server.process.pid
        self.db_pid = int((self.pg.data_dir / "postmaster.pid").read_text().split()[0])
        self.name = (f"postgres, server --workers {server_workers}" if self.serve_artifacts else
                     f"postgres, --workers {server_workers}, direct")

    def rows(self) -> int:
        import psycopg

        dsn = self.db_uri.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
            return sum(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables)

    def close(self) -> None:
        try:
            self.server.stop()
        finally:
            self.pg.stop()


class PostgresDirectStore(PostgresStore):
    """The server on PostgreSQL with ``--no-serve-artifacts``: writers put files straight into
    the artifact folder (what an object store or a shared file system gives), the server
    handles only the run's metadata."""

    serve_artifacts = False


class SqliteStore(Store):
    name = "sqlite (no server)"

    def __init__(self, root: Path, server_workers: int):
        super().__init__(root, server_workers)
        self.db = root / "mlflow.db"
        self.uri = f"sqlite:///{self.db}"
        self.artifacts = root / "artifacts"

    def rows(self) -> int:
        if not self.db.exists():
            return 0
        with sqlite3.connect(self.db) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()]
            return sum(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables)


# ------------------------------------------------------------------ one point
def run_point(store: Store, n: int, payload: Path, seconds: float, max_runs: int) -> dict:
    """N writers for ``seconds`` on ``store``; the point's figures."""
    from vampstudy.tracking import TAG_PARENT, TAG_ROLE, TAG_TRIAL, Tracker

    tracker = Tracker(store.uri)
    exp = tracker.experiment_id(f"bench-{n}-{time.time():.0f}")
    parent = tracker.start_run(exp, f"bench N={n}", {TAG_ROLE: "study"})
    ctx = mp.get_context("spawn")
    ready, start, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=writer, args=(store.uri, exp, parent, str(payload), i, seconds,
                                              max_runs, ready, start, results), daemon=True)
             for i in range(n)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=300)
    rows0, bytes0 = store.rows(), dir_bytes(store.artifacts)
    cpu0, db0 = tree_cpu(store.server_pid), tree_cpu(store.db_pid)
    t0 = time.time()
    start.set()
    got = [results.get(timeout=seconds + 900) for _ in procs]
    wall = max(g["end"] for g in got) - t0
    cpu1, db1 = tree_cpu(store.server_pid), tree_cpu(store.db_pid)
    for p in procs:
        p.join(timeout=60)
    tracker.finish(parent)
    lat = sorted(x for g in got for x in g["latencies"])
    recorded = {k: v for g in got for k, v in g["recorded"].items()}
    errors = [e for g in got for e in g["errors"]]
    listed: dict[str, int] = {}
    for run in tracker.find_runs(exp, {TAG_PARENT: parent}):
        key = run.data.tags.get(TAG_TRIAL)
        listed[key] = listed.get(key, 0) + 1
    runs = len(recorded)
    statuses: dict = {}
    for g in got:
        for code, count in g.get("statuses", {}).items():
            statuses[code] = statuses.get(code, 0) + count
    endpoints: dict = {}
    for g in got:
        for e, c in g["endpoints"].items():
            endpoints[e] = endpoints.get(e, 0) + c
    return {"endpoints": {e: c / max(len(lat), 1) for e, c in sorted(endpoints.items())},
            "n": n, "runs": runs, "wall": wall, "rate": runs / wall if wall else 0.0,
            "p50": statistics.median(lat) if lat else float("nan"),
            "p95": lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else float("nan"),
            "req": sum(g["requests"] for g in got) / max(len(lat), 1),
            "non2xx": sum(g["non2xx"] for g in got), "statuses": statuses,
            "srv_cpu": (cpu1 - cpu0) / max(runs, 1), "pg_cpu": (db1 - db0) / max(runs, 1),
            "srv_cores": (cpu1 - cpu0) / wall if wall else 0.0,
            "rows": (store.rows() - rows0 - 0) / max(runs, 1),
            "kb": (dir_bytes(store.artifacts) - bytes0) / 1024 / max(runs, 1),
            "lost": sum(1 for k in recorded if k not in listed),
            "dup": sum(1 for c in listed.values() if c > 1),
            "errors": len(errors), "first_errors": sorted(set(errors))[:3]}


# ------------------------------------------------------------------ the table
HEADER = (f"{'store':<30} {'N':>3} {'runs':>5} {'runs/s':>7} {'p50 s':>6} {'p95 s':>6} "
          f"{'req/run':>7} {'non-2xx':>7} {'srv cpu s/run':>13} {'pg cpu s/run':>12} "
          f"{'srv cores':>9} {'rows/run':>8} {'KB/run':>7} {'lost':>4} {'dup':>3} {'errors':>6}")


def fmt(store: str, r: dict) -> str:
    return (f"{store:<30} {r['n']:>3} {r['runs']:>5} {r['rate']:>7.2f} {r['p50']:>6.2f} "
            f"{r['p95']:>6.2f} {r['req']:>7.1f} {r['non2xx']:>7} {r['srv_cpu']:>13.3f} "
            f"{r['pg_cpu']:>12.3f} {r['srv_cores']:>9.2f} {r['rows']:>8.1f} {r['kb']:>7.0f} "
            f"{r['lost']:>4} {r['dup']:>3} {r['errors']:>6}")


def saturation(rows: list[dict]) -> str:
    """Where adding writers stops adding runs/s (less than 10 % more)."""
    best = rows[0]
    for prev, cur in zip(rows, rows[1:]):
        if cur["rate"] < prev["rate"] * 1.10:
            return (f"saturates at N = {prev['n']}: {prev['rate']:.2f} runs/s "
                    f"(N = {cur['n']}: {cur['rate']:.2f} runs/s, p95 {cur['p95']:.2f} s)")
        best = cur
    return f"no saturation up to N = {best['n']} ({best['rate']:.2f} runs/s)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--writers", default="1,2,4,8,16", help="N values [1,2,4,8,16]")
    ap.add_argument("--sqlite-writers", default="1,2,4", help="N values for sqlite [1,2,4]")
    ap.add_argument("--server-workers", type=int, default=2, help="mlflow server --workers [2]")
    ap.add_argument("--seconds", type=float, default=20.0, help="recording time per point [20]")
    ap.add_argument("--max-runs", type=int, default=60, help="runs per writer at most [60]")
    ap.add_argument("--stores", default="postgres,postgres-direct,sqlite",
                    help="postgres (artifacts through the server), postgres-direct (artifacts "
                         "written by the writers: --no-serve-artifacts), sqlite (no server)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "server.txt"))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    lines: list[str] = []

    def emit(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    tmp = Path(tempfile.mkdtemp(prefix="vs-bench-server-", dir="/tmp"))
    try:
        payload = tmp / "payload.pkl"
        held = make_payload(payload)
        emit(f"# bench_server.py {' '.join(argv or sys.argv[1:])}")
        emit(f"# {time.strftime('%Y-%m-%d %H:%M')} · {platform.node()} · {os.cpu_count()} cores · "
             f"load average {os.getloadavg()[0]:.1f} at start · python {platform.python_version()}")
        emit(f"# payload per child run: {held['params']} params, {held['metrics']} metrics, "
             f"{held['series']} series points, {held['files']} files (10 s WAV, 2 PNG, npz), "
             f"{held['tables']} table, clips dataset, parent link")
        emit(f"# {args.seconds:g} s per point (at most {args.max_runs} runs per writer)")
        emit(HEADER)
        for kind in args.stores.split(","):
            cls = {"postgres": PostgresStore, "postgres-direct": PostgresDirectStore,
                   "sqlite": SqliteStore}[kind.strip()]
            ns = args.sqlite_writers if kind.strip() == "sqlite" else args.writers
            root = tmp / kind.strip()
            root.mkdir()
            store = cls(root, args.server_workers)
            rows = []
            try:
                for n in [int(x) for x in ns.split(",") if x]:
                    r = run_point(store, n, payload, args.seconds, args.max_runs)
                    rows.append(r)
                    emit(fmt(store.name, r))
                    for e in r["first_errors"]:
                        emit(f"    error: {e}")
                    if n == 1 and r["endpoints"]:
                        emit("    requests per run: " + ", ".join(
                            f"{e} {c:.1f}" for e, c in r["endpoints"].items()))
                    if r["statuses"]:
                        emit(f"    non-2xx responses: {r['statuses']}")
            finally:
                store.close()
            emit(f"# {store.name}: {saturation(rows)}")
        emit(f"# load average {os.getloadavg()[0]:.1f} at end")
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text("\n".join(lines) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)   # about 1 GB of artifacts
    return 0


if __name__ == "__main__":
    sys.exit(main())
