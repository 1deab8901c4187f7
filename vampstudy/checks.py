"""Behavioural checks of a backend: does it do what its masking and sampling options say?

Each check is a small pure function of a backend and a prepared clip that
returns :class:`CheckResult` rows; :func:`run_checks` runs the battery. The
battery is the same for every backend (it only uses the seam), so a silent
fault — an option that changes nothing, a prompt that is overwritten, a
batched call that samples differently — is caught before a study trusts it.

Statuses: PASS; FAIL (the backend contradicts the contract: ``vampstudy check``
exits 1); WARN (could not be checked, e.g. an option the backend does not take,
or a backend that cannot trace its sampling schedule: "not available").

The sampling-schedule checks (:mod:`vampstudy.schedule_checks`) compare the
per-step masked counts of single and batched calls exactly; the statistical
"batch equivalence" row stays as a secondary, outcome-level comparison.
"""

from __future__ import annotations

import logging
import traceback
from typing import Callable

import numpy as np
import torch

from .checkrows import FAIL, PASS, WARN, CheckResult, periodic_mask, vamp_codes  # noqa: F401
from .study import PreparedClip

logger = logging.getLogger(__name__)

#: Sampling options whose effect is checked, with the value compared to the default.
OPTION_PROBES = {"temperature": (1.0, 0.5), "typical_filtering": (True, False),
                 "top_p": (None, 0.8), "_sampling_steps": (12, 4)}
#: p-value below which a batched call is flagged as behaving differently.
BATCH_ALPHA = 0.01
#: Largest loudness difference (dB) between generated output and codec resynthesis that passes.
LEVEL_TOLERANCE_DB = 6.0


# ------------------------------------------------------------------ checks
def check_prompts_kept(backend, clip: PreparedClip) -> list[CheckResult]:
    """Positions with mask 0 come back bit-identical, on every codebook."""
    codes = clip.codes
    torch.manual_seed(0)
    masks = [periodic_mask(backend, codes, 5),
             backend.build_mask(codes, rand_mask_intensity=0.5, periodic_prompt=0,
                                upper_codebook_mask=backend.n_codebooks)]
    altered, kept, where = 0, 0, set()
    for i, mask in enumerate(masks):
        out = vamp_codes(backend, codes, mask, seed=i)
        keep = mask.cpu() == 0
        diff = (out != codes.cpu()) & keep
        altered += int(diff.sum())
        kept += int(keep.sum())
        where |= set(diff.nonzero()[:, 1].tolist())
    ok = altered == 0
    return [CheckResult("prompts kept", "kept tokens unchanged", f"{altered} of {kept} altered",
                        PASS if ok else FAIL, altered,
                        "" if ok else f"the backend overwrote kept tokens on codebooks "
                                      f"{sorted(where)}")]


def check_masked_regenerated(backend, clip: PreparedClip) -> list[CheckResult]:
    """With an all-ones mask most tokens change."""
    codes = clip.codes
    out = vamp_codes(backend, codes, torch.ones_like(codes), seed=0)
    frac = float((out != codes.cpu()).double().mean())
    return [CheckResult("masked regenerated", "all-ones mask: > 50% change", f"{100 * frac:.1f}% changed",
                        PASS if frac > 0.5 else FAIL, 100 * frac)]


def check_determinism(backend, clip: PreparedClip) -> list[CheckResult]:
    """Same seed → identical codes; different seeds → different codes."""
    codes = clip.codes
    mask = periodic_mask(backend, codes, 7)
    a = vamp_codes(backend, codes, mask, seed=1)
    b = vamp_codes(backend, codes, mask, seed=1)
    c = vamp_codes(backend, codes, mask, seed=2)
    same = int((a != b).sum())
    diff = float((a != c).double().mean())
    return [
        CheckResult("same seed", "identical codes", f"{same} tokens differ",
                    PASS if same == 0 else FAIL, same,
                    "" if same == 0 else "seed does not make vamp reproducible"),
        CheckResult("different seeds", "codes differ", f"{100 * diff:.1f}% differ",
                    PASS if diff > 0 else FAIL, 100 * diff,
                    "" if diff > 0 else "seed has no effect on sampling"),
    ]


def check_option_effects(backend, clip: PreparedClip) -> list[CheckResult]:
    """Changing each sampling option (seed fixed) changes the output."""
    codes = clip.codes
    mask = periodic_mask(backend, codes, 7)
    rows = []
    for option, (base_value, probe_value) in OPTION_PROBES.items():
        name = f"option {option}"
        expectation = f"{base_value} vs {probe_value} differ"
        try:
            base = vamp_codes(backend, codes, mask, seed=3, **{option: base_value})
            probe = vamp_codes(backend, codes, mask, seed=3, **{option: probe_value})
        except TypeError as exc:
            rows.append(CheckResult(name, expectation, "not accepted", WARN,
                                    detail=f"{option} is not an option of this backend ({exc})"))
            continue
        frac = float((base != probe).double().mean())
        rows.append(CheckResult(name, expectation, f"{100 * frac:.2f}% differ",
                                PASS if frac > 0 else FAIL, 100 * frac,
                                "" if frac > 0 else f"{option} changes nothing: the backend "
                                                     f"ignores it"))
    return rows


def check_mask_semantics(backend, clip: PreparedClip) -> list[CheckResult]:
    """build_mask densities ≈ 1 − 1/P; codebooks ≥ upper fully masked; the roll varies."""
    codes = clip.codes
    n_steps = codes.shape[-1]
    worst, upper_ok = 0.0, True
    for period in (2, 3, 7, 30):
        mask = periodic_mask(backend, codes, period, seed=period).cpu()
        density = float(mask[:, :3].double().mean())
        worst = max(worst, abs(density - (1 - 1 / period)))
        upper_ok &= bool(torch.all(mask[:, 3:] == 1))
    tolerance = 1.0 / n_steps + 1e-9
    offsets = {int((periodic_mask(backend, codes, 13, seed=s).cpu()[0, 0] == 0).nonzero()[0])
               for s in range(8)}
    return [
        CheckResult("mask density", "|density - (1-1/P)| <= 1/T", f"max error {worst:.4f}",
                    PASS if worst <= tolerance else FAIL, worst),
        CheckResult("upper codebooks", "codebooks >= upper all masked",
                    "all masked" if upper_ok else "some kept", PASS if upper_ok else FAIL),
        CheckResult("periodic roll", "offset varies with seed", f"{len(offsets)} offsets / 8 seeds",
                    PASS if len(offsets) > 1 else FAIL, len(offsets),
                    "" if len(offsets) > 1 else "the periodic prompt is never rolled"),
    ]


def check_batch_equivalence(backend, clip: PreparedClip, seeds=(0, 1, 2, 3)) -> list[CheckResult]:
    """k conditions in one batched call vs k single calls, over a few seeds.

    Kept tokens must be identical between the two ways; the fraction of masked
    tokens changed per item is compared with a paired t-test over (item, seed).
    """
    from scipy import stats

    codes = clip.codes
    masks = [periodic_mask(backend, codes, 3, seed=10), periodic_mask(backend, codes, 13, seed=11)]
    stacked = torch.cat(masks, dim=0)
    single_frac, batch_frac, kept_mismatch = [], [], 0
    for seed in seeds:
        singles = [vamp_codes(backend, codes, m, seed=seed)[0] for m in masks]
        batched = vamp_codes(backend, codes, stacked, batch_size=len(masks), seed=seed)
        for i, m in enumerate(masks):
            m = m.cpu()[0].bool()
            kept_mismatch += int((singles[i][~m] != batched[i][~m]).sum())
            single_frac.append(float((singles[i][m] != codes.cpu()[0][m]).double().mean()))
            batch_frac.append(float((batched[i][m] != codes.cpu()[0][m]).double().mean()))
    diffs = np.array(batch_frac) - np.array(single_frac)
    if np.allclose(diffs, 0):
        p_value = 1.0
    else:
        p_value = float(stats.ttest_rel(batch_frac, single_frac).pvalue)
    mean_diff = 100 * float(diffs.mean())
    differs = p_value < BATCH_ALPHA
    return [
        CheckResult("batch kept tokens", "batched == single on kept", f"{kept_mismatch} differ",
                    PASS if kept_mismatch == 0 else FAIL, kept_mismatch),
        CheckResult("batch equivalence", f"paired t-test p >= {BATCH_ALPHA}",
                    f"p={p_value:.3g}, diff {mean_diff:+.1f} pts", FAIL if differs else PASS,
                    p_value,
                    f"a batched call changes {mean_diff:+.1f} points more of the masked tokens "
                    f"than single calls (n={len(diffs)}): batching is not equivalent"
                    if differs else ""),
    ]


def check_sampling_schedule(backend, clip: PreparedClip) -> list[CheckResult]:
    """The unmasking schedule, traced: the documented rule, and batched == alone per step.

    See :mod:`vampstudy.schedule_checks`; WARN "not available" for a backend
    without :meth:`~vampstudy.backends.base.Backend.trace_sampling`.
    """
    from .schedule_checks import check_sampling_schedule as check

    return check(backend, clip)


def check_round_trip(backend, clip: PreparedClip) -> list[CheckResult]:
    """decode(encode(x)) keeps x's length; the mel distance is reported."""
    from audiotools.metrics.spectral import MelSpectrogramLoss

    signal = clip.signal
    decoded = backend.decode(clip.codes)
    n_in, n_out = signal.signal_length, decoded.signal_length
    rows = [CheckResult("round-trip length", "decode(encode(x)) has x's length",
                        f"{n_out} vs {n_in} samples", PASS if n_in == n_out else FAIL,
                        n_out - n_in)]
    if n_in == n_out:
        dist = float(MelSpectrogramLoss()(decoded.cpu(), signal.cpu()))
        rows.append(CheckResult("round-trip distance", "reported (mel distance)", f"{dist:.3f}",
                                PASS, dist))
    return rows


def check_output_level(backend, clip: PreparedClip) -> list[CheckResult]:
    """Generated output's loudness within ±:data:`LEVEL_TOLERANCE_DB` of the codec resynthesis.

    Decodes the clip's own codes (resynthesis) and a periodic-prompt vamp of them
    (P=7, seed 0) and compares their integrated loudness (BS.1770 as audiotools
    computes it); WARN beyond the tolerance, so a backend with a level fault (e.g.
    generated tokens that decode far louder) is seen before a study. The output's
    peak is reported too.
    """
    from .levels import loudness_lufs, peak

    resynth = backend.decode(clip.codes)
    output = backend.decode(vamp_codes(backend, clip.codes, periodic_mask(backend, clip.codes, 7), seed=0))
    delta = loudness_lufs(output) - loudness_lufs(resynth)
    ok = abs(delta) <= LEVEL_TOLERANCE_DB
    return [CheckResult("output level", f"|output - resynthesis| <= {LEVEL_TOLERANCE_DB:g} dB",
                        f"{delta:+.1f} dB, peak {peak(output):.2f}", PASS if ok else WARN, delta,
                        "" if ok else f"generated output is {delta:+.1f} dB from the codec's "
                                      f"resynthesis: outputs will be {'louder' if delta > 0 else 'quieter'}"
                                      f" than the original (see loudness_delta_db, clipped_pct)")]


CHECKS: dict[str, Callable] = {
    "prompts_kept": check_prompts_kept,
    "masked_regenerated": check_masked_regenerated,
    "determinism": check_determinism,
    "option_effects": check_option_effects,
    "mask_semantics": check_mask_semantics,
    "sampling_schedule": check_sampling_schedule,
    "batch_equivalence": check_batch_equivalence,
    "round_trip": check_round_trip,
    "output_level": check_output_level,
}


def run_checks(backend, clip: PreparedClip, only: list[str] | None = None) -> list[CheckResult]:
    """Run the battery (or the named checks); a check that raises is reported as FAIL."""
    rows: list[CheckResult] = []
    for key, fn in CHECKS.items():
        if only and key not in only:
            continue
        try:
            rows.extend(fn(backend, clip))
        except Exception as exc:  # a crashing backend is a failed check, not a crashed battery
            logger.debug("check %s raised", key, exc_info=True)
            rows.append(CheckResult(key.replace("_", " "), "runs without error",
                                    f"{type(exc).__name__}", FAIL,
                                    detail=f"{exc}\n{traceback.format_exc(limit=3)}"))
    return rows


def overall_status(rows: list[CheckResult]) -> str:
    """FAIL if any row failed, else WARN if any warned, else PASS."""
    statuses = {r.status for r in rows}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else PASS


def format_check_table(rows: list[CheckResult], width: int = 80) -> str:
    """The battery as a table that fits ``width`` columns (long cells wrap)."""
    import textwrap

    widths = [4, 19, 24, width - 4 - 19 - 24 - 6]
    header = ["", "check", "expectation", "measured"]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for r in rows:
        cols = [textwrap.wrap(v, w) or [""] for v, w in
                zip([r.status, r.check, r.expectation, r.measured], widths)]
        for i in range(max(len(c) for c in cols)):
            lines.append("  ".join((c[i] if i < len(c) else "").ljust(w)
                                   for c, w in zip(cols, widths)).rstrip())
    notes = [f"{r.status} {r.check}: {r.detail.splitlines()[0]}" for r in rows
             if r.detail and r.status != PASS]
    if notes:
        lines.append("")
        lines.extend(textwrap.fill(n, width, subsequent_indent="  ") for n in notes)
    return "\n".join(lines)
