"""The runner: the one caller of a study's hooks, and the owner of all I/O.

It loads and checks the audio, encodes it, creates the parent run and one
child run per trial (clip × condition × seed), logs what the hooks return,
turns a failing trial into a FAILED child run with its traceback, resumes an
unfinished study, and reports progress.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import audio as audio_io
from .backends.base import Backend
from .errors import AudioError, VampstudyError
from .study import Outcome, PreparedClip, Record, Session, Study, Trial
from .tracking import (TAG_BACKEND, TAG_CHECK, TAG_CONDITION, TAG_CONFIG, TAG_NOTE, TAG_ROLE,
                       TAG_STUDY, TAG_TRIAL, Tracker)

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


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random (VampNet's build_mask draws from torch's global RNG)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def backend_note(backend: Backend) -> str:
    if backend.is_vampnet:
        return f"Generated with VampNet ({backend.description})."
    return (f"Generated with the **{backend.name}** backend — {backend.description}. "
            "These results are not VampNet's.")


def prepare_clips(backend: Backend, audio: list[str] | tuple[str, ...] = (),
                  clips: list[audio_io.Clip] | None = None) -> list[PreparedClip]:
    """Load, check, preprocess and encode the clips (the built-in demo when none given)."""
    if clips is None:
        paths = audio_io.expand_audio_inputs(list(audio)) if audio else [audio_io.DEMO_NAME]
        clips = [audio_io.load_clip(p) for p in paths]
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


class _Logger:
    """Writes a :class:`Record` to one run."""

    def __init__(self, tracker: Tracker):
        self.tracker = tracker

    def record(self, run_id: str, rec: Record | None) -> None:
        if rec is None:
            return
        t = self.tracker
        if rec.params:
            t.log_params(run_id, rec.params)
        if rec.metrics or rec.series:
            t.log_metrics(run_id, rec.metrics, rec.series)
        for name, signal in rec.audio.items():
            t.log_bytes(run_id, audio_io.signal_to_wav_bytes(signal), f"audio/{name}.wav")
        if rec.arrays:
            t.log_arrays(run_id, rec.arrays)
        for name, fig in rec.figures.items():
            t.log_figure(run_id, fig, f"figures/{name}.png")
        rec.figures = {}  # free the memory; figures are not needed after logging
        for name, rows in rec.tables.items():
            t.log_table(run_id, rows, name)
        for path, text in rec.texts.items():
            t.log_text(run_id, text, path)


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
              resolved_config: dict | None = None) -> StudyResult:
    """Run ``study`` on ``backend`` and log it to ``tracker``.

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

    Raises
    ------
    VampstudyError
        Bad input, before anything is logged.
    StudyFailed
        After the run, if any trial failed (the rest are logged and analysed).
    """
    started = time.time()
    seeds = [int(s) for s in seeds] or [0]
    study.validate(backend)
    clips = clips if clips is not None else prepare_clips(backend, audio)
    session = Session(backend=backend, clips=clips, seeds=seeds)
    prepared = study.prepare(session)   # before any run exists: a failure leaves nothing behind
    conditions = study.iterate()
    if not conditions:
        raise VampstudyError(f"study {study.name!r} has no conditions to run; check its parameters")
    trials = [Trial(c, clip, s) for clip in clips for c in conditions for s in seeds]
    config_hash = study.config_hash(backend=backend.name, backend_options=backend.options(),
                                    clips=[c.identity["sha256"] for c in clips], seeds=seeds)
    exp_id = tracker.experiment_id(experiment or study.name)
    write = _Logger(tracker)
    base_tags = {TAG_STUDY: study.name, TAG_BACKEND: backend.name, TAG_CONFIG: config_hash}
    if check_status:
        base_tags[TAG_CHECK] = check_status

    parent_id, finished_runs, resumed = None, {}, False
    if resume:
        parent_id, finished_runs = _find_resumable(tracker, exp_id, config_hash)
        resumed = parent_id is not None
        if not resumed:
            logger.warning("--resume: no unfinished run of this configuration in experiment "
                           "%r; starting a new one", experiment or study.name)
    study_params = study.get_params()
    if parent_id is None:
        run_name = f"{study.name} · {backend.name} · {time.strftime('%Y-%m-%d %H:%M:%S')}"
        parent_id = tracker.start_run(exp_id, run_name,
                                      {**base_tags, TAG_ROLE: "study", TAG_NOTE: backend_note(backend)})
        try:
            tracker.log_params(parent_id, {**study_params, **study.run_options(),
                                           **backend.info(), **backend.options(),
                                           **_clip_params(clips), "seeds": seeds,
                                           "config_hash": config_hash})
            for clip in clips:
                suffix = "" if len(clips) == 1 else f"_{clip.name}"
                write.record(parent_id, Record(audio={f"original{suffix}": clip.signal}))
            tracker.log_dataset(parent_id, "clips", [c.identity for c in clips])
            config = resolved_config or {**study_params, "backend": backend.name,
                                         "audio": list(audio), "seeds": seeds}
            tracker.log_text(parent_id, _yaml(config), "config.yaml")
        except Exception:
            tracker.finish(parent_id, "FAILED")
            raise
    elif check_status:
        tracker.set_tags(parent_id, {TAG_CHECK: check_status})

    write.record(parent_id, prepared)

    outcomes: dict[str, Outcome] = {}
    errors: dict[str, str] = {}
    failed: list[Trial] = []
    skipped = 0
    for i, trial in enumerate(trials):
        if trial.key in finished_runs:
            skipped += 1
            if progress:
                progress(trial, "SKIPPED", i, len(trials))
            continue
        run_name = trial.condition.name
        if len(seeds) > 1:
            run_name += f" seed={trial.seed}"
        if len(clips) > 1:
            run_name += f" [{trial.clip.name}]"
        tags = {**base_tags, TAG_ROLE: "condition", TAG_TRIAL: trial.key,
                TAG_CONDITION: trial.condition.key, TAG_NOTE: backend_note(backend)}
        child = tracker.start_run(exp_id, run_name, tags, parent_id=parent_id)
        status = "FINISHED"
        try:
            tracker.log_params(child, {**study_params, **trial.condition.params, "seed": trial.seed,
                                       "clip": trial.clip.name, "backend": backend.name})
            tracker.log_dataset(child, "clips", [trial.clip.identity])
            seed_everything(trial.seed)
            outcome = study.generate(trial, backend)
            if not isinstance(outcome, Outcome):
                raise TypeError(f"{type(study).__name__}.generate() must return an Outcome, "
                                f"got {type(outcome).__name__}")
            outcome.trial, outcome.run_id = trial, child
            write.record(child, outcome)
            tracker.finish(child, "FINISHED")
            outcomes[trial.key] = outcome
        except KeyboardInterrupt:
            tracker.finish(child, "KILLED")
            tracker.finish(parent_id, "KILLED")
            raise
        except Exception as exc:
            status = "FAILED"
            logger.error("condition %s failed: %s", run_name, exc)
            tracker.log_text(child, traceback.format_exc(), "traceback.txt")
            tracker.set_tags(child, {"vampstudy.error": f"{type(exc).__name__}: {exc}"[:500]})
            tracker.finish(child, "FAILED")
            failed.append(trial)
            errors[run_name] = f"{type(exc).__name__}: {exc}"
        if progress:
            progress(trial, status, i, len(trials))

    if finished_runs:
        with tempfile.TemporaryDirectory() as tmp:
            for trial in trials:
                if trial.key in finished_runs and trial.key not in outcomes:
                    outcomes[trial.key] = _reload(tracker, finished_runs[trial.key], trial, tmp)
    ordered = [outcomes[t.key] for t in trials if t.key in outcomes]
    result = StudyResult(exp_id, parent_id, tracker.uri, ordered, failed, skipped, resumed)

    try:
        if ordered:
            write.record(parent_id, study.analyze(ordered, session))
    except BaseException as exc:
        _fail(tracker, parent_id, exc)
        raise
    result.seconds = time.time() - started
    tracker.log_metrics(parent_id, {"n_finished": len(ordered), "n_failed": len(failed),
                                    "wall_seconds": result.seconds})
    if failed:
        tracker.set_tags(parent_id, {"vampstudy.failed_conditions": ", ".join(errors)[:5000]})
        tracker.finish(parent_id, "FAILED")
        raise StudyFailed(result, errors)
    tracker.finish(parent_id, "FINISHED")
    return result


def _yaml(config: dict) -> str:
    import yaml

    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    return yaml.safe_dump(plain, sort_keys=False)


def _fail(tracker: Tracker, run_id: str, exc: BaseException) -> None:
    status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
    try:
        tracker.log_text(run_id, "".join(traceback.format_exception(exc)), "traceback.txt")
    finally:
        tracker.finish(run_id, status)


def _find_resumable(tracker: Tracker, exp_id: str, config_hash: str):
    """The newest unfinished parent of this configuration and its FINISHED children by trial key."""
    parents = tracker.find_runs(exp_id, {TAG_ROLE: "study", TAG_CONFIG: config_hash},
                                statuses=("RUNNING", "FAILED", "KILLED", "SCHEDULED"))
    if not parents:
        return None, {}
    parent = parents[0]
    parent_id = parent.info.run_id
    logger.info("resuming run %s (%s)", parent_id, parent.info.run_name)
    children = tracker.find_runs(exp_id, {"mlflow.parentRunId": parent_id})
    finished = {}
    for run in children:
        key = run.data.tags.get(TAG_TRIAL)
        if run.info.status == "FINISHED" and key and key not in finished:
            finished[key] = run
        elif run.info.status == "RUNNING":  # left behind by a killed process
            tracker.finish(run.info.run_id, "KILLED")
    if parent.info.status != "RUNNING":
        tracker.client.update_run(parent_id, status="RUNNING")
    return parent_id, finished


def _reload(tracker: Tracker, run, trial: Trial, tmp: str) -> Outcome:
    """Rebuild an Outcome of an earlier invocation from its MLflow run."""
    from audiotools import AudioSignal

    run_id = run.info.run_id
    metrics = dict(run.data.metrics)
    history = tracker.client.get_metric_history(run_id, "tokens_changed_pct_by_codebook")
    series = {"tokens_changed_pct_by_codebook": [m.value for m in sorted(history, key=lambda m: m.step)]}
    arrays = tracker.load_arrays(run_id, str(Path(tmp) / run_id))
    audio = {}
    for path in tracker.list_artifacts(run_id, "audio"):
        local = tracker.download(run_id, path, str(Path(tmp) / run_id))
        audio[Path(path).stem] = AudioSignal(local)
    params = {k: v for k, v in run.data.params.items()}
    return Outcome(params=params, metrics=metrics, series=series, arrays=arrays, audio=audio,
                   trial=trial, run_id=run_id)
