"""Stage 2 of a study run, *execute*: planned trials → results, through an executor.

An executor takes the :class:`~vampstudy.plan.PlannedTrial` list of a plan and hands one
:class:`TrialResult` per trial to a ``sink`` (the recorder, :mod:`vampstudy.record`). It
never touches the tracking store itself, except where :class:`RemoteRecording` asks
workers to log their own child runs (Ray's on a tracking server; the measuring process
of ``process`` on any store).

Built in:

``sequential``
    One trial at a time, in plan order, in the calling thread: the simplest to debug.
``pipelined``
    The calling thread runs the model stage of trial *i + 1* while one background thread
    measures trial *i* (metrics, figures) and passes it to the sink, in plan order. At
    most ``max_in_flight`` trials are waiting for measurement, so memory stays bounded.
    Results, run order and artifacts are the same as ``sequential``.
``process`` (the default)
    The model stage in the calling process; measurement, recording and (for a whole
    study) the parent run and the analysis in one measuring process (``spawn``), decoded
    audio crossing in a bounded ring of shared-memory slots
    (:mod:`vampstudy.executors.process`). Results, run order and artifacts are the same
    as ``sequential``.
``ray``
    A pool of Ray actors (optional extra, :mod:`vampstudy.executors.ray`).

Executors are found by name in :mod:`vampstudy.executors` (:func:`~vampstudy.executors.make_executor`).

A trial's work is ``study.measure_stage(trial, study.model_stage(trial, backend), backend)``
after seeding every RNG with the trial's seed (:func:`run_trial`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .errors import ConfigError
from .levels import add_level_metrics
from .plan import PlannedTrial
from .study import Outcome, Study, Trial

logger = logging.getLogger(__name__)


@dataclass
class RemoteRecording:
    """Workers record their own child runs on this tracking server (see vampstudy.record)."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str


@dataclass
class Job:
    """What every trial of one study invocation shares.

    Attributes
    ----------
    study : Study
        Prepared (``prepare`` has run).
    backend : Backend
        The backend loaded in this process.
    backend_spec : tuple of (str, dict)
        ``(name, options)`` for :func:`vampstudy.backends.load_backend` in another process.
    remote : RemoteRecording, optional
        Set when workers log their own child runs; None when the driver records.
    """

    study: Study
    backend: object
    backend_spec: tuple = ("reference", {})
    remote: RemoteRecording | None = None


@dataclass
class TrialResult:
    """The outcome of one planned trial, or why it failed.

    ``run_id`` is set when the executor has already recorded the child run (remote
    recording); ``attempts`` counts tries (executors that retry lost workers).
    ``half_written`` is None unless a worker tried to record the run and could not (the
    store did not answer): then the driver records it, after removing the runs listed there
    (created before the attempt failed) and any the lost answers hid
    (:meth:`vampstudy.record.Recorder.record`).
    ``model_started`` (``time.time()`` when the model stage began), ``model_s`` and
    ``measure_s`` (seconds in each stage) are set by executors that time the stages
    (:mod:`vampstudy.phases`); None where unknown.
    """

    planned: PlannedTrial
    outcome: Outcome | None = None
    error: str | None = None
    traceback: str | None = None
    run_id: str | None = None
    attempts: int = 1
    seconds: float = 0.0
    half_written: list | None = None
    model_started: float | None = None
    model_s: float | None = None
    measure_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


Sink = Callable[[TrialResult], None]


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random (VampNet's build_mask draws from torch's global RNG)."""
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def _checked(study: Study, outcome, trial: Trial) -> Outcome:
    """The outcome, type-checked, with the level metrics (:mod:`vampstudy.levels`) added."""
    if not isinstance(outcome, Outcome):
        raise TypeError(f"{type(study).__name__}.generate() must return an Outcome, "
                        f"got {type(outcome).__name__}")
    return add_level_metrics(outcome, trial.clip.signal)


def measure(study: Study, trial: Trial, staged, backend) -> Outcome:
    """The measurement stage of one trial on its staged model output, checked, with the
    level metrics added (exceptions propagate)."""
    return _checked(study, study.measure_stage(trial, staged, backend), trial)


def run_trial(study: Study, trial: Trial, backend) -> Outcome:
    """Seed, run the model stage and the measurement stage of one trial (exceptions propagate)."""
    seed_everything(trial.seed)
    return measure(study, trial, study.model_stage(trial, backend), backend)


def failed(planned: PlannedTrial, exc: BaseException, started: float) -> TrialResult:
    """A FAILED result carrying the exception's one-line summary and traceback."""
    return TrialResult(planned, None, f"{type(exc).__name__}: {exc}",
                       "".join(traceback.format_exception(exc)), seconds=time.time() - started)


def execute_one(job: Job, planned: PlannedTrial, backend=None) -> TrialResult:
    """Run one trial on ``backend`` (the job's by default); a failure becomes a FAILED result.

    Like :func:`run_trial`, with each stage timed (``model_s``, ``measure_s``).
    """
    study, trial, backend = job.study, planned.trial, backend or job.backend
    started = time.time()
    try:
        seed_everything(trial.seed)
        staged = study.model_stage(trial, backend)
        model_done = time.time()
        outcome = _checked(study, study.measure_stage(trial, staged, backend), trial)
    except Exception as exc:  # KeyboardInterrupt and SystemExit propagate
        return failed(planned, exc, started)
    ended = time.time()
    return TrialResult(planned, outcome, seconds=ended - started, model_started=started,
                       model_s=model_done - started, measure_s=ended - model_done)


class Executor:
    """Turns planned trials into results; subclasses implement :meth:`execute`."""

    name = "executor"

    def execute(self, job: Job, trials: Sequence[PlannedTrial], sink: Sink) -> None:
        """Call ``sink`` once per trial with its :class:`TrialResult`.

        Failures of a trial are results, not exceptions. An exception raised by ``sink``
        (the tracking store failing) stops the execution and propagates; so does
        KeyboardInterrupt, after the executor recorded the trials whose model stage had
        finished and released its workers.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release workers (idempotent)."""

    def describe(self) -> dict:
        """Params recorded on the parent run (``executor``, worker counts, ...)."""
        return {"executor": self.name}


class SequentialExecutor(Executor):
    """One trial at a time in the calling thread, in plan order."""

    name = "sequential"

    def execute(self, job, trials, sink):
        for planned in trials:
            sink(execute_one(job, planned))


def _finish_pending(pending: deque) -> None:
    """On an interrupt: trials whose model call finished are done work, so measure and
    record them (at most ``max_in_flight``) before the interrupt goes on."""
    while pending:
        try:
            pending.popleft().result()
        except Exception as exc:  # recording failed too; the interrupt still wins
            logger.error("while stopping: %s", exc)


class PipelinedExecutor(Executor):
    """Model stage in the calling thread; measurement and recording in one background thread.

    Parameters
    ----------
    max_in_flight : int
        Trials whose model stage finished and that wait for measurement; the model loop
        waits when that many are pending (bounded memory).
    """

    name = "pipelined"

    def __init__(self, max_in_flight: int = 2):
        if max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight

    def describe(self):
        return {"executor": self.name, "max_in_flight": self.max_in_flight}

    def execute(self, job, trials, sink):
        study, backend = job.study, job.backend
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vampstudy-measure")
        pending: deque[Future] = deque()
        stop = threading.Event()

        def sink_once(result):
            if stop.is_set():   # an earlier sink call failed: nothing more is recorded
                return
            try:
                sink(result)
            except BaseException:
                stop.set()
                raise

        def measure_and_sink(planned, staged, started, model_s):
            if stop.is_set():
                return
            measure_started = time.time()
            try:
                outcome = measure(study, planned.trial, staged, backend)
                ended = time.time()
                result = TrialResult(planned, outcome, seconds=ended - started,
                                     model_started=started, model_s=model_s,
                                     measure_s=ended - measure_started)
            except Exception as exc:
                result = failed(planned, exc, started)
            sink_once(result)

        def drain(limit: int) -> None:
            while len(pending) > limit:
                pending.popleft().result()   # re-raises a sink (tracking) failure here

        try:
            for planned in trials:
                started = time.time()
                try:
                    seed_everything(planned.trial.seed)
                    staged = study.model_stage(planned.trial, backend)
                except Exception as exc:
                    result = failed(planned, exc, started)
                    pending.append(pool.submit(sink_once, result))
                else:
                    pending.append(pool.submit(measure_and_sink, planned, staged, started,
                                               time.time() - started))
                drain(self.max_in_flight)
            drain(0)
        except KeyboardInterrupt:
            _finish_pending(pending)
            raise
        except BaseException:
            stop.set()
            for f in pending:
                f.cancel()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
