"""A long real-format clip (3 minutes, 48 kHz stereo) runs through `vampstudy run periodic`
to FINISHED as a real process: no native crash in the listening report's Ogg previews
(the released code died with SIGSEGV there), a bounded report, every artifact written."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import soundfile as sf

from vampstudy.audio import synthesize_demo
from vampstudy.layout import TAG_CONTROL
from vampstudy.studyruns import study_runs
from vampstudy.tracking import Tracker


def test_three_minute_48k_stereo_clip_finishes(tmp_path):
    mono = synthesize_demo(duration=180.0, seed=3)          # 44.1 kHz music
    t_old = np.arange(len(mono)) / 44100
    t_new = np.arange(int(180.0 * 48000)) / 48000
    left = np.interp(t_new, t_old, mono)
    stereo = np.stack([left, np.roll(left, 480) * 0.8], axis=1).astype(np.float32)
    path = tmp_path / "long take.wav"
    sf.write(path, stereo, 48000, subtype="PCM_16")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run([sys.executable, "-m", "vampstudy.cli", "run", "periodic",
                           "--backend", "reference", "--intervals", "7", "--audio", str(path),
                           "--tracking-uri", uri], cwd=tmp_path, capture_output=True, text=True,
                          timeout=1500)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    tracker = Tracker(uri)
    parent = study_runs(tracker)[0]
    assert parent.info.status == "FINISHED"
    artifacts = {f.path: f.file_size for f in tracker.client.list_artifacts(parent.info.run_id)}
    assert "report.html" in artifacts
    # previews are capped (30 s each), the full outputs are the children's WAV artifacts
    assert artifacts["report.html"] < 20 * 2 ** 20
    children = tracker.find_runs(parent.info.experiment_id,
                                 {"mlflow.parentRunId": parent.info.run_id}, ("FINISHED",))
    # the one condition, and its controls (the codec resynthesis and the noise baseline)
    assert sorted(c.data.tags.get(TAG_CONTROL, "") for c in children) == ["", "codec", "noise"]
