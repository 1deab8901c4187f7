"""What the mask hook costs (issue 21): mask construction and time per trial of the periodic study.

Two figures, in this process, on the reference backend (CPU) and the built-in 10 s
demo clip; no MLflow (the runner's recording is the same either way):

* ``mask`` — median wall of building one trial's mask, as the model stage does it:
  with the hook, ``check_mask(study.mask(trial, backend), codes)``; on a checkout from
  before the hook (no ``MaskingStudy.mask``), ``backend.build_mask(codes, signal,
  **study.mask_options(condition))``. Also the composed ``vampstudy.masks.build_mask``
  alone. Microseconds.
* ``trial`` — median wall of one whole trial of ``PeriodicIntervalStudy``
  (``vampstudy.execute.run_trial``: seed, mask, vamp, decode, token and fidelity metrics,
  figures) over intervals 3, 7, 13 and ``--seeds`` seeds, after one warm-up trial.

Run it once on each checkout and compare::

    PYTHONPATH=/path/to/before python benchmarks/bench_mask_hook.py
    PYTHONPATH=$PWD            python benchmarks/bench_mask_hook.py

Prints figures only. Other processes on the same cores move the trial figure by
several percent; the mask figure is what the hook changes.
"""

from __future__ import annotations

import argparse
import statistics
import time


def median_wall(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="Seeds per interval (trial figure).")
    parser.add_argument("--mask-repeats", type=int, default=300)
    args = parser.parse_args()

    import torch

    import vampstudy
    from studies.periodic import PeriodicIntervalStudy
    from vampstudy import masks
    from vampstudy.backends.reference import ReferenceBackend
    from vampstudy.execute import run_trial
    from vampstudy.runner import prepare_clips
    from vampstudy.study import Condition, MaskingStudy, Session, Trial

    torch.set_num_threads(1)
    backend = ReferenceBackend(device="cpu")
    (clip,) = prepare_clips(backend)
    study = PeriodicIntervalStudy(intervals=(3, 7, 13))
    study.prepare(Session(backend=backend, clips=[clip], seeds=[0]))
    trial = Trial(Condition({"interval": 7}), clip, seed=0)
    hooked = "mask" in MaskingStudy.__dict__
    if hooked:
        def one_mask():
            return masks.check_mask(study.mask(trial, backend), clip.codes)
    else:
        def one_mask():
            return backend.build_mask(clip.codes, clip.signal,
                                      **study.mask_options(study.resolve(trial)))

    def bare():
        return masks.build_mask(clip.codes, sample_rate=backend.sample_rate,
                                hop_length=backend.hop_length, periodic_prompt=7)
    one_mask()
    mask_s = median_wall(one_mask, args.mask_repeats)
    build_s = median_wall(bare, args.mask_repeats)

    trials = [Trial(Condition({"interval": p}), clip, seed=s)
              for p in (3, 7, 13) for s in range(args.seeds)]
    run_trial(study, trials[0], backend)            # warm-up (first-call costs)
    per_trial = []
    for t in trials:
        start = time.perf_counter()
        run_trial(study, t, backend)
        per_trial.append(time.perf_counter() - start)

    print(f"vampstudy {vampstudy.__file__}  ({'with' if hooked else 'without'} MaskingStudy.mask)")
    print(f"clip {clip.identity['duration_s']} s, codes {tuple(clip.codes.shape)}, 1 torch thread")
    print(f"mask per trial (model stage's path)   {mask_s * 1e6:8.1f} us  (median of {args.mask_repeats})")
    print(f"masks.build_mask(periodic_prompt=7)   {build_s * 1e6:8.1f} us")
    print(f"trial, periodic study                 {statistics.median(per_trial):8.3f} s   "
          f"(median of {len(per_trial)}; min {min(per_trial):.3f}, max {max(per_trial):.3f})")


if __name__ == "__main__":
    main()
