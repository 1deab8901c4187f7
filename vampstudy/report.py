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


def compact_columns(rows: list[dict]) -> list[dict]:
    """A terminal view of a summary table: means under short names (see
    :data:`SHORT_NAMES`), the CI of % tokens changed, no std or other CI columns,
    and no ``interval_tokens`` column when it only repeats ``interval``."""
    redundant = all(r.get("interval_tokens") == r.get("interval") for r in rows)
    out = []
    for row in rows:
        compact = {}
        for key, value in row.items():
            if key.endswith("_std") or (key.endswith("_ci95") and
                                        key != "tokens_changed_pct_ci95"):
                continue
            if key == "interval_tokens" and redundant:
                continue
            name = key[:-5] if key.endswith("_mean") else key
            compact[SHORT_NAMES.get(name, name)] = value
        out.append(compact)
    return out
