"""How ``--executor ray`` scales with workers (issue 12). Prints a table; no asserts.

Two parts:

* **latency-bound** — the ``sleepy-test`` backend (:mod:`vampstudy.testing`: every vamp
  sleeps ``--delay`` seconds, standing in for a GPU call; not a model) under a periodic
  study whose measurement is the token metrics only (no figures, no audio metrics), for
  1, 2, 4, 8 workers with ``--trials-per-worker`` trials per worker. This measures the
  framework — dispatch, shipping results, recording every child run (driver-side, to a
  sqlite store) — and not this machine's cores. Goal: efficiency >= 0.9 up to 8 workers.
  The default delay is 2 s because the driver writes each child run to sqlite itself
  (about 0.15–0.3 s per run on a busy 2-core machine): with 1 s calls, 8 workers deliver
  runs faster than one driver records them (``--delay 1`` shows it); with a tracking
  server the workers record in parallel instead.
* **reference backend** — the full periodic study (audio metrics, figures) with the
  CPU-bound reference backend, sequential (no Ray) vs Ray with 1 and 2 workers: what
  this machine's cores give.

``trials/s`` is trials ÷ the executor's run time (first dispatch to last result recorded);
Ray's and the workers' start-up (the backend loaded once per worker) is shown apart as
``start s``. ``speed-up`` is trials/s over the 1-worker row of the same part;
``efficiency`` = speed-up ÷ workers. One local Ray session serves every row.

Usage::

    python benchmarks/bench_scale.py                     # both parts, writes benchmarks/results/scale.txt
    python benchmarks/bench_scale.py --workers 1,2,4 --delay 0.5 --no-reference

Run it on an idle machine: other processes on the same cores change every figure.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import soundfile as sf

RESULTS = Path(__file__).parent / "results" / "scale.txt"
SLEEPY = "vampstudy.testing:SleepyBackend"


def latency_study(intervals):
    """The periodic study with a cheap measurement stage: token metrics, arrays, audio."""
    from studies.periodic import PeriodicIntervalStudy
    from vampstudy.metrics import token_metrics
    from vampstudy.study import ModelOutput, Outcome

    class LatencyStudy(PeriodicIntervalStudy):
        name = "periodic-latency"
        fidelity = False

        def measure_stage(self, trial, staged, backend):
            if not isinstance(staged, ModelOutput):
                return staged
            metrics, series = token_metrics(trial.clip.codes, staged.codes_out, staged.mask,
                                            staged.upper)
            outcome = Outcome(metrics=metrics, series=series, audio={"output": staged.signal},
                              arrays={"codes_in": trial.clip.codes.cpu().numpy(),
                                      "codes_out": staged.codes_out.cpu().numpy(),
                                      "mask": staged.mask.cpu().numpy()})
            return self.measure(trial, outcome, backend)

        def analyze(self, outcomes, session):   # the summary table only (not timed anyway)
            from vampstudy.study import Summary
            from vampstudy.summary import standard_tables

            return Summary(tables=standard_tables(outcomes, ["tokens_changed_pct", "mask_density"]))

    return LatencyStudy(intervals=tuple(intervals))


def one_run(study, backend, spec, clip, seeds, executor, root: Path, label: str) -> dict:
    from vampstudy.runner import run_study
    from vampstudy.tracking import Tracker

    store = root / label
    store.mkdir(parents=True)
    tracker = Tracker(f"sqlite:///{store / 'mlflow.db'}")
    started = time.time()
    result = run_study(study, backend, tracker, audio=[str(clip)], seeds=seeds,
                       executor=executor, backend_spec=spec)
    wall = time.time() - started
    n = len(result.outcomes)
    stats = getattr(executor, "stats", {})
    return {"label": label, "trials": n, "run_s": stats.get("run_s", 0.0), "start_s": stats.get("start_s", 0.0),
            "wall_s": wall, "failed": len(result.failed)}


def timed_local(study, backend, spec, clip, seeds, name, root, label):
    """A local executor, timed around its ``execute`` (as the Ray executor's ``run_s``)."""
    from vampstudy.executors import make_executor

    executor = make_executor(name)
    inner = executor.execute

    def execute(job, trials, sink):
        t = time.time()
        inner(job, trials, sink)
        executor.stats = {"run_s": time.time() - t, "start_s": 0.0}

    executor.execute = execute
    return one_run(study, backend, spec, clip, seeds, executor, root, label)


def table(rows: list[dict], base: dict | None) -> list[str]:
    head = (f"{'executor':<22} {'workers':>7} {'trials':>6} {'run s':>7} {'trials/s':>8} "
            f"{'speed-up':>8} {'efficiency':>10} {'start s':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        tps = r["trials"] / r["run_s"] if r["run_s"] else float("nan")
        r["tps"] = tps
        speedup = tps / base["tps"] if base and base.get("tps") else float("nan")
        eff = speedup / r["workers"] if r["workers"] else float("nan")
        sp = f"{speedup:8.2f}" if r["workers"] else f"{'':>8}"
        ef = f"{eff:10.2f}" if r["workers"] else f"{'':>10}"
        lines.append(f"{r['label']:<22} {r['workers'] or '-':>7} {r['trials']:>6} "
                     f"{r['run_s']:7.2f} {tps:8.2f} {sp} {ef} {r['start_s']:7.1f}"
                     + (f"   ({r['failed']} FAILED)" if r["failed"] else ""))
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="1,2,4,8", help="worker counts (latency-bound part)")
    p.add_argument("--delay", type=float, default=2.0, help="seconds per vamp of sleepy-test")
    p.add_argument("--trials-per-worker", type=int, default=10)
    p.add_argument("--no-reference", action="store_true", help="skip the reference-backend part")
    p.add_argument("--output", default=str(RESULTS), help="where to save the table ('' = don't)")
    args = p.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]

    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import ray

    from vampstudy.audio import synthesize_demo
    from vampstudy.backends import load_backend
    from vampstudy.executors.ray import RayExecutor

    for noisy in ("mlflow", "alembic", "vampstudy", "studies"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    root = Path(tempfile.mkdtemp(prefix="vs-bench-scale-"))
    ray_tmp = tempfile.mkdtemp(prefix="vs-ray-b-", dir="/tmp")
    out: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        out.append(line)

    try:
        clip = root / "clip.wav"
        sf.write(clip, synthesize_demo(duration=1.5, seed=3), 44100, subtype="PCM_16")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=max(os.cpu_count() or 1, max(workers)), include_dashboard=False,
                 object_store_memory=500 * 2 ** 20, log_to_driver=False, _temp_dir=ray_tmp,
                 logging_level=logging.WARNING)
        load = os.getloadavg()
        say(f"# bench_scale · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · "
            f"{platform.node()} · {os.cpu_count()} cores · load average at start "
            f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} · Ray {ray.__version__}")
        say(f"# command: python benchmarks/bench_scale.py {' '.join(argv or sys.argv[1:])}".rstrip())
        say()
        say(f"latency-bound: sleepy-test backend (NOT a model), {args.delay:g} s per vamp, "
            f"{args.trials_per_worker} trials per worker, token metrics only, driver records "
            "to sqlite")
        options = {"device": "cpu", "delay": args.delay}
        backend = load_backend(SLEEPY, **options)
        rows = []
        for n in workers:
            total = n * args.trials_per_worker   # one seed, `total` distinct intervals
            study = latency_study(range(2, 2 + total))
            r = one_run(study, backend, (SLEEPY, options), clip, [0], RayExecutor(workers=n),
                        root, f"sleepy-ray-{n}")
            r["workers"] = n
            r["label"] = "ray"
            rows.append(r)
            print(f"  {n} workers: {r['trials']} trials in {r['run_s']:.2f} s", flush=True)
        for line in table(rows, rows[0] if rows and rows[0]["workers"] == 1 else None):
            say(line)
        ideal = 1.0 / args.delay
        say(f"(ideal: {ideal:.2f} trials/s per worker; efficiency = speed-up over 1 worker ÷ workers)")

        if not args.no_reference:
            say()
            say("reference backend (CPU-bound, this machine): full periodic study, intervals "
                "3,7,20 × seeds 0,1 on a 1.5 s clip")
            ref = load_backend("reference", device="cpu")
            from studies.periodic import PeriodicIntervalStudy

            def study():
                return PeriodicIntervalStudy(intervals=(3, 7, 20))
            spec = ("reference", {"device": "cpu"})
            # warm-up, untimed: first-use costs (imports, librosa's numba compilation, cached on
            # disk for the workers too) would otherwise land on whichever row runs first
            timed_local(PeriodicIntervalStudy(intervals=(3,)), ref, spec, clip, [0], "sequential",
                        root, "ref-warm-up")
            rows = []
            import torch

            threads = torch.get_num_threads()
            for n_threads in sorted({threads, 1}, reverse=True):
                torch.set_num_threads(n_threads)   # Ray workers compute with 1 thread each
                r = timed_local(study(), ref, spec, clip, [0, 1], "sequential", root,
                                f"ref-seq-{n_threads}")
                r.update(workers=0, label=f"sequential, {n_threads} thr")
                rows.append(r)
            torch.set_num_threads(threads)
            for n in (1, 2):
                r = one_run(study(), ref, spec, clip, [0, 1], RayExecutor(workers=n), root,
                            f"ref-ray-{n}")
                r.update(workers=n, label="ray")
                rows.append(r)
            for line in table(rows, rows[-2]):
                say(line)
            say("(sequential: no Ray, in this process with torch's default thread count, then "
                "with 1 thread as each Ray worker uses)")
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text("\n".join(out) + "\n")
        print(f"\nsaved to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
