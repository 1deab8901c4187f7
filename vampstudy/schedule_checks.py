"""Checks of the sampler's unmasking schedule, from a backend's sampling trace.

The final codes of a masked-token sampler do not show how it got there: a
batched call whose items unmask one token per step for most of the steps and
the rest at the end changes the same fraction of tokens as a correct one. So
these checks look at the schedule itself, through
:meth:`Backend.trace_sampling <vampstudy.backends.base.Backend.trace_sampling>`:

* **sampling schedule** — each single call follows the backend's documented
  rule: one row per requested sampling step, masked counts never increasing,
  nothing masked at the end, and the count after every step within one token
  of :meth:`Backend.sampling_schedule` (VampNet's and the reference's: cosine);
* **batch schedule** — each item of a batched call has exactly the same masked
  count at every step as the same input alone; a FAIL names the first
  differing step and both counts.

A backend without tracing gets both rows as WARN, "not available".
"""

from __future__ import annotations

import textwrap

from .backends.trace import SamplingTraceUnavailable, TraceSegment
from .checkrows import FAIL, PASS, WARN, CheckResult, periodic_mask, vamp_codes

#: Periodic prompts of the two conditions compared (as in the statistical batch check).
PERIODS = ((3, 10), (13, 11))
TOLERANCE = 1   # tokens, for the documented schedule


def _masks(backend, codes):
    return [periodic_mask(backend, codes, period, seed=seed) for period, seed in PERIODS]


def trace_calls(backend, clip, seed: int = 0):
    """Trace the two conditions alone (two calls) and together (one call of batch 2)."""
    import torch

    masks = _masks(backend, clip.codes)
    with backend.trace_sampling() as alone:
        for mask in masks:
            vamp_codes(backend, clip.codes, mask, seed=seed)
    with backend.trace_sampling() as batched:
        vamp_codes(backend, clip.codes, torch.cat(masks, dim=0), batch_size=len(masks), seed=seed)
    return alone, batched


def _arrow(counts: list[int], limit: int = 14) -> str:
    shown = [str(c) for c in counts]
    if len(shown) > limit:
        shown = shown[: limit - 3] + ["…"] + shown[-2:]
    return " → ".join(shown)


def rule_deviation(backend, segment: TraceSegment, item: int) -> tuple[int | None, str]:
    """Largest gap (tokens) between an item's observed and documented counts, and any fault."""
    counts = segment.item(item)
    if len(segment.masked) != segment.steps:
        return None, (f"{segment.group} ran {len(segment.masked)} steps, asked for "
                      f"{segment.steps}")
    rises = [k for k in range(1, len(counts)) if counts[k] > counts[k - 1]]
    if rises:
        k = rises[0]
        return None, f"{segment.group} masked count rises at step {k}: {counts[k - 1]} → {counts[k]}"
    if segment.final is not None and segment.final[item] != 0:
        return None, f"{segment.group} ends with {segment.final[item]} positions still masked"
    expected = backend.sampling_schedule(counts[0], segment.steps, segment.group)
    if expected is None:
        return 0, ""
    expected = list(expected) + [0] * (segment.steps - len(expected))
    observed = counts[1:]   # after step 1 … (after the last, when observed)
    gap = max((abs(o - e) for o, e in zip(observed, expected)), default=0)
    return gap, ""


def _rule_row(backend, alone) -> CheckResult:
    worst, fault, n_seg, steps = 0, "", 0, {}
    for call in alone.calls:
        for seg in call.segments:
            n_seg += 1
            steps.setdefault(seg.group, seg.steps)
            for i in range(call.batch_size):
                gap, why = rule_deviation(backend, seg, i)
                if why and not fault:
                    fault = why
                if gap is not None:
                    worst = max(worst, gap)
    if n_seg == 0:
        return CheckResult("sampling schedule", "documented rule", "nothing traced", FAIL,
                           detail="trace_sampling recorded no sampling steps during vamp")
    first = alone.calls[0].segments[0]
    shown = f"{first.group}: {_arrow(first.item(0))}"
    ok = not fault and worst <= TOLERANCE
    steps_txt = ", ".join(f"{group} {n}" for group, n in steps.items())
    measured = (f"steps: {steps_txt}; max {worst} token(s) off" if not fault else "rule broken")
    detail = "" if ok else (fault or f"masked counts differ from the documented schedule by up "
                                     f"to {worst} tokens (allowed {TOLERANCE}); alone {shown}")
    return CheckResult("sampling schedule", f"non-increasing, 0 at end, ±{TOLERANCE} of documented",
                       measured, PASS if ok else FAIL, worst, detail)


def first_difference(alone_calls, batched_call):
    """First (item, segment, step, alone count, batched count) that differs, and the total."""
    first, n_diff = None, 0
    for i, single in enumerate(alone_calls):
        for s_seg, b_seg in zip(single.segments, batched_call.segments):
            a, b = s_seg.item(0), b_seg.item(i)
            for k, (x, y) in enumerate(zip(a, b)):
                if x != y:
                    n_diff += 1
                    if first is None:
                        first = (i, s_seg, k, x, y)
        if len(single.segments) != len(batched_call.segments):
            n_diff += 1
            first = first or (i, None, 0, len(single.segments), len(batched_call.segments))
    return first, n_diff


def _step_name(seg: TraceSegment | None, k: int) -> str:
    if seg is None:
        return "segment count"
    where = f"{seg.group} [{seg.start}:{seg.stop}]"
    return f"{where} after step {seg.steps}" if k >= len(seg.masked) else f"{where} step {k + 1}"


def _batch_row(alone, batched) -> CheckResult:
    expectation = "batched == alone, every step (exact)"
    if len(batched.calls) != 1 or len(alone.calls) != batched.calls[0].batch_size:
        return CheckResult("batch schedule", expectation, "traces incomplete", FAIL,
                           detail=f"traced {len(alone.calls)} single calls and "
                                  f"{len(batched.calls)} batched calls")
    first, n_diff = first_difference(alone.calls, batched.calls[0])
    if first is None:
        return CheckResult("batch schedule", expectation, "identical", PASS, 0)
    item, seg, k, x, y = first
    where = _step_name(seg, k)
    detail = (f"item {item} of batch {batched.calls[0].batch_size}, {where}: {y} masked in the "
              f"batched call vs {x} alone — a batched call unmasks on a different schedule")
    return CheckResult("batch schedule", expectation, f"item {item} {where}: {y} vs {x}",
                       FAIL, n_diff, detail)


def check_sampling_schedule(backend, clip) -> list[CheckResult]:
    """The schedule rule (single calls) and batch schedule equivalence, from traces."""
    try:
        alone, batched = trace_calls(backend, clip)
    except SamplingTraceUnavailable as exc:
        return [CheckResult(name, expectation, "not available", WARN,
                            detail=f"{exc}: the schedule was not checked")
                for name, expectation in (("sampling schedule", "documented rule"),
                                          ("batch schedule", "batched == alone, every step"))]
    rule = _rule_row(backend, alone)
    rule.trace = {"alone": alone.to_dict()["calls"]}
    batch = _batch_row(alone, batched)
    batch.trace = {"batched": batched.to_dict()["calls"]}
    return [rule, batch]


# --------------------------------------------------------------- reporting
def schedule_lines(rows: list[CheckResult], width: int = 80) -> list[str]:
    """The traced per-step masked counts, alone vs batched, one line per item and segment group."""
    traces = {}
    for row in rows:
        traces.update(row.trace or {})
    if "alone" not in traces or "batched" not in traces or not traces["batched"]:
        return []
    batched = traces["batched"][0]
    lines = ["masked positions at the start of each step (then after the last, if observed):"]
    for i, single in enumerate(traces["alone"]):
        for s_seg, b_seg in zip(single["segments"], batched["segments"]):
            if s_seg["start"] != 0:   # the first chunk of each group is enough to see the shape
                continue
            label = f"item {i} {s_seg['group']}"
            for name, seg, j in (("alone", s_seg, 0), ("batched", b_seg, i)):
                counts = " ".join(str(c) for c in TraceSegment(**seg).item(j))
                head = f"  {label:<14} {name:<8} "
                lines.extend(textwrap.wrap(counts, width, initial_indent=head,
                                           subsequent_indent=" " * len(head)))
    return lines


def schedule_figure(rows: list[CheckResult], backend_name: str):
    """Figure: masked count per step for each item, alone (solid) vs batched (dashed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    traces = {}
    for row in rows:
        traces.update(row.trace or {})
    if "alone" not in traces or not traces.get("batched"):
        return None
    batched = traces["batched"][0]
    groups = []
    for seg in batched["segments"]:
        if seg["start"] == 0 and seg["group"] not in groups:
            groups.append(seg["group"])
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 3.8), squeeze=False)
    for ax, group in zip(axes[0], groups):
        for i, single in enumerate(traces["alone"]):
            pairs = [(s, b) for s, b in zip(single["segments"], batched["segments"])
                     if s["group"] == group and s["start"] == 0]
            if not pairs:
                continue
            s_seg, b_seg = pairs[0]
            a, b = TraceSegment(**s_seg).item(0), TraceSegment(**b_seg).item(i)
            line, = ax.plot(range(len(a)), a, marker="o", ms=3, label=f"item {i} alone")
            ax.plot(range(len(b)), b, marker="x", ms=4, ls="--", color=line.get_color(),
                    label=f"item {i} in batch of {batched['batch_size']}")
        ax.set_title(f"{group} (first chunk)")
        ax.set_xlabel("sampling step")
        ax.set_ylabel("positions still masked")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"unmasking schedule, single vs batched call — backend: {backend_name}",
                 fontsize=10)
    fig.tight_layout()
    return fig
