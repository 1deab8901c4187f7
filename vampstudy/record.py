"""Stage 3 of a study run, *record*: the run layout in the tracking store.

One parent run per study invocation (tag ``vampstudy.role=study``) and one child run per
trial (``vampstudy.role=condition``, or ``control`` for a control run, with
``vampstudy.control`` = ``codec`` or ``noise``; ``mlflow.parentRunId`` = the parent), each with its
params, metrics, artifacts and a status:

* a child is created when its result arrives, filled in one batch and closed FINISHED,
  or FAILED with ``traceback.txt`` and a ``vampstudy.error`` tag;
* the parent is RUNNING while the study runs, records the process (host, pid) that owns
  it, and ends FINISHED, FAILED (a condition or the analysis failed; ``traceback.txt``)
  or KILLED (interrupted);
* ``--resume`` takes the newest unfinished parent of the same configuration whose owner
  is gone, keeps its FINISHED children and soft-deletes children a killed process left
  half-written (RUNNING; marked KILLED, then moved to MLflow's trash, restorable).

All tracking goes through :class:`vampstudy.tracking.Tracker` (the one mlflow module).
"""

from __future__ import annotations

import io
import logging
import os
import socket
import threading
from pathlib import Path

import numpy as np

from .plan import TAG_CHECK, TAG_CONFIG, TAG_NOTE, TAG_ROLE, TAG_TRIAL, Plan, PlannedTrial
from .runfiles import arrays_bytes
from .stored import StoredArrays, StoredAudio, compact_outcome
from .study import Outcome, Record, Trial

logger = logging.getLogger(__name__)

TAG_HOST = "vampstudy.host"
TAG_PID = "vampstudy.pid"
TAG_ERROR = "vampstudy.error"
TAG_FAILED = "vampstudy.failed_conditions"
TAG_FAILED_STAGE = "vampstudy.failed_stage"
OPEN_STATUSES = ("RUNNING", "FAILED", "KILLED", "SCHEDULED")


def owner_tags() -> dict:
    return {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid())}


def owner_alive(tags: dict) -> bool | None:
    """Whether the process that owns a RUNNING run is alive: True/False on this host, None elsewhere."""
    host, pid = tags.get(TAG_HOST), tags.get(TAG_PID)
    if not host or not pid or host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    if int(pid) == os.getpid():
        return True
    try:  # a zombie (finished, not yet reaped) is not alive
        state = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def record_contents(tracker, run_id: str, rec: Record | None, extra_params: dict | None = None,
                    tags: dict | None = None, new_run: bool = False) -> None:
    """Write a :class:`Record` (plus params/tags) to one run: one batch of values, one upload
    of files (tables included)."""
    from . import audio as audio_io

    if rec is None and not extra_params and not tags:
        return
    rec = rec or Record()
    files: dict = {}   # artifact path → bytes or SpooledFile
    for name, signal in rec.audio.items():
        files[f"audio/{name}.wav"] = audio_io.signal_to_wav_bytes(signal)
    if rec.arrays:
        files["arrays.npz"] = arrays_bytes(rec.arrays)
    if rec.figures:
        from .plots import RenderedFigure

        # Each figure is kept as its PNG (the Figure itself is freed): the listening
        # report shows the same images without drawing them again.
        rec.figures = {name: RenderedFigure.of(fig) for name, fig in rec.figures.items()}
        for name, fig in rec.figures.items():
            files[f"figures/{name}.png"] = fig.png
    for path, text in rec.texts.items():
        files[path] = text.encode()
    files.update(rec.files)
    tracker.log_run_batch(run_id, params={**(extra_params or {}), **rec.params},
                          metrics=rec.metrics, series=rec.series, tags=tags or {}, files=files,
                          tables=rec.tables, skip_existing_params=not new_run)


def record_child(tracker, experiment_id: str, parent_id: str, planned: PlannedTrial,
                 outcome: Outcome | None, error: str | None = None,
                 traceback_text: str | None = None, dataset: bool = True,
                 created: list | None = None) -> str:
    """Create, fill and close the child run of one trial; returns its run id.

    Usable by the driver and by a remote worker (with its own tracker). ``created``, when
    given, receives the child's id as soon as it exists: if recording fails half-way while
    the store is away, the caller removes that half-written run before it tries again.
    """
    child = tracker.start_run(experiment_id, planned.run_name, planned.tags, parent_id=parent_id)
    if created is not None:
        created.append(child)
    try:
        if dataset:
            tracker.log_dataset(child, "clips", [planned.trial.clip.identity])
        if outcome is not None:
            outcome.run_id = child
            record_contents(tracker, child, outcome, extra_params=planned.params, new_run=True)
            tracker.finish(child, "FINISHED")
        else:
            record_contents(tracker, child, Record(texts={"traceback.txt": traceback_text or error or ""}),
                            extra_params=planned.params, tags={TAG_ERROR: (error or "")[:500]},
                            new_run=True)
            tracker.finish(child, "FAILED")
    except BaseException:
        try:
            if tracker.answers():   # else MLflow would retry for minutes; it is cleaned up later
                tracker.finish(child, "FAILED")
        except Exception:  # the store itself is gone; resume will mark the child KILLED
            pass
        raise
    return child


def remove_half_written(tracker, run_ids: list) -> None:
    """Mark KILLED and move to MLflow's trash the runs a failed recording left (in place)."""
    while run_ids:
        run_id = run_ids[0]
        if tracker.get_run(run_id).info.status != "KILLED":
            tracker.finish(run_id, "KILLED")
        tracker.client.delete_run(run_id)
        logger.info("removed the half-written run %s of an interrupted recording", run_id)
        run_ids.pop(0)


class Recorder:
    """The driver's side of the run layout for one study invocation."""

    def __init__(self, tracker, plan: Plan):
        self.tracker = tracker
        self.plan = plan
        self.experiment_id = tracker.experiment_id(plan.experiment)
        self.parent_id: str | None = None
        self.resumed = False
        self.finished_runs: dict[str, object] = {}
        self.outcomes: dict[str, Outcome] = {}
        self.errors: dict[str, str] = {}
        self.failed: list[Trial] = []
        self.half_written: list[str] = []   # children of failed recordings, removed on retry
        self._retrying: str | None = None    # trial key whose last recording attempt failed
        self._lock = threading.Lock()
        self.system_metrics = None   # a vampstudy.tracking.SystemMetrics on the parent, if any

    # ------------------------------------------------------------ parent
    def find_resumable(self) -> bool:
        """Adopt the newest unfinished parent of this configuration whose owner is gone."""
        t = self.tracker
        parents = t.find_runs(self.experiment_id, {TAG_ROLE: "study", TAG_CONFIG: self.plan.config_hash},
                              statuses=OPEN_STATUSES)
        for parent in parents:
            if parent.info.status == "RUNNING" and owner_alive(parent.data.tags):
                logger.warning("run %s of this configuration is still running in process %s; "
                               "not resuming it", parent.info.run_id, parent.data.tags.get(TAG_PID))
                continue
            self.parent_id = parent.info.run_id
            break
        if self.parent_id is None:
            return False
        logger.info("resuming run %s", self.parent_id)
        children = t.find_runs(self.experiment_id, {"mlflow.parentRunId": self.parent_id})
        for run in children:
            key = run.data.tags.get(TAG_TRIAL)
            if run.info.status == "FINISHED" and key and key not in self.finished_runs:
                self.finished_runs[key] = run
            elif run.info.status == "RUNNING":  # half-written by a killed process
                t.finish(run.info.run_id, "KILLED")
                t.client.delete_run(run.info.run_id)  # soft delete: hidden, restorable
                logger.info("removed the half-written run %s (%s) of a killed process",
                            run.info.run_id, run.info.run_name)
        t.client.update_run(self.parent_id, status="RUNNING")
        t.set_tags(self.parent_id, owner_tags())
        self.resumed = True
        return True

    def open_parent(self, params: dict, inputs: Record, clips: list[dict], config_yaml: str,
                    tags: dict) -> str:
        """Create the parent run with its params, inputs, dataset and ``config.yaml``."""
        t = self.tracker
        self.parent_id = t.start_run(self.experiment_id, self.plan.parent_name,
                                     {**self.plan.base_tags, **tags, TAG_ROLE: "study", **owner_tags()})
        try:
            inputs.texts["config.yaml"] = config_yaml
            record_contents(t, self.parent_id, inputs, extra_params=params)
            t.log_dataset(self.parent_id, "clips", clips)
        except BaseException:
            t.finish(self.parent_id, "FAILED")
            raise
        return self.parent_id

    def set_check(self, check_status: str | None) -> None:
        if check_status:
            self.tracker.set_tags(self.parent_id, {TAG_CHECK: check_status})

    # ------------------------------------------------------------ children
    def record(self, result) -> None:
        """The sink of an executor: record one :class:`~vampstudy.execute.TrialResult`."""
        planned = result.planned
        with self._lock:
            if result.run_id is None and (self._retrying == planned.key
                                          or result.half_written is not None):
                # an earlier attempt (this process's, or a worker's) failed: its runs are
                # half-written, unless one got FINISHED and only the answer was lost
                self.half_written += [r for r in result.half_written or ()
                                      if r not in self.half_written]
                result.run_id = self._settle_attempt(planned, result.ok)
            remove_half_written(self.tracker, self.half_written)
            if result.run_id is None:  # not already recorded by a remote worker
                self._retrying = planned.key
                result.run_id = record_child(self.tracker, self.experiment_id, self.parent_id,
                                             planned, result.outcome, result.error,
                                             result.traceback, created=self.half_written)
                self._retrying = None
                self.half_written.clear()
            if result.ok:
                result.outcome.trial, result.outcome.run_id = planned.trial, result.run_id
                # recorded: its audio, arrays and figures are read back from the run when
                # needed, so that memory does not grow with the trials (vampstudy.stored)
                compact_outcome(result.outcome, self.tracker.artifact_reader(result.run_id))
                self.outcomes[planned.key] = result.outcome
            else:
                logger.error("condition %s failed: %s", planned.run_name, result.error)
                self.failed.append(planned.trial)
                self.errors[planned.run_name] = result.error

    def _settle_attempt(self, planned: PlannedTrial, ok: bool) -> str | None:
        """After a failed attempt to record ``planned``: the id of a FINISHED child of it
        (recorded, answer lost: adopted, not recorded twice) or None; every other child of
        it joins :attr:`half_written`."""
        runs = self.tracker.find_runs(self.experiment_id, {"mlflow.parentRunId": self.parent_id,
                                                           TAG_TRIAL: planned.key})
        kept = next((r.info.run_id for r in runs if ok and r.info.status == "FINISHED"), None)
        self.half_written = [r for r in self.half_written if r != kept]
        self.half_written += [r.info.run_id for r in runs
                              if r.info.run_id not in self.half_written and r.info.run_id != kept]
        if kept is not None:
            logger.info("the run %s of %s was recorded before its answer was lost; kept",
                        kept, planned.run_name)
        return kept

    def reload_finished(self) -> None:
        """Outcomes of trials finished in an earlier invocation, rebuilt from their runs."""
        for planned in self.plan.trials:
            run = self.finished_runs.get(planned.key)
            if run is not None and planned.key not in self.outcomes:
                self.outcomes[planned.key] = reload_outcome(self.tracker, run, planned.trial)

    def ordered_outcomes(self) -> list[Outcome]:
        return [self.outcomes[t.key] for t in self.plan.trials if t.key in self.outcomes]

    # ------------------------------------------------------------ closing
    def record_summary(self, summary: Record | None) -> None:
        record_contents(self.tracker, self.parent_id, summary)

    def finish(self, status: str, metrics: dict | None = None, tags: dict | None = None,
               traceback_text: str | None = None) -> None:
        """Close the parent with ``status`` (and a traceback artifact when given); stop its
        system metrics first."""
        t = self.tracker
        monitor, self.system_metrics = self.system_metrics, None
        try:
            if monitor is not None:
                monitor.stop()
        except Exception as exc:  # figures about the machine must not lose the study
            logger.warning("could not log the last system metrics: %s", exc)
        try:
            if traceback_text:
                t.log_text(self.parent_id, traceback_text, "traceback.txt")
            if metrics or tags:
                t.log_run_batch(self.parent_id, metrics=metrics or {}, tags=tags or {})
        finally:
            t.finish(self.parent_id, status)


def study_state(run, n_finished: int) -> list[str]:
    """Plain-language lines on a study run that did not finish: what happened, how to continue.

    ``n_finished``: its FINISHED child runs. Empty for a FINISHED study.
    """
    info, tags, params = run.info, run.data.tags, run.data.params
    total = params.get("n_trials", "?")
    study = tags.get("vampstudy.study", "STUDY")
    config = f"{info.artifact_uri}/config.yaml"
    if config.startswith("file://"):
        config = config[len("file://"):]
    resume = f"vampstudy run {study} --config '{config}' --resume"
    done = f"{n_finished} of {total} conditions finished and are kept"
    if info.status == "FINISHED":
        return []
    if info.status == "RUNNING":
        alive = owner_alive(tags)
        if alive:
            return [f"still running in process {tags.get(TAG_PID)} ({done} so far)"]
        if alive is False:
            return [f"interrupted: its process {tags.get(TAG_PID)} is gone ({done}).",
                    f"Continue it with:  {resume}"]
        return [f"RUNNING on host {tags.get(TAG_HOST, '?')} (cannot tell from here whether its "
                f"process is alive; {done}).",
                f"If it is not, continue it with:  {resume}"]
    if info.status == "KILLED":
        return [f"interrupted ({done}).", f"Continue it with:  {resume}"]
    stage = tags.get(TAG_FAILED_STAGE, "")
    what = {"analyze": "its analysis failed (traceback.txt on this run)",
            "execute": f"conditions failed: {tags.get(TAG_FAILED, '?')}"}.get(
        stage, f"it failed{' in ' + stage if stage else ''} (traceback.txt on this run)")
    if stage == "execute" and TAG_FAILED not in tags:
        what = "it stopped while running conditions (traceback.txt on this run)"
    return [f"FAILED: {what}; {done}.", f"Fix the cause, then continue with:  {resume}"]


def reload_outcome(tracker, run, trial: Trial, tmp: str | None = None) -> Outcome:
    """Rebuild an Outcome of an earlier invocation from its MLflow run.

    Its params, metrics and series are read now; its audio and arrays are handles that
    read the run's files on access (:mod:`vampstudy.stored`), as for a trial recorded in
    this invocation; figures are not reloaded. ``tmp`` is no longer used.
    """
    run_id = run.info.run_id
    metrics = dict(run.data.metrics)
    history = tracker.client.get_metric_history(run_id, "tokens_changed_pct_by_codebook")
    series = {"tokens_changed_pct_by_codebook": [m.value for m in sorted(history, key=lambda m: m.step)]}
    reader = tracker.artifact_reader(run_id)
    names = tracker.list_artifacts(run_id)
    arrays: list[str] = []
    if "arrays.npz" in names:
        with np.load(io.BytesIO(reader.read("arrays.npz"))) as data:
            arrays = list(data.files)
    audio = [Path(p).stem for p in tracker.list_artifacts(run_id, "audio") if p.endswith(".wav")]
    params = dict(run.data.params)
    return Outcome(params=params, metrics=metrics, series=series,
                   arrays=StoredArrays(arrays, reader), audio=StoredAudio(audio, reader),
                   trial=trial, run_id=run_id)


__all__ = ["Recorder", "record_child", "record_contents", "reload_outcome", "owner_alive",
           "TAG_NOTE"]
