"""``--executor process`` (the default): the model in this process, the rest in another.

The model process (the caller) runs, per trial in plan order, the seeding and
``study.model_stage`` — nothing else. One **measuring process**, started with ``spawn``
(never ``fork``: this process may hold CUDA) as soon as the executor exists, so that its
imports (MLflow, matplotlib, audiotools) overlap this process' loading the backend and
preparing the clips, does everything else.

A whole study (:meth:`ProcessExecutor.host`, what :func:`vampstudy.runner.run_study`
uses): the measuring process opens the tracking store, opens (or resumes) the parent
run, measures each trial (``study.measure_stage``: token and fidelity metrics, figures,
level metrics), records its child run, runs the analysis and closes the parent
(:mod:`vampstudy.executors.hosting`, through the runner's own
:func:`~vampstudy.tracked.track_study`). This process never imports MLflow nor matplotlib,
and its first model call waits for neither (nor for opening the store), unless
``--resume`` asks which trials are left. The study's result or error comes back
(errors whole: ``StudyFailed``, ``TrackingLost``, …), its outcomes holding handles on
their recorded audio (:mod:`vampstudy.stored`).

:meth:`ProcessExecutor.execute` (the :class:`~vampstudy.execute.Executor` interface for a
caller that records itself) measures and records the child runs in the measuring process
and hands the results back to the caller's sink
(:mod:`vampstudy.executors.measuring`).

What crosses: a trial's large tensors and arrays (decoded audio, codes, mask) through a
bounded ring of shared-memory slots (:mod:`vampstudy.executors.shm`; ``slots`` of them);
the model loop waits only when every slot is busy — the memory in flight is bounded.
Only small messages cross the pipe (:mod:`vampstudy.executors.wire`).

Threads: the measuring process runs torch (and OpenMP, MKL, OpenBLAS) on one thread; while
trials run, the model process leaves it one core (torch threads ``max(1, cores - 1)``, or
``model_threads``). Metrics computed with another thread count differ from ``sequential``'s
by float32 summation noise; on the same counts they are equal.

Faults: a measuring process that dies (killed, out of memory) stops the study with one
line (:class:`MeasuringProcessLost`; the parent run is marked FAILED from here) and
``--resume`` redoes what was not recorded. If the model process dies, the measuring
process sees its pipe close, marks the study FAILED and exits. A store outage is waited
out in the measuring process (:mod:`vampstudy.patience`), its one-line notices forwarded
here. Ctrl-C: the trials whose model stage finished are measured and recorded, then the
study is marked KILLED there (``SIGUSR1`` reaches it past the trials: the last records,
the analysis) and ``StudyInterrupted`` is raised here.

Results (params, metrics, artifacts, run order) are those of ``sequential``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from contextlib import contextmanager

from ..errors import ConfigError, VampstudyError
from ..execute import Executor, TrialResult, failed, seed_everything
from ..patience import DEFAULT_PATIENCE
from .measuring import main as measuring_main
from .wire import job_payload
from .shm import SlotRing, dumps

logger = logging.getLogger(__name__)

#: Environment of the measuring process: one math thread.
CHILD_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
_ENV_LOCK = threading.Lock()


class MeasuringProcessLost(VampstudyError):
    """The measuring process died (or never started) during a study."""


@contextmanager
def _environment(values: dict):
    """``os.environ`` with ``values`` set for the duration (a spawned child inherits it)."""
    with _ENV_LOCK:
        old = {k: os.environ.get(k) for k in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@contextmanager
def _main_not_reimported():
    """Keep ``spawn`` from importing the caller's ``__main__`` in the child: a script
    without a main guard would run again there. The child needs nothing from it (the
    study travels pickled by value, :mod:`vampstudy.executors.shm`)."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main and k in main.__dict__}
    if main is not None:
        main.__dict__.pop("__file__", None)
        main.__spec__ = None
    try:
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)


@contextmanager
def _torch_threads(wanted: int | None):
    """torch's intra-op threads set to ``wanted`` (default: one core left for the
    measuring process), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    n = wanted or min(before, max(1, (os.cpu_count() or 1) - 1))
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _signal_name(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class _Replies(threading.Thread):
    """Reads the measuring process' replies (one thread): results to the sink in order,
    slots back to the ring, notices and log lines, the end or an error."""

    def __init__(self, executor: "ProcessExecutor", trials: list, sink, notify):
        super().__init__(daemon=True, name="vampstudy-measure-replies")
        self.ex, self.trials, self.sink, self.notify = executor, trials, sink, notify
        self.error: BaseException | None = None
        self.done = False
        self.recorded = 0

    def run(self) -> None:
        while True:
            try:
                msg = self.ex._conn.recv()
            except (EOFError, OSError):   # the measuring process is gone
                self._fail(self.ex._lost(self.recorded, len(self.trials)))
                return
            try:
                if self._dispatch(msg):
                    return
            except BaseException as exc:   # the sink (the driver's recorder) failed
                self._fail(exc)
                return

    def _dispatch(self, msg: tuple) -> bool:
        kind = msg[0]
        if kind == "result":
            _, pos, slot, payload = msg
            data = pickle.loads(payload)
            if slot is not None:
                self.ex._ring.release(slot)
            model_started, model_s = self.ex._model_times.pop(pos, (None, None))
            self.sink(TrialResult(self.trials[pos], data["outcome"], data["error"],
                                  data["traceback"], data["run_id"], seconds=data["seconds"],
                                  model_started=model_started, model_s=model_s,
                                  measure_s=data.get("measure_s")))
            self.recorded += 1
        elif kind == "notice":
            self.notify(msg[1])
        elif kind == "log":
            logging.getLogger(msg[2]).log(msg[1], "%s", msg[3])
        elif kind == "ready":
            self.ex.stats["child_start_s"] = msg[1]
            self.ex._ready = True
        elif kind == "error":
            self._fail(pickle.loads(msg[1]))
            return True
        elif kind == "done":
            self.ex.stats.update(msg[1])
            with self.ex._ring.cv:
                self.done = True
                self.ex._ring.cv.notify_all()
            return True
        return False

    def _fail(self, exc: BaseException) -> None:
        with self.ex._ring.cv:
            self.error = self.error or exc
            self.ex._ring.cv.notify_all()

    def check(self) -> None:
        """Raise the measuring side's error, if any (called by the model loop)."""
        if self.error is not None:
            raise self.error
        self.ex._check_started()

    def wait_done(self) -> None:
        with self.ex._ring.cv:
            while not self.done:
                self.check()
                self.ex._ring.cv.wait(0.2)


class _StudyReplies(_Replies):
    """The replies of a whole study hosted by the measuring process (:meth:`ProcessExecutor.host`):
    slots back, progress, notices and log lines, the parent run's id, the trials to run,
    and at the end the study's result or error."""

    def __init__(self, executor: "ProcessExecutor", plan, progress, notify):
        super().__init__(executor, list(plan.todo), None, notify)
        self.plan, self.progress = plan, progress
        self.trial_of = {t.key: t.trial for t in plan.trials}
        self.todo: list | None = None
        self.opened: tuple[str, str] | None = None
        self.result = None

    def _dispatch(self, msg: tuple) -> bool:
        kind = msg[0]
        if kind == "release":
            self.ex._ring.release(msg[1])
        elif kind == "progress":
            _, key, status, i, total = msg
            self.recorded += status != "SKIPPED"
            if self.progress is not None:
                self.progress(self.trial_of[key], status, i, total)
        elif kind in ("todo", "opened", "study-done"):
            with self.ex._ring.cv:
                if kind == "todo":
                    self.todo = [self.plan.trials[i] for i in msg[1]]
                elif kind == "opened":
                    self.opened = (msg[1], msg[2])
                else:
                    self.result, self.done = pickle.loads(msg[1]), True
                self.ex._ring.cv.notify_all()
            return kind == "study-done"
        elif kind == "study-error":
            self._fail(pickle.loads(msg[1]))
            return True
        else:
            return super()._dispatch(msg)
        return False

    def wait_for(self, what: str):
        """Wait until ``what`` (``todo`` or ``result``) arrived; the study's error raises."""
        with self.ex._ring.cv:
            while getattr(self, what) is None and not self.done:
                self.check()
                self.ex._ring.cv.wait(0.2)
            self.check()
            return getattr(self, what)


class ProcessExecutor(Executor):
    """The model here, measurement and recording in one measuring process (see the module).

    Parameters
    ----------
    slots : int
        Shared-memory slots: trials whose model stage finished and that are not yet
        recorded. The model loop waits when all are busy (the memory bound).
    start_timeout : float
        Seconds the measuring process may take to start (imports) before the study stops.
    model_threads : int, optional
        torch threads of this process while trials run (restored after); by default one
        core is left to the measuring process: ``max(1, cores - 1)``, or fewer if torch
        has fewer already (``OMP_NUM_THREADS``, ``torch.set_num_threads``). Two processes
        whose thread pools together exceed the cores spin and wait on each other.
    """

    name = "process"
    #: The measuring process records the child runs itself, on any tracking store.
    records_remotely = True
    records_on_any_store = True

    def __init__(self, slots: int = 2, start_timeout: float = 300.0,
                 model_threads: int | None = None):
        if int(slots) < 1:
            raise ConfigError(f"slots must be >= 1, got {slots}")
        if model_threads is not None and int(model_threads) < 1:
            raise ConfigError(f"model_threads must be >= 1, got {model_threads}")
        self.slots = int(slots)
        self.model_threads = None if model_threads is None else int(model_threads)
        self.start_timeout = float(start_timeout)
        #: ``child_start_s`` (its imports), and of the last :meth:`execute`: ``model_s``
        #: (model stages), ``wait_s`` (the model loop waiting for a free slot), and from
        #: the measuring process ``measure_s`` and ``record_s`` (recording, reply included).
        self.stats: dict = {}
        self._model_times: dict[int, tuple[float, float]] = {}   # pos → (started, seconds)
        self._ring: SlotRing | None = None
        self._send_lock = threading.Lock()
        self._proc = self._conn = None
        self._ready = False
        self._start()

    @property
    def pid(self) -> int | None:
        """The measuring process' pid (None before it started or after :meth:`close`)."""
        return self._proc.pid if self._proc is not None else None

    def describe(self) -> dict:
        return {"executor": self.name, "slots": self.slots}

    def _start(self) -> None:
        """Start the measuring process, with a ring of free slots (a study that stopped
        midway may have left slots taken in the last one)."""
        from multiprocessing import resource_tracker

        if self._ring is not None:
            self._ring.close()
        self._ring = SlotRing(self.slots)
        ctx = multiprocessing.get_context("spawn")
        # one resource tracker for both processes (started before the pipe exists, so it
        # holds none of its ends): the child's attaching to a slot never ends in a tracker
        # of its own unlinking the parent's segments
        resource_tracker.ensure_running()
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=measuring_main, name="vampstudy-measure", daemon=True,
                           args=(child_conn, logging.getLogger().getEffectiveLevel()))
        with _environment(CHILD_THREADS), _main_not_reimported():
            proc.start()
        child_conn.close()   # the child's end lives in the child only: its death is our EOF
        self._proc, self._conn, self._ready = proc, parent_conn, False
        self._started_at = time.time()

    def _check_started(self) -> None:
        if not self._ready and time.time() - self._started_at > self.start_timeout:
            raise MeasuringProcessLost(f"the measuring process (pid {self.pid}) did not start "
                                       f"within {self.start_timeout:.0f} s; see the lines above, "
                                       "or use --executor pipelined")

    def _lost(self, recorded: int, total: int) -> MeasuringProcessLost:
        self._proc.join(2.0)
        how = _signal_name(self._proc.exitcode)
        if not self._ready:
            return MeasuringProcessLost(f"the measuring process (pid {self.pid}) could not start "
                                        f"({how}; see the lines above); use --executor pipelined")
        return MeasuringProcessLost(
            f"the measuring process (pid {self.pid}) died ({how}) after {recorded} of {total} "
            "conditions of this invocation were recorded; they are kept, continue with --resume")

    def _send(self, *msg) -> None:
        with self._send_lock:
            self._conn.send(msg)

    def _send_in_background(self, *msg) -> threading.Thread:
        """Send ``msg`` from a thread: a large message blocks until the measuring process
        reads it, which it does only once its imports are done; the model loop goes on.
        The send lock is taken here and released by the thread once sent, so the model
        loop's own sends follow this one, in order."""
        def send() -> None:
            try:
                self._conn.send(msg)
            except OSError:   # the measuring process is gone: the replies thread says so
                pass
            finally:
                self._send_lock.release()

        self._send_lock.acquire()
        sender = threading.Thread(target=send, daemon=True, name="vampstudy-send-study")
        sender.start()
        return sender

    # ------------------------------------------------------------ execute
    def execute(self, job, trials, sink):
        trials = list(trials)
        if not trials:
            return
        if self._proc is None or not self._proc.is_alive():
            self._start()
        try:
            payload = job_payload(job, trials, getattr(sink, "patience", DEFAULT_PATIENCE))
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise ConfigError(f"--executor process sends the study to the measuring process, but "
                              f"{type(job.study).__name__} cannot be pickled ({type(exc).__name__}: "
                              f"{exc}); use --executor pipelined") from exc
        replies = _Replies(self, trials, sink, getattr(sink, "notify", None) or logger.warning)
        self.stats.update(model_s=0.0, wait_s=0.0)
        with _torch_threads(self.model_threads):
            self._execute(job, trials, payload, replies)

    def _execute(self, job, trials: list, payload: bytes, replies: _Replies) -> None:
        try:
            replies.start()
            self._send("job", payload, self.slots)
            for pos, planned in enumerate(trials):
                self._model_stage(job, pos, planned, replies)
            self._send("end")
            replies.wait_done()
            logger.info("process executor: %s", ", ".join(f"{k} {v:.1f}" for k, v in
                                                        sorted(self.stats.items())))
        except KeyboardInterrupt:
            self._finish_in_flight(replies)
            raise
        except OSError as exc:   # the pipe broke: the measuring process is gone
            replies.join(5.0)
            raise replies.error or self._lost(replies.recorded, len(trials)) from exc
        except BaseException:
            self._kill()
            raise

    def _model_stage(self, job, pos: int, planned, replies: _Replies) -> None:
        """Seed, run one trial's model stage and hand it to the measuring process."""
        replies.check()
        started = time.time()
        try:
            seed_everything(planned.trial.seed)
            staged = job.study.model_stage(planned.trial, job.backend)
            arrays: list = []
            data = dumps(staged, arrays)
        except Exception as exc:
            result = failed(planned, exc, started)
            model_s = time.time() - started
            self._send("failed", pos, result.error, result.traceback, result.seconds, started,
                       model_s)
            return
        finally:
            model_s = time.time() - started
            self.stats["model_s"] += model_s
            if replies.sink is not None:   # execute(): the replies carry these (hosted: the trial)
                self._model_times[pos] = (started, model_s)   # vampstudy.phases
        del staged
        waiting = time.time()
        slot = self._ring.acquire(replies.check)
        self.stats["wait_s"] += time.time() - waiting
        name, layout = self._ring.put(slot, arrays)
        self._send("trial", pos, slot, name, layout, data, started, model_s)

    # ------------------------------------------------------------ a whole study
    #: The measuring process runs a whole study's tracking side (:meth:`host`).
    hosts_tracking = True

    def host(self, side, uri: str | None, progress=None, notify=None):
        """Run a study whose tracking side (:func:`vampstudy.runner.track_study`) runs in the
        measuring process (:mod:`vampstudy.executors.hosting`); this process runs the
        model stages only. Returns the :class:`~vampstudy.runner.StudyResult`; the
        study's errors (``StudyFailed``, ``StudyInterrupted``, ``TrackingLost``, …) are
        raised here as they were there."""
        from .hosting import study_payload

        try:
            if self._proc is None or not self._proc.is_alive():
                self._start()
            try:
                payload = study_payload(side, uri, self.describe())
            except (pickle.PicklingError, TypeError, AttributeError) as exc:
                raise ConfigError(f"--executor process sends the study to the measuring process, "
                                  f"but {type(side.study).__name__} cannot be pickled "
                                  f"({type(exc).__name__}: {exc}); use --executor pipelined"
                                  ) from exc
            replies = _StudyReplies(self, side.plan, progress, notify or logger.warning)
            replies.start()
            self._send_in_background("study", payload)
            self.stats.update(model_s=0.0, wait_s=0.0)
            with _torch_threads(self.model_threads):
                return self._host(side, replies, uri)
        finally:
            self.close()

    def _host(self, side, replies: _StudyReplies, uri: str | None):
        from ..execute import Job

        job = Job(study=side.study, backend=side.session.backend)
        try:
            todo = replies.wait_for("todo") if side.resume else side.plan.todo
            for planned in todo:
                self._model_stage(job, planned.index, planned, replies)
            self._send("end")
            return replies.wait_for("result")
        except KeyboardInterrupt:
            return self._interrupt(replies)
        except MeasuringProcessLost as exc:
            _close_orphaned(uri, replies.opened, exc)
            raise
        except OSError as exc:   # the pipe broke: the measuring process is gone
            replies.join(5.0)
            lost = replies.error or self._lost(replies.recorded, len(side.plan.todo))
            _close_orphaned(uri, replies.opened, lost)
            raise lost from exc

    def _interrupt(self, replies: _StudyReplies):
        """After Ctrl-C: the measuring process records what it holds, marks the study KILLED
        and answers ``StudyInterrupted``, raised from here (or, when the interrupt came
        after the last trial, finishes the study: its result is returned)."""
        try:
            self._send("interrupt")
            if self.pid is not None:   # past the trials (the last records, the analysis)
                os.kill(self.pid, signal.SIGUSR1)
            return replies.wait_for("result")
        except KeyboardInterrupt:   # a second Ctrl-C: stop now (--resume cleans up)
            self._kill()
            raise
        except (OSError, MeasuringProcessLost) as exc:
            logger.error("while stopping: %s", exc)
            self._kill()
            raise KeyboardInterrupt from exc

    def _finish_in_flight(self, replies: _Replies) -> None:
        """After Ctrl-C: let the measuring process record what it holds, then stop."""
        try:
            self._send("end")
            replies.wait_done()
        except KeyboardInterrupt:   # a second Ctrl-C: stop now
            self._kill()
        except Exception as exc:   # recording failed too; the interrupt still wins
            logger.error("while stopping: %s", exc)
            self._kill()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5.0)

    def close(self) -> None:
        """Stop the measuring process and remove the shared memory (idempotent)."""
        if self._proc is not None:
            if self._proc.is_alive():
                try:
                    self._send("close")
                except OSError:
                    pass
                self._proc.join(10.0)
            self._kill()
            self._proc = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._ring.close()


def _close_orphaned(uri: str | None, opened: tuple[str, str] | None, exc: BaseException) -> None:
    """Mark the parent run FAILED after the measuring process that held it died (the only
    time this process opens the tracking store)."""
    if opened is None:
        return
    import traceback

    from ..record import TAG_FAILED_STAGE
    from ..tracking import Tracker

    try:
        tracker = Tracker(uri)
        with tracker.fail_fast():
            parent = opened[1]
            tracker.log_text(parent, "".join(traceback.format_exception(exc)), "traceback.txt")
            tracker.set_tags(parent, {TAG_FAILED_STAGE: "execute"})
            tracker.finish(parent, "FAILED")
    except Exception as close_exc:   # the store itself is away: --resume takes it as it is
        logger.error("could not mark run %s FAILED: %s", opened[1], close_exc)
