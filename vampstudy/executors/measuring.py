"""The measuring process of ``--executor process`` (:mod:`vampstudy.executors.process`).

Started with ``spawn`` by the model process, it imports what measurement and recording
need (MLflow, matplotlib, audiotools) while the model process loads its backend, then
serves one study invocation::

    parent → child   ("job", payload)          the study, the planned trials, where to record
                     ("trial", pos, slot, segment, layout, pickle, started)
                     ("failed", pos, error, traceback, seconds)   a model stage that failed
                     ("end",)  ("close",)
    child → parent   ("ready", seconds)  ("result", pos, slot, payload)  ("notice", line)
                     ("log", level, logger, message)  ("error", payload)  ("done", stats)

Each trial is measured (``study.measure_stage`` and the level metrics) in the order it
arrives, then recorded as a child run on the tracking store by this process through a
:class:`~vampstudy.patience.PatientSink` (an outage is announced in one line, forwarded
to the parent, and waited out up to the study's patience); the parent gets back the
outcome's params, metrics and series, and only the *names* of its audio, arrays and
figures: the parent's recorder reads those back from the recorded run on access
(:func:`vampstudy.stored.compact_outcome`), as it does for every recorded trial.

The process ignores SIGINT (Ctrl-C reaches the whole process group; the parent decides)
and exits by itself when the parent goes away (its end of the pipe closes).
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sys
import threading
import time
import traceback

from .shm import SlotReader, loads
from .wire import error_payload, load_payload

logger = logging.getLogger(__name__)


class _Pipe:
    """The child's end of the pipe; sends from any thread, one at a time."""

    def __init__(self, conn):
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, *msg) -> None:
        with self.lock:
            self.conn.send(msg)


class _ForwardLogs(logging.Handler):
    def __init__(self, pipe: _Pipe):
        super().__init__(logging.WARNING)
        self.pipe = pipe

    def emit(self, record):
        try:
            self.pipe.send("log", record.levelno, record.name, record.getMessage())
        except Exception:  # the parent is gone
            pass


class Server:
    """One ``execute`` in the measuring process: measure in arrival order, record patiently.

    Measurement runs in the main thread; recording (and the reply to the parent) in the
    :class:`~vampstudy.patience.PatientSink`'s thread, so trial *i* is recorded while
    trial *i + 1* is measured.
    """

    def __init__(self, pipe: _Pipe, data: dict):
        from ..patience import PatientSink

        self.pipe, self.job, self.trials = pipe, data["job"], data["trials"]
        self.reader = SlotReader()
        self.tracker = None
        if self.job.remote is not None:
            from ..tracking import Tracker

            self.tracker = Tracker(self.job.remote.tracking_uri)
        self.half_written: list = []
        self.patient = PatientSink(self._record,
                                   self.tracker.probe if self.tracker else (lambda: None),
                                   data["patience"], max_waiting=data["slots"],
                                   notify=lambda line: pipe.send("notice", line))
        self._reported = False
        #: Seconds spent measuring and recording (with the reply), sent with "done".
        self.stats = {"measure_s": 0.0, "record_s": 0.0}

    def handle(self, msg: tuple) -> None:
        from ..execute import TrialResult, failed, measure

        kind, pos = msg[0], msg[1] if len(msg) > 1 else None
        if kind == "end":
            self.patient.drain()
            self.pipe.send("done", dict(self.stats))
            return
        planned = self.trials[pos]
        if kind == "failed":
            _, _, error, tb, seconds = msg[:5]
            self.patient((pos, None, TrialResult(planned, None, error, tb, seconds=seconds)))
            return
        _, _, slot, name, layout, data, started = msg[:7]
        begun = time.time()
        try:
            staged = loads(data, self.reader.read(slot, name, layout))
            outcome = measure(self.job.study, planned.trial, staged, self.job.backend)
            result = TrialResult(planned, outcome, seconds=time.time() - started,
                                 measure_s=time.time() - begun)
        except Exception as exc:
            result = failed(planned, exc, started)
        self.stats["measure_s"] += time.time() - begun
        self.patient((pos, slot, result))

    def _record(self, item) -> None:
        from ..record import record_child, remove_half_written

        pos, slot, result = item
        run_id, begun = None, time.time()
        if self.tracker is not None:
            remote = self.job.remote
            remove_half_written(self.tracker, self.half_written)
            run_id = record_child(self.tracker, remote.experiment_id, remote.parent_run_id,
                                  result.planned, result.outcome, result.error, result.traceback,
                                  created=self.half_written)
            self.half_written.clear()
        returned = self._returned(result, run_id)
        self.stats["record_s"] += time.time() - begun
        self.pipe.send("result", pos, slot, returned)

    def _returned(self, result, run_id: str | None) -> bytes:
        """The result for the parent: a recorded outcome as names only (its audio, arrays
        and figures are read back from the run, :mod:`vampstudy.stored`); an outcome that
        could not be recorded in full, with its figures as PNG."""
        from ..plots import RenderedFigure

        outcome = result.outcome
        if outcome is not None:
            outcome.trial = None
            if run_id is not None:
                outcome.audio = dict.fromkeys(outcome.audio)
                outcome.arrays = dict.fromkeys(outcome.arrays)
                outcome.figures = dict.fromkeys(outcome.figures)
            else:
                outcome.figures = {n: RenderedFigure.of(f) for n, f in outcome.figures.items()}
        return pickle.dumps({"outcome": outcome, "error": result.error,
                             "traceback": result.traceback, "run_id": run_id,
                             "seconds": result.seconds, "measure_s": result.measure_s})

    def failed(self) -> bool:
        """Whether recording failed for good (the parent is told once)."""
        error = self.patient.error
        if error is not None and not self._reported:
            self._reported = True
            self.pipe.send("error", error_payload(error))
        return error is not None

    def close(self) -> None:
        self.patient.close(wait=2.0)
        self.reader.close()


def main(conn, level: int = logging.WARNING) -> None:
    """Entry point of the measuring process (``spawn`` target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # the parent's interrupt, outside a study
    started = time.time()
    pipe = _Pipe(conn)
    root = logging.getLogger()
    root.addHandler(_ForwardLogs(pipe))
    root.setLevel(min(level, logging.WARNING))
    import torch

    torch.set_num_threads(1)   # the model process keeps the cores' other threads
    from .. import plots, record, tracking  # noqa: F401  (their imports overlap the parent's work)

    pipe.send("ready", time.time() - started)
    server = None
    try:
        while True:
            if server is not None and server.failed():
                return
            if not conn.poll(0.25):
                continue
            msg = conn.recv()
            if msg[0] == "close":
                return
            if msg[0] == "study":   # a whole study's tracking side (vampstudy.executors.hosting)
                from .hosting import host_study

                host_study(conn, pipe, msg[1])
            elif msg[0] == "job":
                server = Server(pipe, dict(load_payload(msg[1]), slots=msg[2]))
            elif server is not None:
                server.handle(msg)   # (an "interrupt" after a hosted study ended: nothing to do)
    except (EOFError, OSError):   # the parent is gone: stop, leave the rest to --resume
        pass
    except BaseException as exc:
        try:
            pipe.send("error", error_payload(exc))
        except Exception:
            pass
        logging.getLogger(__name__).debug("measuring process failed", exc_info=True)
        traceback.print_exc()
    finally:
        if server is not None:
            server.close()
        sys.stderr.flush()
        os._exit(0)   # daemon threads may sit in a store call; nothing else is left to do
