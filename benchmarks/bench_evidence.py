"""Cost of the evidence (controls, embeddings, FAD/KAD) on a small periodic study.

Runs the same study three times, each in a fresh process (so peak memory is its own):

    bare        --no-controls, no embeddings (the layout and work before issue 18)
    embeddings  --no-controls, the default mel embedding (+ FAD/KAD per condition)
    default     controls on + mel embedding (what `vampstudy run periodic` does now)

and prints wall time, trials, seconds per trial, peak resident memory and the time of
the analysis (where FAD/KAD and their bootstrap run).

    python benchmarks/bench_evidence.py [--clips 2] [--seconds 3] [--seeds 0,1] [--intervals 2,7,30]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time, logging
import soundfile as sf
from vampstudy.audio import synthesize_demo
from studies.periodic import PeriodicIntervalStudy
from vampstudy.backends.reference import ReferenceBackend
from vampstudy import runner as runner_mod
from vampstudy.runner import run_study
from vampstudy.tracking import Tracker

cfg = json.loads(sys.argv[1])
logging.basicConfig(level=logging.ERROR)
paths = []
for i in range(cfg["clips"]):
    p = f"{cfg['tmp']}/clip{i}.wav"
    sf.write(p, synthesize_demo(duration=cfg["seconds"], seed=i + 1), 44100)
    paths.append(p)
study = PeriodicIntervalStudy(intervals=tuple(cfg["intervals"]))
study.controls = cfg["controls"]
study.embeddings = tuple(cfg["embeddings"])
analysis = {}
original = study.analyze
def timed(outcomes, session):
    t = time.perf_counter()
    out = original(outcomes, session)
    analysis["s"] = time.perf_counter() - t
    return out
study.analyze = timed
tracker = Tracker(f"sqlite:///{cfg['tmp']}/mlflow.db")
t = time.perf_counter()
result = run_study(study, ReferenceBackend(device="cpu"), tracker, audio=paths, seeds=cfg["seeds"])
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"wall_s": wall, "trials": len(result.outcomes), "peak_mb": peak,
                  "analysis_s": analysis.get("s", 0.0)}))
"""

CONFIGS = {"bare": (False, []), "embeddings": (False, ["mel"]), "default": (True, ["mel"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--intervals", default="2,7,30")
    args = ap.parse_args()
    root = Path(__file__).resolve().parent.parent
    print(f"periodic, reference backend: {args.clips} clips × {args.seconds:g} s, intervals "
          f"{args.intervals}, seeds {args.seeds}")
    print(f"{'config':<11} {'trials':>6} {'wall s':>8} {'s/trial':>8} {'analysis s':>10} {'peak MB':>8}")
    for name, (controls, embeddings) in CONFIGS.items():
        with tempfile.TemporaryDirectory() as tmp:
            cfg = {"tmp": tmp, "clips": args.clips, "seconds": args.seconds,
                   "seeds": [int(s) for s in args.seeds.split(",")],
                   "intervals": [int(p) for p in args.intervals.split(",")],
                   "controls": controls, "embeddings": embeddings}
            out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], cwd=root,
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{name:<11} {r['trials']:>6} {r['wall_s']:>8.1f} {r['wall_s'] / r['trials']:>8.2f} "
                  f"{r['analysis_s']:>10.2f} {r['peak_mb']:>8.0f}")


if __name__ == "__main__":
    main()
