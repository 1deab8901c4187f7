"""The plan of a listening test (pure: no audio, no I/O).

A test is built from *items* (clip × seed of a study) and *conditions* (the study's
conditions and controls). Per ITU-R BS.1534-3 a MUSHRA trial holds at most 12
signals: the hidden reference, the 3.5 kHz and 7 kHz low-pass anchors and at most
:data:`MAX_CONDITIONS` conditions. A study with more conditions gets a *blocked*
design: its conditions are split into blocks of at most that many (as even as
possible, in study order), and every item is heard once per block; the blocks are
recorded in ``design.json``.

Designs
-------
``mushra``
    Open reference (the original) plus, blinded, the hidden reference, both anchors
    and the block's conditions (BS.1534-3).
``mushra-noref``
    The same blinded stimuli without the open reference (ITU-R BS.2132); the
    hidden-reference screening rule is not applied (there is nothing to match).
``ab``
    Paired preference: each trial plays two conditions of one item (neighbours in
    study order) as A and B; the rater prefers one (score 100, the other 0).

Every rater gets the same trials in their own random order (seeded by the test
id and the rater id, so a restarted server gives the same order), a training
trial first, and random letters per trial. What the browser sees is opaque: a
trial id (``T07``) and per-rater stimulus tokens that name no condition.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import random
import string

#: Conditions per trial at most (plus hidden reference and two anchors = 12 signals).
MAX_CONDITIONS = 9
DESIGNS = ("mushra", "mushra-noref", "ab")
HIDDEN_REFERENCE, ANCHOR_3K5, ANCHOR_7K, CONDITION = ("hidden_reference", "anchor_3k5",
                                                      "anchor_7k", "condition")
ROLES = (HIDDEN_REFERENCE, ANCHOR_3K5, ANCHOR_7K, CONDITION)
#: Low-pass cut-off of each anchor (Hz).
ANCHOR_CUTOFF_HZ = {ANCHOR_3K5: 3500.0, ANCHOR_7K: 7000.0}
TRAINING = "training"


def blocks(conditions: list[str], max_conditions: int = MAX_CONDITIONS) -> list[list[str]]:
    """Split ``conditions`` (study order) into as few, as even blocks of at most
    ``max_conditions`` as possible, e.g. 11 → [6, 5]."""
    if not conditions:
        return []
    n_blocks = math.ceil(len(conditions) / max_conditions)
    size, extra = divmod(len(conditions), n_blocks)
    out, start = [], 0
    for b in range(n_blocks):
        end = start + size + (1 if b < extra else 0)
        out.append(list(conditions[start:end]))
        start = end
    return out


def _trial_stimuli(design: str, block: list[str]) -> list[str]:
    """The condition names rated in a trial of ``block`` (before shuffling)."""
    if design == "ab":
        return list(block)
    return [HIDDEN_REFERENCE, ANCHOR_3K5, ANCHOR_7K, *block]


def _ab_pairs(conditions: list[str]) -> list[list[str]]:
    return [[a, b] for a, b in zip(conditions, conditions[1:])]


def plan_design(test_id: str, items: list[dict], conditions: list[dict], design: str = "mushra",
                max_conditions: int = MAX_CONDITIONS) -> dict:
    """The design of a test, as recorded in ``listening/design.json``.

    Parameters
    ----------
    test_id : str
        The study's parent run id (seeds every rater's order).
    items : list of dict
        ``{"item": name, "clip": ..., "seed": ...}`` per clip × seed, in study order.
    conditions : list of dict
        ``{"condition": name, "kind": "condition"|"control", ...}`` in study order.
    design : {"mushra", "mushra-noref", "ab"}
    max_conditions : int
        Conditions per trial at most (BS.1534-3: 9, so that a trial has ≤ 12 signals).

    Returns
    -------
    dict
        ``test_id, design, items, conditions, blocks, blocked, trials, training`` where each
        trial is ``{"trial_id", "item", "block", "stimuli": [condition names]}``.
    """
    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; choose one of {', '.join(DESIGNS)}")
    if not items or not conditions:
        raise ValueError("a listening test needs at least one item and one condition")
    names = [c["condition"] for c in conditions]
    if design == "ab":
        if len(names) < 2:
            raise ValueError("an A/B test needs at least two conditions; use --design mushra")
        groups = _ab_pairs(names)
    else:
        groups = blocks(names, max_conditions)
    trials = []
    for b, group in enumerate(groups):
        for item in items:
            trials.append({"trial_id": f"T{len(trials) + 1:02d}", "item": item["item"], "block": b,
                           "stimuli": _trial_stimuli(design, group)})
    training = {**trials[0], "trial_id": TRAINING}
    return {"test_id": test_id, "design": design, "items": items, "conditions": conditions,
            "max_conditions": max_conditions, "blocks": groups,
            "blocked": design != "ab" and len(groups) > 1, "open_reference": design == "mushra",
            "trials": trials, "training": training}


def _rng(*parts: str) -> random.Random:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def rater_order(design: dict, rater_id: str) -> list[str]:
    """The rater's trial ids: ``training`` first, then every trial in the rater's random order
    (the same order for the same test and rater, on any server)."""
    ids = [t["trial_id"] for t in design["trials"]]
    _rng(design["test_id"], rater_id, "order").shuffle(ids)
    return [TRAINING, *ids]


def letters(n: int) -> list[str]:
    """``A``, ``B``, … for ``n`` stimuli (at most 26)."""
    return list(string.ascii_uppercase[:n])


def trial_letters(design: dict, rater_id: str, trial: dict) -> dict[str, str]:
    """Letter → condition name of one trial for one rater, in a per-rater random order."""
    stimuli = list(trial["stimuli"])
    _rng(design["test_id"], rater_id, trial["trial_id"], "letters").shuffle(stimuli)
    return dict(zip(letters(len(stimuli)), stimuli))


def trial_by_id(design: dict, trial_id: str) -> dict:
    if trial_id == TRAINING:
        return design["training"]
    for trial in design["trials"]:
        if trial["trial_id"] == trial_id:
            return trial
    raise KeyError(trial_id)


def stimulus_token(secret: bytes, rater_id: str, trial_id: str, letter: str) -> str:
    """An opaque id for one stimulus of one rater's trial (HMAC; names no condition)."""
    msg = "\x1f".join((rater_id, trial_id, letter)).encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()[:24]


def role_of(condition: str) -> str:
    """``hidden_reference``, ``anchor_3k5``, ``anchor_7k`` or ``condition``."""
    return condition if condition in (HIDDEN_REFERENCE, ANCHOR_3K5, ANCHOR_7K) else CONDITION
