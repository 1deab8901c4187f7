"""The runner: the one caller of a study's hooks, in three stages.

::

    _prepare           study.validate, prepare_clips (load, check, preprocess, encode),
                       study.prepare — before any run exists
    plan    (vampstudy.plan)     trials = clips × conditions × seeds, config hash
    _open_parent       resume the unfinished parent run, or open a new one
    execute (vampstudy.execute)  trials → results through an executor (pipelined by default)
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

from . import audio as audio_io
from .backends.base import Backend
from .errors import AudioError, TrackingError, VampstudyError
from .execute import Executor, Job, RemoteRecording, seed_everything  # noqa: F401 (re-exported)
from .executors import make_executor
from .levels import with_clipping_note
from .memory import release_free_memory
from .patience import DEFAULT_PATIENCE, PatientSink, StoreOutage
from .phases import PhaseClock
from .plan import Plan, backend_note, plan_study
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


def prepare_clips(backend: Backend, audio: list[str] | tuple[str, ...] = (),
                  clips: list[audio_io.Clip] | None = None,
                  max_seconds: float | None = audio_io.DEFAULT_MAX_SECONDS) -> list[PreparedClip]:
    """Load, check, preprocess and encode the clips (the built-in demo when none given).

    Files longer than ``max_seconds`` are refused from their header, before decoding.
    """
    import torch

    if clips is None:
        paths = audio_io.expand_audio_inputs(list(audio)) if audio else [audio_io.DEMO_NAME]
        clips = [audio_io.load_clip(p, max_seconds=max_seconds) for p in paths]
    names = [c.name for c in clips]
    prepared = []
    for clip in clips:
        label = clip.path
        min_s = backend.hop_length / backend.sample_rate
        if clip.duration_s < min_s:
            raise AudioError(f"{label} lasts {clip.duration_s * 1000:.1f} ms, shorter than one "
                             f"token ({min_s * 1000:.1f} ms); pass a longer clip")
        audio_io.check_audible(clip.signal, label)
        signal = backend.preprocess(clip.signal)
        codes = backend.encode(signal)
        if not torch.isfinite(signal.audio_data).all():
            raise AudioError(f"{label}: preprocessing produced non-finite samples; "
                             "check that the file is valid audio")
        name = clip.name if names.count(clip.name) == 1 else f"{clip.name}-{clip.sha256[:6]}"
        identity = dict(clip.identity(), name=name)
        prepared.append(PreparedClip(name=name, identity=identity, signal=signal, codes=codes))
        logger.info("clip %s: %.2f s → codes %s", name, clip.duration_s, tuple(codes.shape))
    return prepared


def _clip_params(clips: list[PreparedClip]) -> dict:
    if len(clips) == 1:
        ident = clips[0].identity
        return {"audio_path": ident["path"], "audio_sha256": ident["sha256"],
                "audio_duration_s": ident["duration_s"], "code_shape": tuple(clips[0].codes.shape)}
    return {"audio_n_clips": len(clips), "audio_paths": [c.identity["path"] for c in clips],
            "audio_duration_s_total": round(sum(c.identity["duration_s"] for c in clips), 3)}


def run_study(study: Study, backend: Backend, tracker: Tracker, *, audio=(), seeds=(0,),
              experiment: str | None = None, resume: bool = False,
              progress: ProgressCallback | None = None, check_status: str | None = None,
              clips: list[PreparedClip] | None = None,
              resolved_config: dict | None = None, executor: Executor | str | None = None,
              backend_spec: tuple | None = None,
              max_seconds: float | None = audio_io.DEFAULT_MAX_SECONDS,
              tracking_patience: float = DEFAULT_PATIENCE,
              notify: Callable[[str], None] | None = None,
              system_metrics: bool = False) -> StudyResult:
    """Run ``study`` on ``backend`` and log it to ``tracker``: plan, execute, record.

    Parameters
    ----------
    audio : sequence of str
        Files, folders or globs; empty for the built-in demo clip.
    seeds : sequence of int
        Each condition runs once per seed.
    experiment : str, optional
        MLflow experiment; defaults to the study's name.
    resume : bool
        Continue the newest unfinished parent run with the same configuration.
    progress : callable, optional
        See :data:`ProgressCallback`.
    check_status : str, optional
        The backend's last ``vampstudy check`` verdict, recorded as a tag.
    clips : list of PreparedClip, optional
        Already prepared clips (skips loading ``audio``).
    resolved_config : dict, optional
        The full configuration as resolved by the caller, logged as
        ``config.yaml`` on the parent run (``vampstudy run NAME --config`` reads it back).
    executor : Executor or str, optional
        How trials are executed (:mod:`vampstudy.execute`); ``pipelined`` by default.
    max_seconds : float, optional
        Refuse audio longer than this (from the file header); None for no limit.
    backend_spec : tuple of (str, dict), optional
        How a worker process loads the same backend; ``(backend.name, backend.options())``
        by default.
    tracking_patience : float
        Seconds the tracking store may not answer before the study stops
        (:mod:`vampstudy.patience`); meanwhile finished trials wait (bounded) and model
        calls go on.
    notify : callable, optional
        Receives the one-line outage messages (default: a ``logging`` warning).
    system_metrics : bool
        Log MLflow's system metrics (CPU, memory, GPU when ``nvidia-ml-py`` is importable)
        on the parent run while the study runs.

    The parent run also records where the time went (:mod:`vampstudy.phases`:
    ``phase_*_s``, ``model_busy_fraction``).

    Raises
    ------
    VampstudyError
        Bad input, before anything is logged.
    StudyFailed
        After the run, if any trial failed (the rest are logged and analysed).
    AnalysisFailed
        The analysis failed after the trials finished (they are kept; ``--resume`` redoes it).
    StudyInterrupted
        KeyboardInterrupt: open runs are marked KILLED; ``--resume`` continues.
    TrackingLost
        The store failed, or did not answer for ``tracking_patience`` seconds.
    """
    started = time.time()
    clock = PhaseClock()
    seeds = [int(s) for s in seeds] or [0]
    session, prepared = _prepare(study, backend, audio, seeds, clips, max_seconds)
    plan = plan_study(study, backend, session.clips, seeds, experiment=experiment,
                      check_status=check_status)
    if executor is None or isinstance(executor, str):
        executor = make_executor(executor or "pipelined")
    recorder = Recorder(tracker, plan)
    plan = _open_parent(recorder, plan, study, backend, session, executor, audio=audio,
                        resume=resume, check_status=check_status,
                        resolved_config=resolved_config)
    try:
        if system_metrics:
            recorder.system_metrics = tracker.system_metrics(recorder.parent_id)
        recorder.record_summary(prepared)
    except BaseException as exc:
        _close(recorder, exc, "prepare")
        raise
    job = Job(study=study, backend=backend,
              backend_spec=backend_spec or (backend.name, backend.options()),
              remote=_remote_recording(executor, recorder))
    sink = _recording_sink(recorder, plan, clock, progress)
    patient = PatientSink(sink, tracker.probe, tracking_patience, notify=notify)
    _execute(executor, job, plan, recorder, patient)
    try:
        return _analyze_and_close(study, session, plan, recorder, patient, started, clock)
    finally:
        patient.close()


def _prepare(study: Study, backend: Backend, audio, seeds: list[int],
             clips: list[PreparedClip] | None, max_seconds: float | None):
    """Phase 1, before any run exists (a failure leaves nothing behind): validate the
    study, prepare the clips and run ``study.prepare``. Returns ``(session, summary)``."""
    study.validate(backend)
    clips = clips if clips is not None else prepare_clips(backend, audio, max_seconds=max_seconds)
    session = Session(backend=backend, clips=clips, seeds=seeds)
    return session, study.prepare(session)


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
