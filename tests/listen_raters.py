"""Simulated raters for the listening-test tests: they know the hidden letters (from the
server-side design) and rate like a listener would, with a small per-rating jitter."""

from __future__ import annotations

import hashlib

from vampstudy.listen import design as dz

BASE = {dz.HIDDEN_REFERENCE: 100, dz.ANCHOR_3K5: 10, dz.ANCHOR_7K: 30,
        "interval=3": 80, "interval=7": 60, "interval=20": 40}


def score(rater: str, trial_id: str, condition: str) -> int:
    """A careless rater (id starting ``careless``) grades the hidden reference 70 (so
    BS.1534-3's screening excludes them); everyone else grades it 100."""
    if condition == dz.HIDDEN_REFERENCE:
        return 70 if rater.startswith("careless") else 100
    h = hashlib.sha256(f"{rater}/{trial_id}/{condition}".encode()).digest()[0]
    return int(BASE[condition] + h % 7 - 3)


def ratings(design: dict, rater: str, trial_id: str) -> dict[str, int]:
    """Letter → score of one trial, as the server will map the letters."""
    trial = dz.trial_by_id(design, trial_id)
    return {letter: score(rater, trial_id, cond)
            for letter, cond in dz.trial_letters(design, rater, trial).items()}
