"""The local journal of a listening test: one JSON line per submitted trial, fsynced.

The journal is the test's memory: a restarted server reads it to resume every rater
where they left, and a trial submitted twice (a double click, a retried request,
a reloaded page) is kept once — the first submission of a (rater, trial) wins.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

#: Columns of ``listening/ratings.csv``, in order.
COLUMNS = ("rater_id", "trial_id", "item", "condition", "role", "score", "training", "plays",
           "listen_ms", "block", "letter", "position", "trial_ms", "submitted_at")


class Journal:
    """Append-only JSON-lines file of submitted trials (thread-safe within one process)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._records: list[dict] = []
        self._keys: set[tuple[str, str]] = set()
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:      # a line torn by a crash mid-write: never acknowledged
                    continue
                self._remember(record)

    def _remember(self, record: dict) -> bool:
        key = (record["rater_id"], record["trial_id"])
        if key in self._keys:
            return False
        self._keys.add(key)
        self._records.append(record)
        return True

    def add(self, record: dict) -> bool:
        """Append one submitted trial (durably) unless that rater's trial is already in;
        returns whether it was added."""
        with self._lock:
            if (record["rater_id"], record["trial_id"]) in self._keys:
                return False
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
            return self._remember(record)

    def done(self, rater_id: str) -> set[str]:
        """Trial ids this rater has submitted."""
        with self._lock:
            return {t for r, t in self._keys if r == rater_id}

    def records(self) -> list[dict]:
        with self._lock:
            return list(self._records)

    def raters(self) -> list[str]:
        return sorted({r["rater_id"] for r in self.records()})

    def rows(self) -> list[dict]:
        """One row per rated stimulus (the ``ratings.csv`` columns, :data:`COLUMNS`)."""
        out = []
        for rec in self.records():
            for s in rec["ratings"]:
                out.append({"rater_id": rec["rater_id"], "trial_id": rec["trial_id"],
                            "item": rec["item"], "condition": s["condition"], "role": s["role"],
                            "score": s["score"], "training": rec["training"], "plays": s["plays"],
                            "listen_ms": s["listen_ms"], "block": rec["block"],
                            "letter": s["letter"], "position": rec.get("position"),
                            "trial_ms": rec.get("trial_ms"),
                            "submitted_at": rec.get("submitted_at")})
        return out
