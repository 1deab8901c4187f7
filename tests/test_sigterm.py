"""SIGTERM (``kill``, Slurm's ``scancel``, a batch system's time limit) stops a study as
Ctrl-C does: open runs KILLED, finished ones kept, exit 143, and ``--resume`` completes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf

from vampstudy.audio import synthesize_demo
from vampstudy.tracking import TAG_PARENT, TAG_ROLE, TAG_TRIAL, Tracker

DOUBLES = Path(__file__).resolve().parent / "doubles"
REPO = DOUBLES.parents[1]


def test_sigterm_marks_the_study_killed_and_resume_completes_it(tmp_path):
    clip = tmp_path / "clip.wav"
    sf.write(clip, synthesize_demo(duration=1.0, seed=2), 44100, subtype="PCM_16")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    gate = tmp_path / "gate"   # the gated backend vamps once, then waits for this file
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
           "PYTHONPATH": os.pathsep.join([str(REPO), str(DOUBLES)]),
           "VAMPSTUDY_TEST_GATE": str(gate)}
    cmd = [sys.executable, "-m", "vampstudy.cli", "run", "periodic", "--backend",
           "gated:GatedBackend", "--device", "cpu", "--intervals", "3,7,20", "--no-controls", "--audio", str(clip),
           "--tracking-uri", uri]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    tracker, parent, kids = None, None, []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not kids:
        time.sleep(0.5)
        if tracker is None and (tmp_path / "mlflow.db").exists():
            tracker = Tracker(uri)
        exp = tracker.experiment_id("periodic", create=False) if tracker else None
        parents = tracker.find_runs(exp, {TAG_ROLE: "study"}) if exp else []
        if parents:
            parent = parents[0]
            kids = tracker.find_runs(exp, {TAG_PARENT: parent.info.run_id}, statuses=("FINISHED",))
    assert proc.poll() is None and kids, proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, out[-3000:]
    assert "--resume" in out
    assert tracker.get_run(parent.info.run_id).info.status == "KILLED"

    gate.touch()
    done = subprocess.run(cmd + ["--resume"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert tracker.get_run(parent.info.run_id).info.status == "FINISHED"
    exp = tracker.experiment_id("periodic", create=False)
    children = tracker.find_runs(exp, {TAG_PARENT: parent.info.run_id}, statuses=("FINISHED",))
    keys = [c.data.tags[TAG_TRIAL] for c in children]
    assert len(keys) == len(set(keys)) == 3
    assert kids[0].info.run_id in {c.info.run_id for c in children}, "a finished trial was redone"
