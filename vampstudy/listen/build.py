"""Build a listening test from a finished study's runs (read through :mod:`vampstudy.tracking`).

The test lives in a local folder (its *state*): ``design.json``, the stimuli as WAV
files, a secret that makes the browser's stimulus ids opaque, and the journal of
ratings. A second ``vampstudy listen`` on the same run and design reuses the folder,
so a restarted server serves the same test and resumes every rater.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .. import stores
from ..errors import VampstudyError
from ..layout import TAG_CONDITION, TAG_CONTROL, TAG_ORDER, TAG_PARENT, TAG_ROLE  # noqa: F401
from ..studyruns import resolve_study_run
from . import design as dz
from . import stimuli

logger = logging.getLogger(__name__)

CHILD_ROLES = ("condition", "control")
OUTPUT_ARTIFACT = "audio/output.wav"


@dataclass
class Test:
    """A built test: its folder, design and the WAV file of every (item, condition)."""

    state_dir: Path
    run_id: str
    design: dict
    secret: bytes

    def stimulus_path(self, item: str, condition: str) -> Path:
        index = [i["item"] for i in self.design["items"]].index(item)
        return self.state_dir / "stimuli" / f"{index:03d}" / self.design["stimulus_files"][condition]

    def reference_path(self, item: str) -> Path:
        return self.stimulus_path(item, dz.HIDDEN_REFERENCE)


def default_state_dir(tracker, run_id: str, design: str) -> Path:
    """``<sqlite store folder>/listening/<run>-<design>``, else ``./vampstudy-listen/...``."""
    db = stores.sqlite_path(tracker.uri)
    root = db.parent if db is not None else Path.cwd() / "vampstudy-listen"
    return root / "listening" / f"{run_id}-{design}"


def condition_name(run) -> str:
    """A child run's condition as text: ``interval=7`` from its condition key, else its name."""
    key = run.data.tags.get(TAG_CONDITION)
    try:
        params = json.loads(key) if key else None
    except ValueError:
        params = None
    if isinstance(params, dict) and params:
        return " ".join(f"{k}={v}" for k, v in params.items())
    return run.info.run_name or run.info.run_id[:8]


def study_children(tracker, run) -> list:
    """The study's finished condition/control runs, in plan order."""
    children = tracker.find_runs(run.info.experiment_id, {TAG_PARENT: run.info.run_id},
                                 ("FINISHED",))
    children = [c for c in children if c.data.tags.get(TAG_ROLE) in CHILD_ROLES]
    return sorted(children, key=lambda c: int(c.data.tags.get(TAG_ORDER, 0) or 0))


def collect_sources(children) -> tuple[list[dict], list[dict], dict]:
    """Items (clip × seed), conditions (study order) and (item, condition) → child run id.

    A control run (tag :data:`TAG_CONTROL`, e.g. the ``codec`` control that a study runs
    with its first seed only) stands in for the items of its clip that have no run of it."""
    items, conditions, runs, by_clip = {}, {}, {}, {}
    for c in children:
        clip, seed = c.data.params.get("clip", "clip"), c.data.params.get("seed", "0")
        item = f"{clip}/seed{seed}"
        items.setdefault(item, {"item": item, "clip": clip, "seed": seed})
        name = condition_name(c)
        control = c.data.tags.get(TAG_CONTROL, "")
        conditions.setdefault(name, {"condition": name, "kind": "control" if control else
                                     "condition", "run_ids": []})["run_ids"].append(c.info.run_id)
        runs[(item, name)] = c.info.run_id
        if control:
            by_clip.setdefault((clip, name), c.info.run_id)
    for item in items.values():
        for name in conditions:
            shared = by_clip.get((item["clip"], name))
            if (item["item"], name) not in runs and shared:
                runs[(item["item"], name)] = shared
    return list(items.values()), list(conditions.values()), runs


def _read(tracker, run_id: str, path: str, tmp: str) -> tuple[np.ndarray, int]:
    local = tracker.download(run_id, path, tempfile.mkdtemp(dir=tmp))
    data, sr = sf.read(local, dtype="float64", always_2d=False)
    return data, int(sr)


def _original_path(tracker, run_id: str, clip: str) -> str:
    names = tracker.list_artifacts(run_id, "audio")
    for candidate in (f"audio/original_{clip}.wav", "audio/original.wav"):
        if candidate in names:
            return candidate
    raise VampstudyError(f"run {run_id} has no original audio (audio/original*.wav) for clip "
                         f"{clip!r}; run `vampstudy listen` on a study run made by `vampstudy run`")


def _render(tracker, run, items, conditions, runs, state_dir: Path, max_seconds: float) -> dict:
    """Write every stimulus WAV; returns condition → file name and the loudness target."""
    names = [dz.HIDDEN_REFERENCE, dz.ANCHOR_3K5, dz.ANCHOR_7K] + [c["condition"] for c in conditions]
    files = {name: f"{j:03d}.wav" for j, name in enumerate(names)}
    raw, rate = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for item in items:
            original, rate = _read(tracker, run.info.run_id,
                                   _original_path(tracker, run.info.run_id, item["clip"]), tmp)
            outputs = {}
            for c in conditions:
                run_id = runs.get((item["item"], c["condition"]))
                if run_id is None:
                    raise VampstudyError(f"condition {c['condition']} has no run for item "
                                         f"{item['item']}; finish the study (vampstudy run ... "
                                         "--resume) before a listening test")
                out, sr = _read(tracker, run_id, OUTPUT_ARTIFACT, tmp)
                if sr != rate:
                    raise VampstudyError(f"run {run_id}: {OUTPUT_ARTIFACT} is at {sr} Hz, the "
                                         f"original at {rate} Hz; re-run the study")
                outputs[c["condition"]] = out
            raw[item["item"]] = stimuli.item_stimuli(original, outputs, rate, max_seconds)
    matched, target = stimuli.match_all(raw, rate)
    for j, item in enumerate(items):
        folder = state_dir / "stimuli" / f"{j:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, x in matched[item["item"]].items():
            (folder / files[name]).write_bytes(stimuli.wav_bytes(x, rate))
    excerpt = min(len(next(iter(s.values()))) for s in matched.values()) / rate
    return {"stimulus_files": files, "loudness_lufs": target, "sample_rate": rate,
            "excerpt_s": excerpt}


def build_test(tracker, run_id: str = "latest", design: str = "mushra",
               state_dir: str | Path | None = None, max_seconds: float = stimuli.MAX_EXCERPT_S,
               max_conditions: int = dz.MAX_CONDITIONS) -> Test:
    """The test of a finished study: reused from ``state_dir`` when built before, else built.

    Raises :class:`VampstudyError` when the run has no finished conditions or audio.
    """
    if design not in dz.DESIGNS:
        raise VampstudyError(f"--design {design!r} is unknown; choose one of "
                             f"{', '.join(dz.DESIGNS)}")
    run = resolve_study_run(tracker, run_id)
    if run.info.status != "FINISHED":
        raise VampstudyError(f"study run {run.info.run_id} is {run.info.status}, not FINISHED; "
                             "finish it first (`vampstudy run NAME ... --resume`)")
    state = Path(state_dir) if state_dir else default_state_dir(tracker, run.info.run_id, design)
    if (state / "design.json").exists():
        return Test(state, run.info.run_id, json.loads((state / "design.json").read_text()),
                    (state / "secret").read_bytes())
    children = study_children(tracker, run)
    if not children:
        raise VampstudyError(f"run {run.info.run_id} has no finished conditions; run or resume "
                             "the study first (`vampstudy run NAME`)")
    items, conditions, runs = collect_sources(children)
    plan = dz.plan_design(run.info.run_id, items, conditions, design, max_conditions)
    state.mkdir(parents=True, exist_ok=True)
    plan.update(_render(tracker, run, items, conditions, runs, state, max_seconds))
    secret = secrets.token_bytes(32)
    (state / "secret").write_bytes(secret)
    os.chmod(state / "secret", 0o600)
    tmp = state / "design.json.tmp"
    tmp.write_text(json.dumps(plan, indent=1))
    tmp.replace(state / "design.json")   # last: a half-built folder is rebuilt next time
    logger.info("built %s test of run %s in %s", design, run.info.run_id, state)
    return Test(state, run.info.run_id, plan, secret)
