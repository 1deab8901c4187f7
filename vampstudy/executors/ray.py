"""``--executor ray``: trials on a pool of Ray actors, each holding the backend once.

Each worker is a Ray actor that loads the backend once
(``load_backend(*job.backend_spec)``) and then runs whole trials — model stage and
measurement stage, through :func:`vampstudy.execute.execute_one` — so the study's hooks
and the results are the same as with the local executors for the same seeds. The study,
the prepared clips and their codes are put into Ray's object store once and fetched once
per worker; a trial is then sent as an index.

Scheduling is dynamic: every worker holds at most one trial, and the next trial goes to
whichever worker is free, so a slow trial never stalls the others; results reach the sink
(the recorder) as they arrive, from one background thread, while dispatch goes on.

Where runs are written: when the job carries a :class:`~vampstudy.execute.RemoteRecording`
(a tracking server), each worker records its own child run with
:func:`vampstudy.record.record_child` and returns the outcome for the analysis; otherwise
the worker returns the outcome (figures rendered to PNG on the worker) and the driver
records it. A worker asks the server first (:func:`vampstudy.stores.probe_store`) and
records without MLflow's HTTP retries: when the server does not answer, or a call fails,
the outcome goes back unrecorded (with the runs created meanwhile) and the driver records
it through its patient sink (:mod:`vampstudy.patience`) — the same outage line, waiting,
back-off and ``--tracking-patience`` as the local executors. At most ``workers`` + 1 results
wait for the sink, so an outage holds memory bounded.

Faults: a worker process that dies (killed, out of memory) fails its trial with
:class:`ray.exceptions.RayActorError`; a fresh worker replaces it and the trial is retried,
up to ``max_retries`` times, after which the trial's result is FAILED with the reason and
the other trials go on. A child run the dead worker left RUNNING on the server is marked
KILLED. Ctrl-C kills every worker (and the local Ray this executor started) before the
interrupt propagates to the runner, which marks the study KILLED.

Ray itself: ``address=None`` starts a private local Ray (``num_cpus`` = max(cores,
workers), a modest object store, no dashboard, files in a temp dir) and shuts it down in
:meth:`RayExecutor.close`; ``address="auto"`` or ``"ray://host:10001"`` joins a running
cluster (vampstudy must be installed on its nodes) and only disconnects at the end.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass

import ray
from ray.exceptions import RayActorError, RayTaskError

from ..errors import ConfigError, VampstudyError
from ..execute import Executor, Job, TrialResult, execute_one
from ..plots import RenderedFigure  # noqa: F401  (also the name workers ship figures as)

logger = logging.getLogger(__name__)

DEFAULT_OBJECT_STORE_MB = 500
TAG_ERROR = "vampstudy.error"
TAG_PARENT = "mlflow.parentRunId"
TAG_TRIAL = "vampstudy.trial_key"


class WorkersUnavailable(VampstudyError):
    """The Ray workers could not be started (resources, imports, or a backend that fails)."""


# ----------------------------------------------------------------- worker side
def render_figures(record) -> None:
    """Replace every matplotlib figure of ``record`` by its PNG (and close the figure)."""
    if not record.figures:
        return
    import matplotlib.pyplot as plt

    for name, fig in list(record.figures.items()):
        if isinstance(fig, RenderedFigure):
            continue
        record.figures[name] = RenderedFigure.of(fig)
        plt.close(fig)


@dataclass
class _Returned:
    """What a worker sends back for one trial (the driver re-attaches its PlannedTrial)."""

    position: int
    outcome: object
    error: str | None
    traceback: str | None
    run_id: str | None
    seconds: float
    half_written: list | None = None


class _Worker:
    """The Ray actor: one backend, many trials (see the module docstring)."""

    def __init__(self, sys_path: list, payload: list):
        for entry in reversed(sys_path):  # the driver's import path, before unpickling the study
            if entry not in sys.path:
                sys.path.insert(0, entry)
        from ..backends import load_backend

        self.job, self.trials = ray.get(payload[0])
        name, options = self.job.backend_spec
        self.backend = load_backend(name, **dict(options))
        self.tracker = None
        if self.job.remote is not None:
            from ..tracking import Tracker

            self.tracker = Tracker(self.job.remote.tracking_uri)

    def info(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "device": self.backend.device}

    def run(self, position: int) -> _Returned:
        planned = self.trials[position]
        result = execute_one(self.job, planned, self.backend)
        run_id, half_written = None, None
        if self.job.remote is not None:
            run_id, half_written = self._record(planned, result)
        if result.outcome is not None:
            render_figures(result.outcome)
        return _Returned(position, result.outcome, result.error, result.traceback, run_id,
                         result.seconds, half_written)

    def _record(self, planned, result) -> tuple:
        """Record the trial's child run on the tracking server: ``(run_id, None)``; or, when
        the server does not answer (asked first with the driver's short probe) or a call
        fails, ``(None, runs created meanwhile)``: the driver then records the trial
        patiently (:mod:`vampstudy.patience`) instead of this worker sitting in MLflow's
        retries, unseen."""
        from ..record import record_child
        from ..stores import probe_store

        remote = self.job.remote
        reason = probe_store(remote.tracking_uri)
        if reason is not None:
            logger.info("%s: the tracking server does not answer (%s); the driver records it",
                        planned.run_name, reason)
            return None, []
        created: list = []
        try:
            with self.tracker.fail_fast(force=True):
                return record_child(self.tracker, remote.experiment_id, remote.parent_run_id,
                                    planned, result.outcome, result.error, result.traceback,
                                    created=created), None
        except Exception as exc:   # redone by the driver, which tells a real error from an outage
            logger.info("%s: recording failed on the worker (%s); the driver records it",
                        planned.run_name, exc)
            return None, created


# ----------------------------------------------------------------- driver side
class RayExecutor(Executor):
    """Trials on ``workers`` Ray actors, scheduled dynamically, lost workers retried.

    Parameters
    ----------
    workers : int
        Number of worker actors, each with its own backend.
    gpus_per_worker : float
        GPUs reserved per worker (Ray's ``num_gpus``); fractions let workers share a GPU.
    address : str, optional
        ``None``: start a local Ray for this study. ``auto`` or ``ray://host:port``: join
        a running cluster.
    max_retries : int
        How often a trial whose worker died is retried on a fresh worker.
    cpus_per_worker : float
        CPUs reserved per worker (Ray's ``num_cpus``).
    object_store_mb : int
        Object store size of a local Ray, in MB.
    start_timeout : float
        Seconds to wait for the workers to start.
    """

    name = "ray"
    #: With a tracking server, the runner lets workers record their own child runs.
    records_remotely = True

    def __init__(self, workers: int = 2, gpus_per_worker: float = 0.0, address: str | None = None,
                 max_retries: int = 2, cpus_per_worker: float = 1.0,
                 object_store_mb: int = DEFAULT_OBJECT_STORE_MB, start_timeout: float = 300.0):
        if int(workers) < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}", option="--workers")
        if float(gpus_per_worker) < 0:
            raise ConfigError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker}",
                              option="--gpus-per-worker")
        if int(max_retries) < 0:
            raise ConfigError(f"--max-retries must be >= 0, got {max_retries}",
                              option="--max-retries")
        self.workers = int(workers)
        self.gpus_per_worker = float(gpus_per_worker)
        self.address = address or None
        self.max_retries = int(max_retries)
        self.cpus_per_worker = float(cpus_per_worker)
        self.object_store_mb = int(object_store_mb)
        self.start_timeout = float(start_timeout)
        self._actors: list = []
        self._started_ray = False
        self._connected = False
        self._tmp: str | None = None
        self._job: Job | None = None
        #: Timings of the last :meth:`execute`: ``start_s`` (Ray and workers up), ``run_s``
        #: (first dispatch to last result), ``deaths`` (workers lost).
        self.stats: dict = {}

    def describe(self) -> dict:
        return {"executor": self.name, "workers": self.workers,
                "gpus_per_worker": self.gpus_per_worker, "max_retries": self.max_retries,
                "ray_address": self.address or "local"}

    # ------------------------------------------------------------- Ray
    def _connect(self) -> None:
        if ray.is_initialized():  # a caller's own Ray session: use it, leave it running
            self._check_resources()
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # ray.init makes SIGTERM a plain sys.exit; keep the caller's handler (the CLI's
        # SIGTERM stops a study as Ctrl-C does: open runs KILLED)
        main = threading.current_thread() is threading.main_thread()
        on_sigterm = signal.getsignal(signal.SIGTERM) if main else None
        try:
            self._init_ray()
        finally:
            if on_sigterm is not None:
                signal.signal(signal.SIGTERM, on_sigterm)
        self._connected = True
        self._check_resources()

    def _init_ray(self) -> None:
        quiet = dict(log_to_driver=False, logging_level=logging.WARNING)
        if self.address:
            try:
                ray.init(address=self.address, **quiet)
            except Exception as exc:
                raise WorkersUnavailable(f"--address {self.address}: cannot join the Ray cluster "
                                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                                         "); start it (`ray start --head`) or check the "
                                         "address") from exc
        else:
            # a short private path: Ray's unix sockets live under it (107-byte limit)
            self._tmp = tempfile.mkdtemp(prefix="vs-ray-", dir="/tmp")
            cpus = max(os.cpu_count() or 1, int(self.workers * self.cpus_per_worker + 0.999))
            ray.init(num_cpus=cpus, object_store_memory=self.object_store_mb * 2 ** 20,
                     include_dashboard=False, _temp_dir=self._tmp, **quiet)
            self._started_ray = True

    def _check_resources(self) -> None:
        total = ray.cluster_resources()
        where = f"the Ray cluster at {self.address}" if self.address else "this machine"
        for resource, per in (("GPU", self.gpus_per_worker), ("CPU", self.cpus_per_worker)):
            need, have = self.workers * per, float(total.get(resource, 0.0))
            if per <= 0 or need <= have + 1e-9:
                continue
            fits = int(have // per)
            if resource == "GPU":
                hint = (f"use --workers {fits} or a smaller --gpus-per-worker" if fits else
                        "use --gpus-per-worker 0 (no GPU there)")
            else:
                hint = f"use --workers {max(fits, 1)}"
            raise ConfigError(f"{self.workers} workers × {per:g} {resource} = {need:g} "
                              f"{resource}s, but {where} has {have:g}; {hint}",
                              option="--gpus-per-worker" if resource == "GPU" else "--workers")

    def _new_actor(self, payload_ref):
        # a local Ray's workers import what the driver imports (tests, studies next to a script)
        sys_path = [p for p in sys.path if p and os.path.isdir(p)] if not self.address else []
        cls = _remote_worker().options(num_cpus=self.cpus_per_worker,
                                          num_gpus=self.gpus_per_worker, max_restarts=0,
                                          max_task_retries=0)
        actor = cls.remote(sys_path, [payload_ref])
        self._actors.append(actor)
        return actor

    def _start_workers(self, payload_ref) -> list:
        actors = [self._new_actor(payload_ref) for _ in range(self.workers)]
        probes = {a.info.remote(): a for a in actors}
        ready, pending = ray.wait(list(probes), num_returns=len(probes), timeout=self.start_timeout)
        if pending:
            raise WorkersUnavailable(f"only {len(ready)} of {self.workers} Ray workers started "
                                     f"within {self.start_timeout:.0f} s; the cluster lacks "
                                     "resources for them (see `ray status`)")
        for ref in ready:
            try:
                info = ray.get(ref)
            except RayActorError as exc:
                raise WorkersUnavailable(f"a Ray worker could not start: {_reason(exc)}") from exc
            logger.info("ray worker pid %s on %s (%s)", info["pid"], info["host"], info["device"])
        return actors

    def _retire(self, actor) -> None:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass
        if actor in self._actors:
            self._actors.remove(actor)

    # ------------------------------------------------------------ execute
    def execute(self, job, trials, sink):
        trials = list(trials)
        self._job = job
        self.stats = {"start_s": 0.0, "run_s": 0.0, "deaths": 0}
        if not trials:
            return
        started = time.time()
        self._connect()
        shipped = Job(study=job.study, backend=None, backend_spec=job.backend_spec,
                      remote=job.remote)
        payload_ref = ray.put((shipped, trials))
        idle = deque(self._start_workers(payload_ref))
        self.stats["start_s"] = time.time() - started

        queue = deque((pos, 1) for pos in range(len(trials)))   # (position, attempt)
        in_flight: dict = {}
        sinking: deque[Future] = deque()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vampstudy-record")
        run_started = time.time()

        def emit(result: TrialResult) -> None:
            sinking.append(pool.submit(sink, result))

        def reap(wait: bool) -> None:
            while sinking and (wait or sinking[0].done()):
                sinking.popleft().result()   # re-raises a sink (tracking) failure

        try:
            while queue or in_flight:
                # at most workers + 1 results wait for the sink (which waits itself while the
                # store is away): memory stays bounded however long an outage lasts
                reap(wait=False)
                while queue and idle and len(sinking) <= self.workers:
                    actor = idle.popleft()
                    pos, attempt = queue.popleft()
                    in_flight[actor.run.remote(pos)] = (actor, pos, attempt)
                if not in_flight:   # every worker idle until the sink takes a result
                    wait_futures(list(sinking), timeout=1.0, return_when=FIRST_COMPLETED)
                    reap(wait=False)
                    continue
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
                reap(wait=False)
                for ref in ready:
                    self._collect(in_flight.pop(ref), ref, trials, queue, idle, payload_ref, emit)
            reap(wait=True)
            self.stats["run_s"] = time.time() - run_started
        except BaseException:
            self._kill_workers()
            for f in sinking:
                f.cancel()
            if job.remote is not None:
                self._close_orphans(None, "the study stopped while this trial ran")
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _collect(self, task: tuple, ref, trials, queue: deque, idle: deque, payload_ref,
                 emit) -> None:
        """Hand the result of one finished ``task`` (actor, position, attempt) to ``emit``.

        A worker that died is replaced by a fresh one and its trial queued again (or given
        up as FAILED after ``max_retries``); a worker that raised stops the execution."""
        actor, pos, attempt = task
        planned = trials[pos]
        try:
            ret = ray.get(ref)
        except RayActorError as exc:   # the worker process died
            given_up = self._worker_died(exc, actor, planned, attempt)
            if given_up is None:
                queue.appendleft((pos, attempt + 1))
            else:
                emit(given_up)
            if queue:
                idle.append(self._new_actor(payload_ref))
            return
        except RayTaskError as exc:    # the worker itself failed
            raise exc.as_instanceof_cause() from None
        idle.append(actor)
        emit(TrialResult(planned, ret.outcome, ret.error, ret.traceback, ret.run_id,
                         attempts=attempt, seconds=ret.seconds, half_written=ret.half_written))

    def _worker_died(self, exc: BaseException, actor, planned, attempt: int):
        """Retire a worker that died running ``planned``: None when the trial is to be tried
        again, else its FAILED result (``max_retries`` exhausted)."""
        self.stats["deaths"] += 1
        self._retire(actor)
        reason = _reason(exc)
        self._close_orphans(planned, reason)
        if attempt <= self.max_retries:
            logger.warning("worker died running %s (attempt %d: %s); retrying on a fresh worker",
                           planned.run_name, attempt, reason)
            return None
        return TrialResult(planned, None, f"WorkerDied: the Ray worker running this trial died "
                           f"{attempt} times (--max-retries {self.max_retries}); last: {reason}",
                           attempts=attempt)

    def _close_orphans(self, planned, reason: str) -> None:
        """Mark KILLED the child runs that dead workers left RUNNING on the tracking server."""
        remote = self._job.remote if self._job else None
        if remote is None:
            return
        try:
            from ..tracking import Tracker

            tracker = Tracker(remote.tracking_uri)
            with tracker.fail_fast():
                runs = tracker.find_runs(remote.experiment_id, {TAG_PARENT: remote.parent_run_id},
                                         statuses=("RUNNING",))
                for run in runs:
                    if planned is None or run.data.tags.get(TAG_TRIAL) == planned.key:
                        tracker.set_tags(run.info.run_id, {TAG_ERROR: f"worker lost: {reason}"[:500]})
                        tracker.finish(run.info.run_id, "KILLED")
        except Exception as exc:  # the server is gone too; --resume marks them later
            logger.error("could not close the runs of a lost worker: %s", exc)

    def _kill_workers(self) -> None:
        for actor in list(self._actors):
            self._retire(actor)

    def close(self) -> None:
        """Kill the workers; shut down the local Ray this executor started (idempotent)."""
        self._kill_workers()
        if self._connected:
            ray.shutdown()
            self._connected = False
        self._started_ray = False
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


_REMOTE_WORKER = None


def _remote_worker():
    """The Ray actor class of :class:`_Worker` (made once)."""
    global _REMOTE_WORKER
    if _REMOTE_WORKER is None:
        _REMOTE_WORKER = ray.remote(_Worker)
    return _REMOTE_WORKER


def _reason(exc: BaseException) -> str:
    """One line on why a worker died, from Ray's (long) error message."""
    text = " ".join(str(exc).split())
    for marker in ("The actor died", "Worker exit type", "exit detail"):
        i = text.find(marker)
        if i >= 0:
            text = text[i:]
            break
    return f"{type(exc).__name__}: {text[:300]}"
