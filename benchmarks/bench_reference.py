"""Benchmark the reference backend on a 10 s clip: encode, one vamp, decode; peak memory.

Prints figures (no pass/fail): the targets are encode + vamp + decode <= 2 s
and peak RSS <= 1 GB on a 2-core machine.

    python benchmarks/bench_reference.py [--repeats 5] [--interval 7]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from vampstudy.audio import demo_clip
from vampstudy.backends.reference import ReferenceBackend


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--interval", type=int, default=7)
    args = parser.parse_args()

    backend = ReferenceBackend(device="cpu")
    clip = demo_clip(duration=10.0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; clip "
          f"{clip.duration_s:.2f} s; backend {backend.name}; periodic prompt P={args.interval}")
    rows = {"encode": [], "vamp": [], "decode": []}
    for i in range(args.repeats + 1):   # the first round is the cold start, reported apart
        codes, t_enc = timed(lambda: backend.encode(clip.signal))
        torch.manual_seed(i)
        mask = backend.build_mask(codes, periodic_prompt=args.interval, upper_codebook_mask=3)
        out, t_vamp = timed(lambda: backend.vamp(codes, mask, seed=i))
        _, t_dec = timed(lambda: backend.decode(out))
        if i == 0:
            print(f"cold (first call): encode {t_enc:.3f} s, vamp {t_vamp:.3f} s, "
                  f"decode {t_dec:.3f} s")
            continue
        rows["encode"].append(t_enc)
        rows["vamp"].append(t_vamp)
        rows["decode"].append(t_dec)
    med = {k: statistics.median(v) for k, v in rows.items()}
    for k, v in rows.items():
        print(f"{k:>7}: median {med[k]:.3f} s  (min {min(v):.3f}, max {max(v):.3f}, n={len(v)})")
    total = sum(med.values())
    print(f"  total: {total:.3f} s per condition (target <= 2 s)")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak_mb:.0f} MB (target <= 1024 MB)")


if __name__ == "__main__":
    main()
