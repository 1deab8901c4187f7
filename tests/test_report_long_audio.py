"""Long audio in the listening report: chunked Ogg encoding that cannot crash, bounded pages.

The encoding runs in a subprocess so that a native crash (SIGSEGV in
libvorbis on one large write) fails the test instead of killing pytest.
"""

import base64
import io
import re
import subprocess
import sys
import textwrap

import numpy as np
import soundfile as sf

from vampstudy import listening

SCRIPT = textwrap.dedent("""
    import sys
    from types import SimpleNamespace
    import numpy as np
    import torch
    from audiotools import AudioSignal
    from vampstudy import listening
    from vampstudy.study import Condition, Outcome, PreparedClip, Session, Trial

    sr, seconds = 48000, 180
    t = np.arange(sr * seconds) / sr
    rng = np.random.default_rng(0)
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 330 * t)])
    stereo += 0.05 * rng.standard_normal(stereo.shape)
    signal = AudioSignal(torch.tensor(stereo[None], dtype=torch.float32), sr)

    # 1. the whole 3 minutes through the block writer (the write that used to crash)
    full = listening.encode_audio(signal.audio_data[0].numpy().T, sr, "OGG")
    open(sys.argv[1], "wb").write(full)

    # 2. a report over that clip: original + two conditions x two seeds
    clip = PreparedClip("long", {"sha256": "abc", "path": "long.wav"}, signal, None)
    outcomes = []
    for interval in (3, 30):
        for seed in (0, 1):
            o = Outcome(metrics={"tokens_changed_pct": float(interval + seed)},
                        audio={"output": signal})
            o.trial = Trial(Condition({"interval": interval}), clip, seed)
            outcomes.append(o)
    backend = SimpleNamespace(is_vampnet=False, name="reference", description="a stand-in")
    page = listening.listening_report(outcomes, Session(backend, [clip], [0, 1]), "long")
    open(sys.argv[2], "w").write(page)
""")


def test_three_minute_48k_stereo_preview_and_report_do_not_crash(tmp_path):
    ogg, html_path = tmp_path / "full.ogg", tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(ogg), str(html_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"

    audio, sr = sf.read(ogg)
    assert sr == 48000 and audio.shape[1] == 2
    assert abs(len(audio) / sr - 180) < 0.1          # every block was written

    page = html_path.read_text()
    sources = re.findall(r"src='data:audio/ogg;base64,([^']+)'", page)
    assert len(sources) == 1 + 4                      # original once + 2 conditions x 2 seeds
    for data in sources:
        preview, psr = sf.read(io.BytesIO(base64.b64decode(data)))
        assert abs(len(preview) / psr - listening.PREVIEW_SECONDS) < 0.1
    assert "first 30 s of 180.0 s" in page and "audio/output.wav" in page
    # bounded: five 30-s previews plus images, far below the 180-s originals
    assert len(page) < 5 * 1024 * 1024


def test_encode_audio_round_trips_in_blocks():
    sr = 8000
    n = listening.BLOCK_FRAMES * 2 + 123              # crosses two block boundaries
    data = 0.5 * np.sin(np.linspace(0, 400 * np.pi, n))
    wav, got_sr = sf.read(io.BytesIO(listening.encode_audio(data, sr, "WAV")))
    assert got_sr == sr and len(wav) == n
    assert np.max(np.abs(wav - data)) < 1e-3


def test_preview_budget_shrinks_with_many_players():
    assert listening.preview_seconds(1) == listening.PREVIEW_SECONDS
    many = listening.preview_seconds(1000)
    assert many == listening.MIN_PREVIEW_SECONDS
    mid = listening.preview_seconds(60)
    assert mid * 60 <= listening.AUDIO_BUDGET_SECONDS and mid < listening.PREVIEW_SECONDS
