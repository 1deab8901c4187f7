"""Benchmark output levels: peak, RMS, loudness and clipping of every built-in study's outputs.

For each built-in study (default: all of ``vampstudy list``'s built-ins) and each of its
conditions, one trial (seed 0) runs the study's model stage on the reference backend
and the output is measured: peak (max |x|), RMS, integrated loudness (BS.1770 as
audiotools computes it) relative to the original (the preprocessed clip) and to the
codec's resynthesis (decode of the clip's own codes), and the percentage of samples
beyond full scale. Prints one row per condition and a summary per study; figures only.
With ``--studies periodic`` on the demo clip this is what ``make demo`` writes.

    python benchmarks/bench_levels.py [--audio FILE] [--max-seconds 10] [--studies periodic,...]

Self-contained (numpy + audiotools only), so the same script measures an older checkout:
``PYTHONPATH=/path/to/old/checkout python benchmarks/bench_levels.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def lufs(signal) -> float:
    from audiotools import AudioSignal

    return float(AudioSignal(signal.audio_data[:1].detach().cpu().clone(), signal.sample_rate).loudness()[0])


def measure(signal, ref_lufs: float, resynth_lufs: float) -> dict:
    x = signal.audio_data[0].detach().cpu().numpy()
    loud = lufs(signal)
    return {"peak": float(np.abs(x).max()), "rms": float(np.sqrt(np.mean(x ** 2))),
            "d_orig": loud - ref_lufs, "d_resynth": loud - resynth_lufs,
            "clipped": 100.0 * float(np.mean(np.abs(x) > 1.0))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", help="audio file (default: the built-in demo clip)")
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--studies", default="", help="comma-separated names (default: all built-ins)")
    args = parser.parse_args()

    import torch

    from vampstudy.backends.reference import ReferenceBackend
    from vampstudy.registry import registered
    from vampstudy.runner import prepare_clips
    from vampstudy.study import Trial

    backend = ReferenceBackend(device="cpu")
    audio = [args.audio] if args.audio else []
    clip = prepare_clips(backend, audio, max_seconds=None)[0]
    if clip.signal.signal_duration > args.max_seconds:
        n = int(args.max_seconds * backend.sample_rate) // backend.hop_length
        from vampstudy.study import PreparedClip

        sig = clip.signal.clone()
        sig.audio_data = sig.audio_data[..., :n * backend.hop_length]
        clip = PreparedClip(clip.name, clip.identity, sig, clip.codes[..., :n])
    x = clip.signal.audio_data[0].numpy()
    ref = lufs(clip.signal)
    resynth = backend.decode(clip.codes)
    rs = measure(resynth, ref, lufs(resynth))
    print(f"clip {clip.name} ({clip.signal.signal_duration:.1f} s): original peak "
          f"{np.abs(x).max():.3f} rms {np.sqrt(np.mean(x ** 2)):.4f} {ref:.2f} LUFS; resynthesis "
          f"peak {rs['peak']:.3f} rms {rs['rms']:.4f} {rs['d_orig']:+.2f} dB vs original")
    names = [n for n in args.studies.split(",") if n] or sorted(
        n for n, e in registered().items() if e[0].source.startswith("built-in"))
    print(f"{'study':15s} {'condition':28s} {'peak':>7s} {'rms':>7s} {'dB orig':>8s} "
          f"{'dB resyn':>8s} {'clip %':>7s}")
    started = time.time()
    for name in names:
        study = registered()[name][0].cls()
        rows = []
        for condition in study.iterate():
            torch.manual_seed(0)
            staged = study.model_stage(Trial(condition, clip, 0), backend)
            signal = staged.signal if hasattr(staged, "signal") else staged.audio["output"]
            m = measure(signal, ref, lufs(resynth))
            rows.append(m)
            print(f"{name:15s} {condition.name[:28]:28s} {m['peak']:7.3f} {m['rms']:7.4f} "
                  f"{m['d_orig']:+8.2f} {m['d_resynth']:+8.2f} {m['clipped']:7.2f}", flush=True)
        d = [r["d_resynth"] for r in rows]
        print(f"{name:15s} {'-- summary':28s} max peak {max(r['peak'] for r in rows):.3f}, dB vs "
              f"resynthesis {min(d):+.2f}..{max(d):+.2f}, max clipped "
              f"{max(r['clipped'] for r in rows):.2f} %", flush=True)
    print(f"{time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
