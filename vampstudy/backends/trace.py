"""Sampling traces: how many positions are still masked at each step of a ``vamp`` call.

A masked-token sampler fills the masked positions over several steps,
following a schedule (VampNet's is a cosine). The final codes do not show
that schedule — two samplers can end with the same fraction of changed tokens
after very different paths — so :meth:`Backend.trace_sampling` records it:

>>> with backend.trace_sampling() as trace:          # doctest: +SKIP
...     backend.vamp(codes, mask, batch_size=2, seed=0)
>>> trace.calls[0].segments[0].masked                 # doctest: +SKIP
[[1152, 1163], [1151, 1162], ...]   # one row per step: masked count per batch item

Vocabulary:

* a **call** is one ``vamp`` call (:class:`TracedCall`);
* a **segment** is one run of the sampler over one group of codebooks and one
  chunk of time (VampNet runs its coarse model in 10 s chunks, then the
  coarse-to-fine model in 3 s chunks; the reference backend one window at a
  time) (:class:`TraceSegment`);
* ``masked[k][i]`` is the number of positions of batch item ``i`` that are
  still masked when step ``k`` starts — what the model sees at step ``k``;
  ``final[i]`` the number still masked after the last step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


class SamplingTraceUnavailable(NotImplementedError):
    """Raised by :meth:`Backend.trace_sampling` when a backend cannot trace its sampler."""


@dataclass
class TraceSegment:
    """One run of the sampler over one codebook group and time chunk.

    Attributes
    ----------
    group : str
        Which codebooks, e.g. ``"coarse"`` (VampNet's codebooks 0-3),
        ``"fine"`` (4-13) or ``"all"``.
    start, stop : int
        The time steps ``[start, stop)`` of the clip this segment covers.
    steps : int
        The number of sampling steps the sampler was asked for.
    masked : list of list of int
        ``masked[k][i]``: positions of batch item ``i`` still masked at the
        start of step ``k`` (one row per step the sampler actually ran).
    final : list of int or None
        Positions still masked after the last step, per item; None where the
        backend cannot observe it.
    """

    group: str
    start: int
    stop: int
    steps: int
    masked: list[list[int]] = field(default_factory=list)
    final: list[int] | None = None

    @property
    def batch_size(self) -> int:
        return len(self.masked[0]) if self.masked else len(self.final or [])

    def item(self, i: int) -> list[int]:
        """Item ``i``'s masked count at the start of each step, then after the last (if known)."""
        counts = [row[i] for row in self.masked]
        return counts + ([self.final[i]] if self.final is not None else [])


@dataclass
class TracedCall:
    """Everything traced during one ``vamp`` call."""

    batch_size: int
    options: dict = field(default_factory=dict)
    segments: list[TraceSegment] = field(default_factory=list)


@dataclass
class SamplingTrace:
    """The calls recorded inside one ``with backend.trace_sampling()`` block."""

    calls: list[TracedCall] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain JSON-ready data."""
        return asdict(self)


def cosine_schedule(n_masked: int, steps: int, keep_one: bool = True) -> list[int]:
    """The documented cosine unmasking schedule for one item (MaskGIT, VampNet).

    Returns the positions still masked after each of ``steps`` steps: after
    step ``k`` (1-based) ``floor(n_masked * cos(pi/2 * k/steps))``, with every
    step but the last fixing at least one position, and nothing masked after
    the last. With ``keep_one`` (VampNet's rule) a step before the last also
    leaves at least one position masked; without it (the reference backend)
    the schedule may reach 0 early and stop.

    Parameters
    ----------
    n_masked : int
        Positions masked when sampling starts.
    steps : int
        Sampling steps.
    keep_one : bool
        Leave at least one position for the last step.

    Examples
    --------
    >>> cosine_schedule(100, 4)
    [92, 70, 38, 0]
    """
    remaining, out = n_masked, []
    for k in range(1, steps + 1):
        if remaining == 0:
            break
        if k == steps:
            remaining = 0
        else:
            target = math.floor(n_masked * math.cos(math.pi / 2 * k / steps))
            remaining = min(remaining - 1, target)
            remaining = max(1 if keep_one else 0, remaining)
        out.append(remaining)
    return out
