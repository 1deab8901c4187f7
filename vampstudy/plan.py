"""Stage 1 of a study run, *plan*: which trials to run, under which names — pure, no I/O.

The runner (:mod:`vampstudy.runner`) runs a study in three stages::

    plan     clips × conditions × seeds → PlannedTrial list, config hash, resume set
    execute  PlannedTrial → TrialResult through an executor (vampstudy.execute)
    record   parent run, one child run per trial, artifacts, statuses (vampstudy.record)

A plan is computed from the study, the backend's identity, the prepared clips and the
seeds alone: the same inputs give the same plan (same trial keys, run names and
configuration hash), which is what lets ``--resume`` find the work already done and lets
any executor, local or remote, record runs with identical names, tags and params.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from .errors import VampstudyError
from .study import PreparedClip, Study, Trial

from .layout import (TAG_BACKEND, TAG_CHECK, TAG_CONDITION, TAG_CONFIG,  # noqa: F401
                     TAG_CONTROL, TAG_NOTE, TAG_ORDER, TAG_ROLE, TAG_STUDY, TAG_TRIAL)


def backend_note(backend) -> str:
    """The note on every run: which backend made it, and plainly when it is not VampNet."""
    if backend.is_vampnet:
        return f"Generated with VampNet ({backend.description})."
    return (f"Generated with the **{backend.name}** backend — {backend.description}. "
            "These results are not VampNet's.")


@dataclass(frozen=True)
class PlannedTrial:
    """One trial with everything needed to run and record it anywhere.

    Attributes
    ----------
    index : int
        Position in the plan; results are recorded in this order.
    trial : Trial
        Condition × clip × seed.
    run_name : str
        The child run's name (``interval=7``, plus ``seed=…`` / ``[clip]`` when those vary).
    tags : dict
        The child run's tags (role, study, backend, config hash, trial key, note).
    params : dict
        The child run's params before the outcome's own (study params, condition, seed, clip).
    """

    index: int
    trial: Trial
    run_name: str
    tags: dict
    params: dict

    @property
    def key(self) -> str:
        return self.trial.key


@dataclass
class Plan:
    """The trials of one study invocation and the identity of its configuration."""

    study_name: str
    experiment: str
    config_hash: str
    base_tags: dict
    parent_name: str
    trials: list[PlannedTrial]
    done: frozenset = field(default_factory=frozenset)

    @property
    def todo(self) -> list[PlannedTrial]:
        """Trials not finished in an earlier invocation (the resume set's complement)."""
        return [t for t in self.trials if t.key not in self.done]

    def with_done(self, keys) -> "Plan":
        """The same plan, with the trials whose keys are in ``keys`` marked as finished."""
        known = {t.key for t in self.trials}
        return Plan(self.study_name, self.experiment, self.config_hash, self.base_tags,
                    self.parent_name, self.trials, frozenset(k for k in keys if k in known))

    def with_check(self, check_status: str | None) -> "Plan":
        """The same plan with the backend's ``vampstudy check`` verdict tagged on every run
        (for a verdict looked up where the store is open, after the plan was made)."""
        if not check_status:
            return self
        tagged = [replace(t, tags={**t.tags, TAG_CHECK: check_status}) for t in self.trials]
        return Plan(self.study_name, self.experiment, self.config_hash,
                    {**self.base_tags, TAG_CHECK: check_status}, self.parent_name, tagged,
                    self.done)


def run_name(trial: Trial, n_seeds: int, n_clips: int) -> str:
    name = trial.condition.name
    if n_seeds > 1:
        name += f" seed={trial.seed}"
    if n_clips > 1:
        name += f" [{trial.clip.name}]"
    return name


def plan_study(study: Study, backend, clips: list[PreparedClip], seeds: list[int], *,
               conditions=None, experiment: str | None = None, check_status: str | None = None,
               now: float | None = None) -> Plan:
    """The plan of ``study`` on ``clips`` × its conditions × ``seeds`` (pure), then its
    control runs (:meth:`Study.control_conditions`): per clip, a ``codec`` control with the
    first seed and a ``noise`` control per condition × seed, child runs with role ``control``
    and the tag ``vampstudy.control`` = their kind.

    Parameters
    ----------
    conditions : list of Condition, optional
        ``study.iterate()`` when not given.
    experiment : str, optional
        The MLflow experiment name; the study's name by default.
    check_status : str, optional
        The backend's last ``vampstudy check`` verdict, recorded as a tag.
    now : float, optional
        Time stamp for the parent run's name (``time.time()`` by default).

    Raises
    ------
    VampstudyError
        The study has no conditions.
    """
    conditions = list(study.iterate() if conditions is None else conditions)
    if not conditions:
        raise VampstudyError(f"study {study.name!r} has no conditions to run; check its parameters")
    config_hash = study.config_hash(backend=backend.name, backend_options=backend.options(),
                                    clips=[c.identity["sha256"] for c in clips], seeds=seeds)
    base_tags = {TAG_STUDY: study.name, TAG_BACKEND: backend.name, TAG_CONFIG: config_hash}
    if check_status:
        base_tags[TAG_CHECK] = check_status
    note = backend_note(backend)
    study_params = study.get_params()
    trials: list[PlannedTrial] = []

    def add(condition, clip, seed):
        trial = Trial(condition, clip, seed)
        index = len(trials)
        tags = {**base_tags, TAG_ROLE: "control" if condition.control else "condition",
                TAG_TRIAL: trial.key, TAG_CONDITION: condition.key, TAG_NOTE: note,
                TAG_ORDER: index}
        if condition.control:
            tags[TAG_CONTROL] = condition.control
        params = {**study_params, **condition.params, "seed": seed, "clip": clip.name,
                  "backend": backend.name}
        trials.append(PlannedTrial(index, trial, run_name(trial, len(seeds), len(clips)),
                                   tags, params))

    for clip in clips:
        for condition in conditions:
            for seed in seeds:
                add(condition, clip, seed)
    controls = study.control_conditions(conditions)
    for clip in clips:       # controls after every condition: the conditions' order is unchanged
        for control in controls:
            for seed in (seeds[:1] if control.control == "codec" else seeds):
                add(control, clip, seed)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now if now is not None else time.time()))
    return Plan(study_name=study.name, experiment=experiment or study.name,
                config_hash=config_hash, base_tags=base_tags,
                parent_name=f"{study.name} · {backend.name} · {stamp}", trials=trials)
