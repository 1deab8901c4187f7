"""The tracking side of a whole study in the measuring process (``--executor process``).

Under ``--executor process`` the model process (the caller of
:func:`vampstudy.runner.run_study`) prepares the clips, plans the trials and runs their
model stages — nothing else: it never imports MLflow nor matplotlib, and its first model
call waits for neither importing them nor opening the tracking store. Everything else
runs here, in the measuring process, through the runner's own
:func:`~vampstudy.runner.track_study`: opening (or resuming) the parent run, measuring
each trial, recording it, the analysis, the comparison view, closing the parent. Its
executor is :class:`PipeTrials`, whose trials' model stages arrive through the pipe.

Messages of one study (besides :mod:`vampstudy.executors.measuring`'s)::

    parent → child   ("study", payload)          the tracking side, the URI, the executor
                     ("trial", pos, slot, segment, layout, pickle, started, model_s)
                     ("failed", pos, error, traceback, seconds, started, model_s)
                     ("end",)  ("interrupt",)
    child → parent   ("opened", experiment_id, parent_run_id)  ("todo", [pos, ...])
                     ("release", slot)  ("progress", trial key, status, i, total)
                     ("study-done", payload)  ("study-error", payload)

``pos`` is a trial's index in the plan. A slot is released as soon as its arrays are
copied out (before measuring); what is measured and not yet recorded waits in the
recorder's bounded queue (:class:`~vampstudy.patience.PatientSink`), so the memory in
flight is bounded by the slots plus that queue.
"""

from __future__ import annotations

import logging
import pickle
import signal
import time
from dataclasses import replace

from ..errors import VampstudyError
from ..execute import Executor, TrialResult, failed, measure
from .shm import SlotReader, dumps, loads
from .wire import BackendView, error_payload, load_payload, user_modules

logger = logging.getLogger(__name__)


class ModelProcessLost(VampstudyError):
    """The model process went away (killed, crashed) while the study ran."""


def _lost() -> ModelProcessLost:
    return ModelProcessLost("the model process went away (killed or crashed) during the study; "
                            "what was recorded is kept, continue with --resume")


def _quietly(send):
    """``send`` for the recorder's callbacks: a model process that went away is noticed (and
    the study closed) by :class:`PipeTrials`, not in the middle of recording a trial."""
    def call(*msg) -> None:
        try:
            send(*msg)
        except OSError:
            pass
    return call


class PipeTrials(Executor):
    """The measuring process' executor: each trial's model stage comes through the pipe
    from the model process; here it is measured and handed to the sink (the recorder).

    ``describe`` is the model process' executor's :meth:`~vampstudy.execute.Executor.describe`
    (recorded on the parent run as it would be in one process).
    """

    name = "process"

    def __init__(self, conn, pipe, described: dict):
        self.conn, self.pipe, self.described = conn, pipe, dict(described)
        self.reader = SlotReader()
        self.in_execute = self.interrupted = False
        #: Seconds spent measuring (``measure_s``), for the process executor's log line.
        self.stats = {"measure_s": 0.0}

    def describe(self) -> dict:
        return dict(self.described)

    def _recv(self) -> tuple:
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            raise _lost() from None

    def _send(self, *msg) -> None:
        try:
            self.pipe.send(*msg)
        except OSError:
            raise _lost() from None

    def on_interrupt(self, signum=None, frame=None) -> None:
        """The model process' Ctrl-C (``SIGUSR1``; this process ignores SIGINT). While trials
        arrive, the ones already sent are measured and recorded first (the pipe's
        ``interrupt``, or ``end``, then raises); afterwards (recording the last ones, the
        analysis) it raises KeyboardInterrupt at once, as Ctrl-C would in one process."""
        if self.in_execute:
            self.interrupted = True
        else:
            raise KeyboardInterrupt

    def execute(self, job, trials, sink) -> None:
        self.in_execute = True
        try:
            self._serve(job, trials, sink)
        finally:
            self.in_execute = False
        if self.interrupted:
            raise KeyboardInterrupt

    def _serve(self, job, trials, sink) -> None:
        by_pos = {t.index: t for t in trials}
        self._send("todo", sorted(by_pos))
        while True:
            msg = self._recv()
            kind = msg[0]
            if kind in ("end", "interrupt"):
                self.interrupted |= kind == "interrupt"
                return
            if kind == "trial":
                sink(self._measured(job, by_pos[msg[1]], *msg[2:]))
            elif kind == "failed":
                _, pos, error, tb, seconds, started, model_s = msg
                sink(TrialResult(by_pos[pos], None, error, tb, seconds=seconds,
                                 model_started=started, model_s=model_s))

    def _measured(self, job, planned, slot, name, layout, data, started, model_s) -> TrialResult:
        arrays = self.reader.read(slot, name, layout)   # copies: the slot is free again
        self._send("release", slot)
        begun = time.time()
        try:
            outcome = measure(job.study, planned.trial, loads(data, arrays), job.backend)
            result = TrialResult(planned, outcome, seconds=time.time() - started,
                                 model_started=started, model_s=model_s,
                                 measure_s=time.time() - begun)
        except Exception as exc:
            result = replace(failed(planned, exc, started), model_started=started,
                             model_s=model_s)
        self.stats["measure_s"] += time.time() - begun
        return result

    def close(self) -> None:
        self.reader.close()


def report_facts(tracker, result) -> dict:
    """What the CLI's closing report reads from the store (the model process has none open):
    the summary table's rows, the saved comparison view's key and the UI's addresses."""
    from ..views import view_key

    facts: dict = {}
    try:
        facts["summary"] = tracker.load_table(result.parent_run_id, "summary")
    except Exception:   # no summary table (nothing finished): the report says so itself
        facts["summary"] = []
    key = view_key(result.parent_run_id)
    try:
        facts["view_key"] = key if tracker.load_view(result.experiment_id, key) else None
    except Exception:
        facts["view_key"] = None
    return facts


class StoreDownload:
    """``download(path, dst)`` of one run's artifact through a tracking store opened on first
    use: an :class:`ArtifactReader` that travels between processes (pickles without the
    store) and opens it only when something is read."""

    def __init__(self, tracking_uri: str, run_id: str):
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self._tracker = None

    def __getstate__(self) -> dict:
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id, "_tracker": None}

    def __call__(self, path: str, dst: str) -> str:
        if self._tracker is None:
            from ..tracking import Tracker

            self._tracker = Tracker(self.tracking_uri)
        return self._tracker.download(self.run_id, path, dst)


def _portable(result, tracker):
    """The study's result for the model process: each outcome's audio and arrays as handles
    that read them back from the store when used (a local artifact folder, else a store
    opened then: :class:`StoreDownload`), its figures by name only."""
    from ..stored import ArtifactReader, StoredArrays, StoredAudio

    for outcome in result.outcomes:
        reader = tracker.artifact_reader(outcome.run_id) if outcome.run_id else None
        if reader is not None and reader.local_dir is None:
            reader = ArtifactReader(download=StoreDownload(tracker.uri, outcome.run_id))
        if reader is None:
            outcome.audio, outcome.arrays = dict.fromkeys(outcome.audio), dict.fromkeys(outcome.arrays)
        else:
            outcome.audio = StoredAudio(list(outcome.audio), reader)
            outcome.arrays = StoredArrays(list(outcome.arrays), reader)
        outcome.figures = dict.fromkeys(outcome.figures)
    return result


def host_study(conn, pipe, payload: bytes) -> None:
    """Serve one study invocation's tracking side (see the module); the outcome, or the
    error (a :class:`~vampstudy.errors.VampstudyError` travels whole), goes back."""
    from ..tracked import StudyFailed, track_study
    from ..tracking import Tracker
    data = load_payload(payload)
    side, executor = data["side"], PipeTrials(conn, pipe, data["described"])
    send = _quietly(pipe.send)

    def progress(trial, status, i, total):
        send("progress", trial.key, status, i, total)

    tracker = None
    signal.signal(signal.SIGUSR1, executor.on_interrupt)
    try:
        tracker = Tracker(data["uri"])
        try:
            result = track_study(side, executor, tracker, progress=progress,
                                 notify=lambda line: send("notice", line),
                                 opened=lambda exp, parent: send("opened", exp, parent))
        finally:   # the study is closed: a late interrupt changes nothing
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        result.report = report_facts(tracker, result)
        pipe.send("study-done", pickle.dumps(_portable(result, tracker)))
    except StudyFailed as exc:
        exc.result.report = report_facts(tracker, exc.result)
        _portable(exc.result, tracker)
        pipe.send("study-error", error_payload(exc))
    except BaseException as exc:   # KeyboardInterrupt arrives as "interrupt": StudyInterrupted
        logger.debug("the study's tracking side failed", exc_info=True)
        pipe.send("study-error", error_payload(exc))
    finally:
        executor.close()


def study_payload(side, uri: str | None, described: dict) -> bytes:
    """The ``("study", payload)`` message's payload: the tracking side with the backend
    replaced by its facts (:class:`~vampstudy.executors.wire.BackendView`)."""
    session = replace(side.session, backend=BackendView.of(side.session.backend,
                                                           side.backend_spec))
    shipped = replace(side, session=session)
    body = dumps({"side": shipped, "uri": uri, "described": described})
    return pickle.dumps({"user_modules": user_modules(), "body": body})
