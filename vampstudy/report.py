"""Text rendering of tables for the terminal (``vampstudy show``, ``vampstudy check``)."""

from __future__ import annotations


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def format_table(rows: list[dict], columns: list[str] | None = None, max_width: int = 0,
                 drop_empty: bool = False) -> str:
    """Rows of dicts as aligned text columns (numbers right-aligned).

    ``max_width`` > 0 drops trailing columns that would not fit;
    ``drop_empty`` drops columns that are empty in every row.
    """
    if not rows:
        return "(no rows)"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    if drop_empty:
        columns = [c for c in columns if any(r.get(c) is not None for r in rows)]
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    if max_width:
        total, keep = 0, 0
        for w in widths:
            if total + w + 2 > max_width and keep:
                break
            total += w + 2
            keep += 1
        columns, widths, cells = columns[:keep], widths[:keep], [row[:keep] for row in cells]
    numeric = [all(_is_number(r.get(c)) for r in rows) for c in columns]

    def fmt(values):
        return "  ".join(v.rjust(w) if n else v.ljust(w)
                         for v, w, n in zip(values, widths, numeric)).rstrip()

    lines = [fmt(columns), fmt(["-" * w for w in widths])]
    lines += [fmt(row) for row in cells]
    return "\n".join(lines)


def _is_number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


#: Short column names for the terminal view (full names are in MLflow and ``show --wide``).
SHORT_NAMES = {"tokens_changed_pct": "changed%", "tokens_changed_pct_ci95": "changed%_ci95",
               "masked_changed_pct": "masked%", "kept_changed_pct": "kept%",
               "mask_density": "density", "expected_density": "expected",
               "mel_distance": "mel_dist", "chroma_similarity": "chroma",
               "onset_correlation": "onset_r", "tempo_difference_bpm": "dtempo",
               "visqol_moslqo": "visqol", "interval_tokens": "tokens"}


def shorten(name: str, width: int = 12) -> str:
    """A terminal column name: :data:`SHORT_NAMES`, else ``name`` cut to ``width`` with ``~``."""
    if name in SHORT_NAMES:
        return SHORT_NAMES[name]
    return name if len(name) <= width else name[:width - 1] + "~"


def legend(rows: list[dict], compact: list[dict]) -> str:
    """The lines that spell out every shortened column name of a compact table."""
    import textwrap

    full = list(dict.fromkeys(k[:-5] if k.endswith("_mean") else k for r in rows for k in r
                              if not k.endswith("_std") and (not k.endswith("_ci95")
                                                             or k == "tokens_changed_pct_ci95")))
    shown = set(k for r in compact for k in r)
    pairs = dict((shorten(n), n) for n in reversed(full) if shorten(n) != n and shorten(n) in shown)
    if not pairs:
        return ""
    text = "columns: " + ", ".join(f"{a} = {b}" for a, b in reversed(pairs.items()))
    return "\n".join(textwrap.wrap(text, 100, subsequent_indent="  "))


#: Standard metrics a narrow terminal may drop first (they come after custom metrics).
SECONDARY = ("kept_changed_pct", "onset_correlation", "tempo_difference_bpm")


def compact_columns(rows: list[dict]) -> list[dict]:
    """A terminal view of a summary table: means under short names (see
    :data:`SHORT_NAMES`; other long names are cut and :func:`legend` spells them out),
    the CI of % tokens changed, no std or other CI columns, no ``interval_tokens``
    column when it only repeats ``interval``, and custom metrics before the
    :data:`SECONDARY` standard ones (a width limit drops trailing columns)."""
    from .summary import STANDARD_METRICS

    redundant = all(r.get("interval_tokens") == r.get("interval") for r in rows)
    out = []
    for row in rows:
        main, custom, secondary = {}, {}, {}
        for key, value in row.items():
            if key.endswith("_std") or (key.endswith("_ci95") and
                                        key != "tokens_changed_pct_ci95"):
                continue
            if key == "interval_tokens" and redundant:
                continue
            name = key[:-5] if key.endswith("_mean") else key
            if name in SECONDARY:
                target = secondary
            elif key.endswith("_mean") and name not in STANDARD_METRICS:
                target = custom
            else:
                target = main
            target[shorten(name)] = value
        out.append({**main, **custom, **secondary})
    return out
