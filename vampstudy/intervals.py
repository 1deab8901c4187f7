"""Prompt intervals given in tokens or in musical time (``beat``, ``beat/2``, ``2beat``, ``bar``).

A beat-relative interval is converted to token steps with the clip's tempo:
``round(multiple * beats * 60 / bpm * tokens_per_second)`` (at least 1), where
``bar`` is ``beats_per_bar`` beats (4). At 120 BPM and 57.42 tokens/s one beat
is 29 tokens, ``beat/2`` 14, ``bar`` 115.
"""

from __future__ import annotations

import difflib
import re

import click

#: Spellings offered when an interval is not understood.
EXAMPLES = ("beat", "beat/2", "2beat", "bar", "bar/2", "2bar")

_BEAT = re.compile(r"^(?:(\d+(?:\.\d+)?)\s*\*?\s*)?(beat|bar)s?(?:\s*/\s*(\d+(?:\.\d+)?))?$")


def parse_interval(value) -> int | str:
    """An integer interval, or a normalised beat expression; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if _BEAT.match(text):   # plural spellings mean the same: "2 beats" -> "2beat"
        return re.sub(r"(beat|bar)s", r"\1", text.replace(" ", "").replace("*", ""))
    raise ValueError(value)


def suggest(value) -> str:
    """A hint for a near-miss (``beets`` → ``did you mean 'beat'?``), else ``""``."""
    text = str(value).strip().lower().replace(" ", "")
    close = difflib.get_close_matches(text, EXAMPLES, n=1, cutoff=0.5)
    if not close:
        stripped = re.sub(r"^[\d.]+\*?", "", text)
        close = difflib.get_close_matches(stripped, ("beat", "bar"), n=1, cutoff=0.5)
        close = [text[:len(text) - len(stripped)] + close[0]] if close else []
    return f"did you mean {close[0]!r}? " if close else ""


def interval_warnings(specs, tokens, clip_steps: int, clip_seconds: float) -> list[str]:
    """Warnings for intervals that do not fit the clip: longer than the clip (only the
    first token is kept), or leaving at most one prompt token."""
    longer = [f"{s}" + (f" ({n} tokens)" if is_beat(s) else "")
              for s, n in zip(specs, tokens) if n > clip_steps]
    sparse = [s for s, n in zip(specs, tokens) if n <= clip_steps and -(-clip_steps // n) <= 1]
    out = []
    if longer:
        out.append(f"interval {', '.join(longer)} exceeds the clip ({clip_steps} tokens, "
                   f"{clip_seconds:.2f} s): only its first token is kept as a prompt; use a "
                   f"longer clip or an interval below {clip_steps}")
    if sparse:
        out.append(f"intervals {sparse} leave at most one prompt token in the shortest clip "
                   f"({clip_steps} steps, {clip_seconds:.2f} s)")
    return out


def is_beat(spec) -> bool:
    return isinstance(spec, str)


def beat_multiple(spec: str, beats_per_bar: int = 4) -> float:
    """How many beats a beat expression spans (``2beat`` → 2, ``beat/2`` → 0.5, ``bar`` → 4)."""
    m = _BEAT.match(spec)
    if not m:
        raise ValueError(spec)
    factor = float(m.group(1)) if m.group(1) else 1.0
    unit = beats_per_bar if m.group(2) == "bar" else 1
    divisor = float(m.group(3)) if m.group(3) else 1.0
    return factor * unit / divisor


def interval_tokens(spec, tempo_bpm: float | None, tokens_per_second: float,
                    beats_per_bar: int = 4) -> int:
    """Token steps of an interval spec (integers pass through)."""
    if not is_beat(spec):
        return int(spec)
    if not tempo_bpm or tempo_bpm <= 0:
        raise ValueError(f"interval {spec!r} needs a tempo")
    seconds = beat_multiple(spec, beats_per_bar) * 60.0 / tempo_bpm
    return max(1, int(round(seconds * tokens_per_second)))


class IntervalList(click.ParamType):
    """Comma-separated intervals: integers and beat expressions, mixed."""

    name = "P,...|beat"

    def convert(self, value, param, ctx):
        items = value if isinstance(value, (list, tuple)) else \
            [v.strip() for v in str(value).split(",") if v.strip()]
        if not items:
            self.fail("expected comma-separated intervals, got nothing", param, ctx)
        out = []
        for v in items:
            try:
                out.append(parse_interval(v))
            except ValueError:
                self.fail(f"{v!r} is not a valid interval (in {value!r}): {suggest(v)}give "
                          "integers or beat, beat/2, 2beat, bar — e.g. 2,7,beat", param, ctx)
        return tuple(out)
