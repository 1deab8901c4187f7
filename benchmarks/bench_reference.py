"""Benchmark the reference backend: cost per audio second and peak memory against clip length.

For each clip length (default 10, 60, 120 and 600 s of the built-in demo
music) a fresh process encodes the clip, builds one periodic mask, runs one
``vamp`` and decodes the result, and reports the median wall time of each
stage divided by the clip's duration, plus that process's peak RSS. Prints
figures only (no pass/fail). Goals on a 2-core machine: the total per audio
second of a 600 s clip within 1.5x that of a 10 s clip, and peak RSS of a
120 s clip <= 2 GB.

    python benchmarks/bench_reference.py [--durations 10,60,120,600] [--repeats 3]
                                         [--interval 7] [--max-memory-gb 10]

Each length runs in its own process (so peak RSS is that length's), under an
address-space limit (``--max-memory-gb``) so that a backend that needs more
memory fails with MemoryError instead of exhausting a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

STAGES = ("encode", "vamp", "decode")


def timed(fn):
    """Run ``fn``; return its result, wall seconds and CPU seconds (all threads of the process)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - start, time.process_time() - cpu


def measure(duration: float, repeats: int, interval: int, threads: int = 0) -> dict:
    """Time encode, one vamp and decode on ``duration`` s of demo music (in this process)."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from vampstudy.audio import demo_clip
    from vampstudy.backends.reference import ReferenceBackend

    backend = ReferenceBackend(device="cpu")
    warm = demo_clip(duration=1.0)                 # pay one-off start-up costs outside the timing
    codes = backend.encode(warm.signal)
    backend.decode(backend.vamp(codes, backend.build_mask(codes, periodic_prompt=interval), seed=0))
    clip = demo_clip(duration=duration)
    times = {k: [] for k in STAGES}
    cpu = {k: [] for k in STAGES}
    for i in range(repeats):
        codes, *t_enc = timed(lambda: backend.encode(clip.signal))
        torch.manual_seed(i)
        mask = backend.build_mask(codes, periodic_prompt=interval, upper_codebook_mask=3)
        out, *t_vamp = timed(lambda: backend.vamp(codes, mask, seed=i))
        _, *t_dec = timed(lambda: backend.decode(out))
        for k, (wall, used) in zip(STAGES, (t_enc, t_vamp, t_dec)):
            times[k].append(wall)
            cpu[k].append(used)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"duration_s": clip.duration_s, "n_steps": int(codes.shape[-1]), "repeats": repeats,
            **{f"{k}_s": med[k] for k in STAGES}, "total_s": sum(med.values()),
            "cpu_total_s": sum(statistics.median(v) for v in cpu.values()),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads()}


def run_child(duration: float, repeats: int, interval: int, max_memory_gb: float,
              threads: int) -> dict:
    cmd = [sys.executable, __file__, "--one", str(duration), "--repeats", str(repeats),
           "--interval", str(interval), "--max-memory-gb", str(max_memory_gb),
           "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"duration_s": duration, "error": last}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--durations", default="10,60,120,600",
                        help="clip lengths in seconds, comma-separated")
    parser.add_argument("--repeats", type=int, default=0,
                        help="timed rounds per length (default: 3 up to 60 s, else 1)")
    parser.add_argument("--interval", type=int, default=7, help="periodic prompt P")
    parser.add_argument("--max-memory-gb", type=float, default=10.0,
                        help="address-space limit of each measuring process")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (default: torch's choice); 1 gives steadier figures "
                             "on a busy machine")
    parser.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one is not None:
        limit = int(args.max_memory_gb * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print(json.dumps(measure(args.one, max(1, args.repeats), args.interval, args.threads)))
        return

    durations = [float(d) for d in args.durations.split(",") if d.strip()]
    print(f"reference backend, demo music, periodic prompt P={args.interval}; one process per "
          f"length; wall seconds per second of audio (median of the timed rounds); cpu = CPU "
          f"seconds (all threads) per second of audio; load average {os.getloadavg()[0]:.1f}; "
          f"torch threads {args.threads or 'default'}")
    header = (f"{'clip':>6} {'steps':>6} {'n':>2} {'encode':>8} {'vamp':>8} {'decode':>8} "
              f"{'total':>8} {'x first':>7} {'cpu':>8} {'x first':>7} {'peak RSS':>9}")
    print(header)
    print("-" * len(header))
    base = base_cpu = None
    for d in durations:
        repeats = args.repeats or (3 if d <= 60 else 1)
        r = run_child(d, repeats, args.interval, args.max_memory_gb, args.threads)
        if "error" in r:
            print(f"{d:>5.0f}s  failed: {r['error']}")
            continue
        per = {k: r[f"{k}_s"] / r["duration_s"] for k in (*STAGES, "total")}
        cpu = r["cpu_total_s"] / r["duration_s"]
        base, base_cpu = base or per["total"], base_cpu or cpu
        print(f"{r['duration_s']:>5.0f}s {r['n_steps']:>6} {r['repeats']:>2} "
              f"{per['encode']:>8.4f} {per['vamp']:>8.4f} {per['decode']:>8.4f} "
              f"{per['total']:>8.4f} {per['total'] / base:>7.2f} {cpu:>8.4f} "
              f"{cpu / base_cpu:>7.2f} {r['peak_rss_mb']:>6.0f} MB", flush=True)
    print("goals: 600 s total per audio second <= 1.5 x the 10 s figure; 120 s peak RSS <= 2048 MB")


if __name__ == "__main__":
    main()
