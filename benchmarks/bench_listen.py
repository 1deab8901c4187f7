"""Benchmark ``vampstudy listen``: building a test, committing a rating, analysing ratings.

Runs a small periodic study on the reference backend (one clip of ``--seconds`` s,
``--conditions`` intervals, ``--seeds`` seeds) in a temporary sqlite store, then prints:

* build      seconds to build the test (download audio, anchors, loudness matching, WAVs)
* submit     median / max milliseconds of one submitted trial (journal fsync + ratings.csv
             and design.json onto the parent run), over every trial of ``--raters`` raters
* analyse    seconds of the full analysis on the runs (screening, summary, box plot,
             metrics on every child run, view) after all raters
* stats      seconds of the pure statistics on a synthetic panel of 20 raters × 12 items ×
             6 conditions (screening, Friedman, Wilcoxon–Holm, mixed model)

Figures only, no pass/fail.

    python benchmarks/bench_listen.py [--seconds 5] [--conditions 6] [--seeds 2] [--raters 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _study(root: Path, seconds: float, conditions: int, seeds: int):
    import soundfile as sf

    from studies.periodic import PeriodicIntervalStudy
    from vampstudy.audio import synthesize_demo
    from vampstudy.backends.reference import ReferenceBackend
    from vampstudy.runner import run_study
    from vampstudy.tracking import Tracker

    sf.write(root / "clip.wav", synthesize_demo(seconds, seed=3), 44100)
    tracker = Tracker(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    intervals = (2, 3, 5, 7, 10, 13, 20, 30, 50, 70, 100)[:conditions]
    result = run_study(PeriodicIntervalStudy(intervals=intervals), ReferenceBackend(device="cpu"),
                       tracker, audio=[str(root / "clip.wav")], seeds=list(range(seeds)))
    return tracker, result.parent_run_id


def _rate(state, rater: str) -> list[float]:
    from vampstudy.listen import design as dz

    times, nxt = [], state.next_trial(rater)
    while not nxt["done"]:
        trial = dz.trial_by_id(state.design, nxt["trial_id"])
        mapping = dz.trial_letters(state.design, rater, trial)
        ratings = {k: {"score": 100 if c == dz.HIDDEN_REFERENCE else 50} for k, c in mapping.items()}
        t = time.perf_counter()
        nxt = state.submit(rater, nxt["trial_id"], ratings)
        times.append(time.perf_counter() - t)
    return times[:-1]      # the last submit also runs the analysis (measured separately)


def _synthetic_stats() -> float:
    import numpy as np

    from vampstudy.listen.results import analyse

    rng = np.random.default_rng(0)
    conds = ["c1", "c2", "c3"]
    base = {"hidden_reference": 97, "anchor_7k": 40, "anchor_3k5": 20, "c1": 80, "c2": 60, "c3": 45}
    rows = [{"rater_id": f"r{r}", "item": f"i{i}", "condition": c, "role": c if c in base and
             not c.startswith("c") else "condition", "score": float(np.clip(b + rng.normal(0, 8), 0, 100)),
             "training": False} for r in range(20) for i in range(12) for c, b in base.items()]
    t = time.perf_counter()
    analyse(rows, {"design": "mushra", "conditions": [{"condition": c} for c in conds]})
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--conditions", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--raters", type=int, default=4)
    args = parser.parse_args()
    from vampstudy.listen.build import build_test
    from vampstudy.listen.results import record_analysis
    from vampstudy.listen.server import ListeningTest

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tracker, run_id = _study(root, args.seconds, args.conditions, args.seeds)
        t = time.perf_counter()
        test = build_test(tracker, run_id, "mushra", root / "state")
        build_s = time.perf_counter() - t
        state = ListeningTest(test, tracker)
        submits = [s for r in range(args.raters) for s in _rate(state, f"rater{r}")]
        t = time.perf_counter()
        record_analysis(tracker, test, state.journal)
        analyse_s = time.perf_counter() - t
    print(f"study: {args.seconds:g} s clip, {args.conditions} conditions, {args.seeds} seeds "
          f"({args.seeds} items, {len(test.design['trials'])} trials), {args.raters} raters")
    print(f"build    {build_s:8.2f} s")
    print(f"submit   {1000 * statistics.median(submits):8.1f} ms median, "
          f"{1000 * max(submits):.1f} ms max over {len(submits)} trials")
    print(f"analyse  {analyse_s:8.2f} s (screening, summary, box plot, metrics on "
          f"{sum(len(c['run_ids']) for c in test.design['conditions'])} child runs, view)")
    print(f"stats    {_synthetic_stats():8.2f} s (20 raters x 12 items x 6 stimuli, mixed model)")


if __name__ == "__main__":
    main()
