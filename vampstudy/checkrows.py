"""What every backend check shares: the row type, its statuses and two seam helpers.

:mod:`vampstudy.checks` (the battery) and :mod:`vampstudy.schedule_checks` (the
sampling-schedule rows) both build on this module, so neither imports the other's
internals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

PASS, FAIL, WARN = "PASS", "FAIL", "WARN"


@dataclass
class CheckResult:
    """One row of the battery."""

    check: str
    expectation: str
    measured: str
    status: str
    value: float | None = None
    detail: str = ""
    #: Sampling traces behind the row (schedule checks only), JSON-ready; None elsewhere.
    trace: dict | None = field(default=None, repr=False)

    def to_dict(self, with_trace: bool = True) -> dict:
        row = asdict(self)
        if not with_trace:
            row.pop("trace")
        return row


def periodic_mask(backend, codes, period=7, seed=0, upper=3):
    """A periodic-prompt mask (every ``period``-th step kept on codebooks < ``upper``), seeded."""
    torch.manual_seed(seed)
    return backend.build_mask(codes, periodic_prompt=period, upper_codebook_mask=upper)


def vamp_codes(backend, codes, mask, **kw):
    """``backend.vamp``'s codes on the CPU, whether or not it also returned the mask."""
    out = backend.vamp(codes, mask, **kw)
    return (out[0] if isinstance(out, tuple) else out).cpu()
