"""Study wall ÷ bare model loop: ``--executor pipelined`` against ``--executor process``.

Every figure is a whole process started from here (interpreter start-up and imports
included), measured with :func:`bench_throughput.measure`: wall clock, CPU time (user +
system of the process and its children: the measuring process counts), peak RSS of the
study process itself.

Input: a real recording, /work/shared/audio/fuel_2.wav (6.15 s, stereo; or the shipped
3 s excerpt tests/data/fuel_2_excerpt.flac when it is absent), mixed to mono and repeated
to 10 s, written to a temporary WAV. The 11 notebook intervals, no control runs.

Rows, for the ``reference`` backend (1 seed: 11 trials; its sampler holds the interpreter)
and ``sleepy-test`` (:class:`vampstudy.testing.SleepyBackend`, 0.5 s a call that frees
the interpreter, NOT a model; 3 seeds: 33 trials):

* bare loop wall: the same model calls as a plain script
  (``bench_throughput.py --bare``: load, preprocess, encode, then mask + vamp + decode);
* study wall and study ÷ bare for each executor, runs interleaved (bare, pipelined,
  process, repeated ``--repeats`` times; the median is shown).

Usage::

    python benchmarks/bench_process.py                 # both backends, 1 repeat
    python benchmarks/bench_process.py --only sleepy --repeats 3
    python benchmarks/bench_process.py --threads 1     # one math thread per process

No asserts: it prints figures. The machine's load changes every figure; the load
average is printed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_throughput as bt  # noqa: E402  (the measuring helpers and the bare loop)

REAL_CLIPS = (Path("/work/shared/audio/fuel_2.wav"),
              Path(__file__).resolve().parents[1] / "tests" / "data" / "fuel_2_excerpt.flac")
EXECUTORS = ("pipelined", "process")
BACKENDS = {"reference": ("reference", (0,)), "sleepy": (bt.SLEEPY, (0, 1, 2))}


def write_real_clip(path: Path, seconds: float = 10.0) -> Path:
    """The first real clip found, mono, repeated to ``seconds``, as 16-bit WAV at ``path``."""
    import numpy as np
    import soundfile as sf

    source = next(p for p in REAL_CLIPS if p.exists())
    data, rate = sf.read(str(source), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    n = int(round(seconds * rate))
    sf.write(str(path), np.tile(mono, -(-n // len(mono)))[:n], rate, subtype="PCM_16")
    return source


def bench_backend(label: str, tmp: Path, wav: Path, repeats: int, timeout: float) -> list[str]:
    backend, seeds = BACKENDS[label]
    intervals = ",".join(map(str, bt.NOTEBOOK_INTERVALS))
    seed_arg = ",".join(map(str, seeds))
    bare_cmd = [sys.executable, str(Path(bt.__file__).resolve()), "--bare", "--backend", backend,
                "--audio", str(wav), "--intervals", intervals, "--seeds", seed_arg]
    walls: dict[str, list[float]] = {"bare": []}
    cpus: dict[str, list[float]] = {"bare": []}
    for r in range(repeats):
        bare = bt.measure(bare_cmd, cwd=str(tmp), timeout=timeout)
        if bare.rc:
            return [f"{label}: the bare loop failed (exit {bare.rc}): {bare.out[-500:]}"]
        walls["bare"].append(bare.wall_s)
        cpus["bare"].append(bare.cpu_s)
        for executor in EXECUTORS:
            work = tmp / f"{label}-{executor}-{r}"
            bt.create_store(work)
            m, _ = bt.run_study(work, ["--audio", str(wav), "--seeds", seed_arg, "--intervals",
                                       intervals, "--no-controls", "--executor", executor],
                                timeout, backend=backend)
            if m.rc:
                return [f"{label}: the study with --executor {executor} failed (exit {m.rc})"]
            walls.setdefault(executor, []).append(m.wall_s)
            cpus.setdefault(executor, []).append(m.cpu_s)
    bare_wall = statistics.median(walls["bare"])
    n = len(bt.NOTEBOOK_INTERVALS) * len(seeds)
    lines = [f"{label} ({n} trials, real 10 s clip): bare loop wall {bare_wall:.1f} s, "
             f"CPU {statistics.median(cpus['bare']):.1f} s"]
    for executor in EXECUTORS:
        wall = statistics.median(walls[executor])
        lines.append(f"  --executor {executor:9s} study wall {wall:6.1f} s = "
                     f"{wall / bare_wall:.2f}x bare   CPU {statistics.median(cpus[executor]):.1f} s"
                     f"   (runs: {', '.join(f'{w:.1f}' for w in walls[executor])})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="reference,sleepy",
                        help="Comma-separated subset of: reference, sleepy.")
    parser.add_argument("--repeats", type=int, default=1, help="Interleaved repeats (median).")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP/MKL/OpenBLAS threads of every measured process.")
    parser.add_argument("--timeout", type=float, default=900.0, help="Seconds per process.")
    args = parser.parse_args()
    if args.threads:
        bt.CHILD_ENV.update({k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                             "OPENBLAS_NUM_THREADS")})
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(BACKENDS)
    if unknown:
        parser.error(f"--only: unknown {sorted(unknown)}; use {', '.join(BACKENDS)}")
    with tempfile.TemporaryDirectory(prefix="bench-process-") as tmp:
        wav = Path(tmp) / "real10s.wav"
        source = write_real_clip(wav)
        print(f"clip: {source.name}, mono, repeated to 10 s; {os.cpu_count()} cores; "
              f"threads: {args.threads or 'default'}")
        for label in only:
            for line in bench_backend(label, Path(tmp), wav, args.repeats, args.timeout):
                print(line, flush=True)
    print(f"(load average at the end {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
