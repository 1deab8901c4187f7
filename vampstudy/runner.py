"""The runner: the one caller of a study's hooks.

::

    _prepare           study.validate, prepare_clips (load, check, preprocess, encode),
                       study.prepare — before any run exists
    plan    (vampstudy.plan)     trials = clips × conditions × seeds, config hash
    track_study (vampstudy.tracked)  the parent run, executing and recording the trials,
                       the analysis — in this process, or under ``--executor process``
                       (the default) in the measuring process, while this one runs only
                       the model stages and never imports MLflow

Failure paths: a failing trial becomes a FAILED child (the others go on); a failing
analysis marks the parent FAILED with its traceback and keeps every child; an interrupt
marks the open runs KILLED. In every case ``--resume`` reruns only what is missing.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from . import audio as audio_io
from .backends.base import Backend
from .errors import AudioError
from .execute import Executor, Job, RemoteRecording, seed_everything  # noqa: F401 (re-exported)
from .executors import make_executor
from .patience import DEFAULT_PATIENCE
from .phases import process_start_time
from .plan import plan_study
from .study import PreparedClip, Session, Study
from .tracked import (LOOK_UP_CHECK, AnalysisFailed, ProgressCallback,  # noqa: F401 (re-exported)
                      StudyFailed, StudyInterrupted, StudyResult, TrackingLost, TrackingSide,
                      track_study)

logger = logging.getLogger(__name__)

#: The executor of :func:`run_study` when none is given.
DEFAULT_EXECUTOR = "process"


def prepare_clips(backend: Backend, audio: list[str] | tuple[str, ...] = (),
                  clips: list[audio_io.Clip] | None = None,
                  max_seconds: float | None = audio_io.DEFAULT_MAX_SECONDS,
                  unmetered: list | None = None) -> list[PreparedClip]:
    """Load, check, preprocess and encode the clips (the built-in demo when none given).

    Files longer than ``max_seconds`` are refused from their header, before decoding.
    With ``unmetered`` (a list) the loudness part of the audibility check is left out
    and ``(label, original signal)`` of each clip appended there, for the measuring
    process to check (:func:`vampstudy.audio.check_audible`).
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
        audio_io.check_audible(clip.signal, label, loudness=unmetered is None)
        if unmetered is not None:
            unmetered.append((label, clip.signal))
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


def run_study(study: Study, backend: Backend, tracker=None, *, audio=(), seeds=(0,),
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
    tracker : Tracker or str, optional
        The tracking store, or its URI (None: ``$MLFLOW_TRACKING_URI`` or ``./mlruns``).
        Under ``--executor process`` only its URI is used: the measuring process opens it.
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
        The backend's last ``vampstudy check`` verdict, recorded as a tag;
        :data:`LOOK_UP_CHECK` to look it up in the tracking store.
    clips : list of PreparedClip, optional
        Already prepared clips (skips loading ``audio``).
    resolved_config : dict, optional
        The full configuration as resolved by the caller, logged as
        ``config.yaml`` on the parent run (``vampstudy run NAME --config`` reads it back).
    executor : Executor or str, optional
        How trials are executed (:mod:`vampstudy.execute`); ``process`` by default (the
        tracking side then runs in its measuring process, :func:`track_study`).
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
    seeds = [int(s) for s in seeds] or [0]
    if executor is None or isinstance(executor, str):
        executor = make_executor(executor or DEFAULT_EXECUTOR)
    hosted = getattr(executor, "hosts_tracking", False)
    unmetered: list | None = [] if hosted else None   # the measuring process meters them
    session, prepared = _prepare(study, backend, audio, seeds, clips, max_seconds, unmetered)
    look_up = check_status == LOOK_UP_CHECK
    plan = plan_study(study, backend, session.clips, seeds, experiment=experiment,
                      check_status=None if look_up else check_status)
    side = TrackingSide(study, session, prepared, plan, tuple(audio), resume,
                        check_status, resolved_config,
                        backend_spec or (backend.name, backend.options()),
                        tracking_patience, system_metrics, started, process_start_time(),
                        unmetered or [])
    if hosted:
        return executor.host(side, _uri_of(tracker), progress=progress, notify=notify)
    if not hasattr(tracker, "uri"):   # a URI (or None: the default store)
        from .tracking import Tracker

        tracker = Tracker(tracker)
    return track_study(side, executor, tracker, progress=progress, notify=notify)


def _uri_of(tracker) -> str | None:
    return tracker.uri if hasattr(tracker, "uri") else tracker


def _prepare(study: Study, backend: Backend, audio, seeds: list[int],
             clips: list[PreparedClip] | None, max_seconds: float | None,
             unmetered: list | None = None):
    """Phase 1, before any run exists (a failure leaves nothing behind): validate the
    study, prepare the clips and run ``study.prepare``. Returns ``(session, summary)``."""
    study.validate(backend)
    clips = clips if clips is not None else prepare_clips(backend, audio, max_seconds=max_seconds,
                                                          unmetered=unmetered)
    session = Session(backend=backend, clips=clips, seeds=seeds)
    return session, study.prepare(session)
