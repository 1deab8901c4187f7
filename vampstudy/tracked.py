"""The tracking side of a study run: everything after the model's work is planned.

::

    track_study        (:func:`vampstudy.runner.run_study` calls it, or, under
                       ``--executor process``, the measuring process does)
    _open_parent       resume the unfinished parent run, or open a new one
    execute (vampstudy.execute)  trials → results through an executor
    record  (vampstudy.record)   one child per trial through _recording_sink, patiently
    _analyze_and_close study.analyze on every finished outcome, recorded on the parent,
                       the comparison view for the MLflow UI (vampstudy.views), status

Failure paths: a failing trial becomes a FAILED child (the others go on); a failing
analysis marks the parent FAILED with its traceback and keeps every child; an interrupt
marks the open runs KILLED. In every case ``--resume`` reruns only what is missing.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from .audio import check_audible
from .errors import TrackingError, VampstudyError
from .execute import Executor, Job, RemoteRecording
from .levels import with_clipping_note
from .memory import release_free_memory
from .patience import PatientSink, StoreOutage
from .phases import PhaseClock
from .plan import Plan, backend_note
from .record import TAG_FAILED, TAG_FAILED_STAGE, Recorder
from .study import Outcome, PreparedClip, Record, Session, Study, Summary, Trial
from .views import save_comparison_view

logger = logging.getLogger(__name__)

#: Called after each trial with (trial, status, index, total); status is
#: FINISHED, FAILED or SKIPPED (finished in an earlier, resumed invocation).
ProgressCallback = Callable[[Trial, str, int, int], None]


@dataclass
class StudyResult:
    """What :func:`run_study` did."""

    experiment_id: str
    parent_run_id: str
    tracking_uri: str
    outcomes: list[Outcome]
    failed: list[Trial] = field(default_factory=list)
    skipped: int = 0
    resumed: bool = False
    seconds: float = 0.0
    #: What the CLI's report reads from the store, when the store was open in another
    #: process (``summary``: the summary table's rows; ``view_key``: the saved view's key).
    report: dict = field(default_factory=dict)


class StudyFailed(VampstudyError):
    """Some trials failed; the others finished and were analysed."""

    def __init__(self, result: StudyResult, errors: dict[str, str]):
        self.result = result
        self.errors = errors
        names = "; ".join(f"{k}: {v}" for k, v in errors.items())
        super().__init__(f"{len(errors)} of {len(result.outcomes) + len(errors)} conditions "
                         f"failed ({names}); see their FAILED runs' traceback.txt in MLflow, "
                         "fix the cause and re-run with --resume")


class AnalysisFailed(VampstudyError):
    """The trials finished (and are kept) but the study's analysis failed."""

    def __init__(self, study: str, parent_run_id: str, n_finished: int, exc: BaseException):
        self.parent_run_id = parent_run_id
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        super().__init__(f"the analysis of study {study!r} failed after {n_finished} conditions "
                         f"finished ({type(exc).__name__}: {first}); the conditions are kept and "
                         f"the traceback is in run {parent_run_id}'s traceback.txt; fix the cause "
                         "and re-run with --resume to redo only the analysis")


class TrackingLost(TrackingError):
    """The tracking store failed while the study ran; finished conditions are kept.

    ``what`` is the message without its last part (how to continue), so that the CLI can
    end it with the exact command instead.
    """

    def __init__(self, uri: str, n_finished: int, n_total: int, exc: BaseException,
                 dropped: int = 0):
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        why = first if isinstance(exc, StoreOutage) else f"{type(exc).__name__}: {first}"
        lost = (f", {dropped} more finished but could not be recorded (--resume redoes them)"
                if dropped else "")
        self.what = (f"lost the tracking store {uri} during the study ({why}); {n_finished} of "
                     f"{n_total} conditions are recorded and kept{lost}")
        super().__init__(f"{self.what}; once the store is back, continue with --resume")


class StudyInterrupted(VampstudyError):
    """The study was interrupted (Ctrl-C): open runs are KILLED, finished ones kept."""

    def __init__(self, plan: Plan, recorder: Recorder):
        self.parent_run_id = recorder.parent_id
        self.n_finished = len(recorder.outcomes) + len(plan.done)
        self.n_total = len(plan.trials)
        super().__init__(f"interrupted: {self.n_finished} of {self.n_total} conditions finished "
                         f"and are kept (run {self.parent_run_id})")


#: ``check_status`` that asks for the backend's last ``vampstudy check`` verdict to be
#: looked up in the tracking store (where the store is open, not in the model process).
LOOK_UP_CHECK = "look up"
@dataclass
class TrackingSide:
    """What the tracking side of a study needs from the model side (:func:`track_study`):
    the prepared study and clips, the plan and the options; it travels to the measuring
    process under ``--executor process`` (the model process never opens the store)."""

    study: Study
    session: Session
    prepared: Summary | None
    plan: Plan
    audio: tuple
    resume: bool
    check_status: str | None
    resolved_config: dict | None
    backend_spec: tuple
    tracking_patience: float
    system_metrics: bool
    started: float
    process_started: float | None = None
    #: ``(label, original signal)`` of clips whose loudness is still to be checked
    #: (:func:`vampstudy.audio.check_audible`; the model process leaves the meter here).
    unmetered: list = field(default_factory=list)


def track_study(side: TrackingSide, executor: Executor, tracker, *,
                progress: ProgressCallback | None = None,
                notify: Callable[[str], None] | None = None,
                opened: Callable[[str, str], None] | None = None) -> StudyResult:
    """The tracking side of :func:`run_study`: open (or resume) the parent run, execute the
    plan's trials through ``executor`` and record them, analyse, close the parent.
    ``opened(experiment_id, parent_run_id)`` is called once the parent run exists."""
    clock = PhaseClock(process_started=side.process_started)
    for label, signal in side.unmetered:   # bad input: refused before anything is logged
        check_audible(signal, label)
    side.unmetered = []
    study, session, backend = side.study, side.session, side.session.backend
    plan = side.plan
    check_status = side.check_status
    if check_status == LOOK_UP_CHECK:
        check_status = tracker.last_check(backend.name)
        plan = plan.with_check(check_status)
    recorder = Recorder(tracker, plan)
    plan = _open_parent(recorder, plan, study, backend, session, executor, audio=side.audio,
                        resume=side.resume, check_status=check_status,
                        resolved_config=side.resolved_config)
    if opened is not None:
        opened(recorder.experiment_id, recorder.parent_id)
    try:
        if side.system_metrics:
            recorder.system_metrics = tracker.system_metrics(recorder.parent_id)
        recorder.record_summary(side.prepared)
    except BaseException as exc:
        _close(recorder, exc, "prepare")
        raise
    job = Job(study=study, backend=backend, backend_spec=side.backend_spec,
              remote=_remote_recording(executor, recorder))
    sink = _recording_sink(recorder, plan, clock, progress)
    patient = PatientSink(sink, tracker.probe, side.tracking_patience, notify=notify)
    _execute(executor, job, plan, recorder, patient)
    try:
        return _analyze_and_close(study, session, plan, recorder, patient, side.started, clock)
    finally:
        patient.close()


def _clip_params(clips: list[PreparedClip]) -> dict:
    if len(clips) == 1:
        ident = clips[0].identity
        return {"audio_path": ident["path"], "audio_sha256": ident["sha256"],
                "audio_duration_s": ident["duration_s"], "code_shape": tuple(clips[0].codes.shape)}
    return {"audio_n_clips": len(clips), "audio_paths": [c.identity["path"] for c in clips],
            "audio_duration_s_total": round(sum(c.identity["duration_s"] for c in clips), 3)}


def _open_parent(recorder: Recorder, plan: Plan, study: Study, backend: Backend,
                 session: Session, executor: Executor, *, audio, resume: bool,
                 check_status: str | None, resolved_config: dict | None) -> Plan:
    """Phase 2: continue the unfinished parent run (``resume``) or open a new one with the
    study's params, inputs and configuration. Returns the plan with what is done marked."""
    if resume and not recorder.find_resumable():
        logger.warning("--resume: no unfinished run of this configuration in experiment "
                       "%r; starting a new one", plan.experiment)
    if recorder.resumed:
        plan = plan.with_done(recorder.finished_runs)
        recorder.plan = plan
        recorder.set_check(check_status)
        return plan
    clips, seeds = session.clips, session.seeds
    study_params = study.get_params()
    params = {**study_params, **study.run_options(), **backend.info(), **backend.options(),
              **_clip_params(clips), "seeds": seeds, "config_hash": plan.config_hash,
              "n_trials": len(plan.trials), **executor.describe()}
    inputs = Record(audio={f"original{'' if len(clips) == 1 else '_' + c.name}": c.signal
                           for c in clips})
    config = resolved_config or {**study_params, "backend": backend.name,
                                 "audio": list(audio), "seeds": seeds}
    recorder.open_parent(params, inputs, [c.identity for c in clips], _yaml(config),
                         {"mlflow.note.content": backend_note(backend)})
    return plan


def _remote_recording(executor: Executor, recorder: Recorder) -> RemoteRecording | None:
    """Where an executor's workers record their own child runs, if they do: on a tracking
    server (Ray), or on any store (``--executor process``); None when the driver records."""
    uri = recorder.tracker.uri
    if getattr(executor, "records_remotely", False) and (
            uri.startswith(("http://", "https://"))
            or getattr(executor, "records_on_any_store", False)):
        return RemoteRecording(uri, recorder.experiment_id, recorder.parent_id)
    return None


def _recording_sink(recorder: Recorder, plan: Plan, clock: PhaseClock,
                    progress: ProgressCallback | None) -> Callable:
    """Phase 3's sink: record each result, time it, free its buffers and report progress
    (trials finished in an earlier invocation are reported SKIPPED first)."""
    total = len(plan.trials)
    done_count = 0
    for planned in plan.trials:
        if planned.key in plan.done:
            done_count += 1
            if progress:
                progress(planned.trial, "SKIPPED", done_count - 1, total)

    def sink(result) -> None:
        nonlocal done_count
        record_started = time.time()
        recorder.record(result)
        clock.add_trial(result, time.time() - record_started)
        release_free_memory()   # the trial's buffers are freed; keep the resident size flat
        done_count += 1
        if progress:
            progress(result.planned.trial, "FINISHED" if result.ok else "FAILED",
                     done_count - 1, total)

    return sink


def _analyze_and_close(study: Study, session: Session, plan: Plan, recorder: Recorder,
                       patient: PatientSink, started: float, clock: PhaseClock) -> StudyResult:
    """Reload the reused outcomes, analyse, record the summary and close the parent; every
    store call patient (:mod:`vampstudy.patience`)."""
    tracker, parent_id, call = recorder.tracker, recorder.parent_id, patient.call
    analysis_started = time.time()
    try:
        call(recorder.reload_finished)
        ordered = recorder.ordered_outcomes()
        result = StudyResult(recorder.experiment_id, parent_id, tracker.uri, ordered,
                             list(recorder.failed), len(plan.done), recorder.resumed)
        if ordered:
            release_free_memory()   # the trials' freed buffers, before the analysis' peak
            summary = with_clipping_note(study.analyze(ordered, session) or Summary(), ordered)
            call(recorder.record_summary, summary)
            release_free_memory()
            call(save_comparison_view, tracker, recorder.experiment_id, parent_id, study, ordered)
    except KeyboardInterrupt as exc:
        _close(recorder, exc, "analyze")
        raise StudyInterrupted(plan, recorder) from exc
    except StoreOutage as exc:
        _close(recorder, exc, "analyze")
        raise TrackingLost(tracker.uri, len(recorder.outcomes) + len(plan.done),
                           len(plan.trials), exc) from exc
    except Exception as exc:
        _close(recorder, exc, "analyze")
        raise AnalysisFailed(study.name, parent_id, len(recorder.outcomes), exc) from exc
    clock.analysis_s = time.time() - analysis_started
    result.seconds = time.time() - started
    metrics = {"n_finished": len(ordered), "n_failed": len(recorder.failed),
               "wall_seconds": result.seconds, **clock.metrics(result.seconds)}
    status, tags = "FINISHED", {}
    if recorder.failed:
        status = "FAILED"
        tags = {TAG_FAILED: ", ".join(recorder.errors)[:5000], TAG_FAILED_STAGE: "execute"}
    try:
        call(recorder.finish, status, metrics, tags)
    except StoreOutage as exc:
        raise TrackingLost(tracker.uri, len(ordered), len(plan.trials), exc) from exc
    if recorder.failed:
        raise StudyFailed(result, dict(recorder.errors))
    return result


def _execute(executor: Executor, job: Job, plan: Plan, recorder: Recorder,
             patient: PatientSink) -> None:
    """Run the plan's trials through ``executor`` into ``patient`` (the recorder's patient
    sink) and wait until every result is recorded; close the parent on the way out."""
    try:
        executor.execute(job, plan.todo, patient)
        patient.drain()
    except KeyboardInterrupt as exc:
        patient.drain_unless_away()   # finished trials are done work: record them if possible
        _close(recorder, exc, "execute")
        raise StudyInterrupted(plan, recorder) from exc
    except VampstudyError as exc:
        dropped = patient.abandon()
        if not isinstance(exc, StoreOutage):   # the store answers: let a record in progress
            patient.close()                    # finish, so that no child is left half-written
        _close(recorder, exc, "execute")
        if isinstance(exc, StoreOutage):
            raise TrackingLost(recorder.tracker.uri, len(recorder.outcomes) + len(plan.done),
                               len(plan.trials), exc, dropped) from exc
        raise
    except Exception as exc:  # recording failed: the tracking store went away mid-study
        patient.abandon()
        _close(recorder, exc, "execute")
        raise TrackingLost(recorder.tracker.uri, len(recorder.outcomes) + len(plan.done),
                           len(plan.trials), exc) from exc
    finally:
        executor.close()


def _yaml(config: dict) -> str:
    import yaml

    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    return yaml.safe_dump(plain, sort_keys=False)


def _close(recorder: Recorder, exc: BaseException, stage: str) -> None:
    """Mark the parent KILLED (interrupt) or FAILED (anything else) with its traceback."""
    status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
    if recorder.parent_id is None:
        return
    try:
        with recorder.tracker.fail_fast():
            recorder.finish(status, tags={TAG_FAILED_STAGE: stage},
                            traceback_text="".join(traceback.format_exception(exc)))
    except Exception as close_exc:  # the store itself failed: nothing more can be written
        logger.error("could not mark run %s %s: %s", recorder.parent_id, status, close_exc)
