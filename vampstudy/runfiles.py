"""What a run's files and inputs are made of, as bytes and plain values (no store calls):
tables in MLflow's table format and as CSV, arrays as ``.npz``, the clips' dataset rows.

:class:`vampstudy.tracking.Tracker` uploads and logs them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np


def table_files(rows: list[dict]) -> tuple[bytes, bytes]:
    """``(json, csv)`` of a table: the JSON in MLflow's table format (pandas' ``split``
    orient without index: ``{"columns": [...], "data": [[...], ...]}``, non-finite numbers
    as null), the CSV with a header row. Columns in first-seen order."""
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def plain(value):
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not np.isfinite(value):
            return None
        return value

    data = [[plain(row.get(c)) for c in columns] for row in rows]
    text = json.dumps({"columns": columns, "data": data}, default=str)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return text.encode(), buf.getvalue().encode()


def arrays_bytes(arrays: dict) -> bytes:
    """The arrays (name → array-like) as one compressed ``.npz``."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def _column_type(values: list) -> str:
    """MLflow's column type for a list of plain values."""
    if all(isinstance(v, bool) for v in values):
        return "boolean"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "long"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "double"
    return "string"


def dataset_fields(name: str, clips: list[dict]) -> dict:
    """The fields of an MLflow dataset whose rows are the clips' identities.

    Its source is the folder the clip files share (``local``), or, for clips with
    no file (the built-in demo), a ``code`` source naming them. The digest is the
    first 8 hex digits of the SHA-256 of the rows (as canonical JSON).
    """
    columns = list(dict.fromkeys(k for c in clips for k in c))
    schema = {"mlflow_colspec": [
        {"type": _column_type([c[k] for c in clips if k in c]), "name": k,
         "required": all(k in c for c in clips)} for k in columns]}
    rows = json.dumps(clips, sort_keys=True, default=str)
    paths = [Path(str(c.get("path"))) for c in clips]
    if paths and all(p.exists() for p in paths):
        source_type = "local"
        source = {"uri": os.path.commonpath([str(p.resolve().parent) for p in paths])}
    else:  # the built-in demo clip has no file
        source_type = "code"
        source = {"tags": {"vampstudy.source": ", ".join(map(str, paths))}}
    return dict(name=name, digest=hashlib.sha256(rows.encode()).hexdigest()[:8],
                source_type=source_type, source=json.dumps(source), schema=json.dumps(schema),
                profile=json.dumps({"num_rows": len(clips), "num_elements": len(clips) * len(columns)}))
