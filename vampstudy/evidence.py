"""Evidence across a study's rows: FAD and KAD per condition and control, the logged
embeddings, and the paper's bitrate-vs-quality figure.

Computed once, in the analysis, from the frame embeddings every trial stored in its
``arrays.npz`` (:func:`vampstudy.embeddings.array_name`) and the originals' frames,
computed here from the prepared clips. See :mod:`vampstudy.distribution` for the metrics
and :mod:`vampstudy.embeddings` for the frames.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field

import numpy as np

from .distribution import KAD_SCALE, N_BOOT, distribution_metric, median_bandwidth
from .embeddings import FRAME_SEED, MAX_FRAMES, array_name, get_embedding

logger = logging.getLogger(__name__)


@dataclass
class Evidence:
    """What :func:`distribution_evidence` returns.

    Attributes
    ----------
    columns : dict
        condition key → ``{fad_<emb>: ..., fad_<emb>_ci95: ..., kad_<emb>: ..., ...}``.
    rows : list of dict
        The ``distribution`` table: one row per row label × embedding × metric.
    files : dict
        ``embeddings/<emb>.npz`` → bytes.
    params : dict
        Parent params: bandwidths, scale, frames kept per output, bootstrap settings.
    """

    columns: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)
    files: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    warned: set = field(default_factory=set)


def _rounded(v):
    return None if v is None or not np.isfinite(v) else float(f"{v:.6g}")


def _file_name(embedding: str) -> str:
    return embedding.replace(":", ".").replace("/", ".")


def _npz(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def distribution_evidence(outcomes, clips, backend, embeddings, n_boot: int = N_BOOT) -> Evidence:
    """FAD and KAD of every row (condition or control) against the original clips.

    Parameters
    ----------
    outcomes : list of Outcome
        Every finished trial; one carrying no frames of an embedding is left out of it.
    clips : list of PreparedClip
        The originals (their preprocessed signals give the reference frames).
    backend : Backend
        For the ``codec`` embedding.
    embeddings : list of str
        Usable embedding names.
    """
    ev = Evidence(params={"embedding_max_frames": MAX_FRAMES, "embedding_frame_seed": FRAME_SEED,
                          "distribution_n_boot": n_boot, "kad_scale": KAD_SCALE})
    index = {c.identity["sha256"]: i for i, c in enumerate(clips)}
    groups: dict[str, list] = {}
    for o in outcomes:
        groups.setdefault(o.trial.condition.key, []).append(o)
    for name in embeddings:
        key = array_name(name)
        emb = get_embedding(name)
        reference = [emb.frames(c.signal, backend) for c in clips]
        bandwidth = median_bandwidth(np.concatenate(reference))
        ev.params[f"kad_{name}_bandwidth"] = _rounded(bandwidth)
        saved = {"reference": np.concatenate(reference),
                 "reference:clip": np.concatenate([np.full(len(r), i) for i, r in enumerate(reference)])}
        for cond_key, group in groups.items():
            condition = group[0].trial.condition
            outputs = [[] for _ in clips]
            for o in group:
                if key in o.arrays and o.trial.clip.identity["sha256"] in index:
                    outputs[index[o.trial.clip.identity["sha256"]]].append(np.asarray(o.arrays[key]))
            if not any(outputs):
                continue
            saved[condition.name] = np.concatenate([a for outs in outputs for a in outs])
            saved[f"{condition.name}:clip"] = np.concatenate(
                [np.full(len(a), i) for i, outs in enumerate(outputs) for a in outs])
            _add_row(ev, cond_key, condition, name, reference, outputs, bandwidth, n_boot)
        ev.files[f"embeddings/{_file_name(name)}.npz"] = _npz(saved)
    return ev


def _add_row(ev: Evidence, cond_key, condition, name, reference, outputs, bandwidth, n_boot):
    cols = ev.columns.setdefault(cond_key, {})
    for metric in ("fad", "kad"):
        r = distribution_metric(metric, reference, outputs, bandwidth=bandwidth, n_boot=n_boot)
        cols[f"{metric}_{name}"] = _rounded(r.value)
        cols[f"{metric}_{name}_ci95"] = _rounded(r.ci95)
        if r.warning and (metric, name) not in ev.warned:   # once per metric and embedding
            ev.warned.add((metric, name))
            logger.warning("%s (%s), e.g. of %s: %s", metric.upper(), name, condition.name, r.warning)
        ev.rows.append({"condition": condition.name, "control": condition.control,
                        "embedding": name, "metric": metric, "value": _rounded(r.value),
                        "ci_low": _rounded(r.ci_low), "ci_high": _rounded(r.ci_high),
                        "n_outputs": r.n_outputs, "n_clips": r.n_clips, "n_frames": r.n_frames,
                        "n_reference_frames": r.n_reference_frames, "warning": r.warning})


def merge_columns(rows: list[dict], outcomes, columns: dict) -> list[dict]:
    """Add each summary row's FAD/KAD columns (rows matched by their ``condition`` label)."""
    by_name = {o.trial.condition.name: o.trial.condition.key for o in outcomes}
    return [{**r, **columns.get(by_name.get(r.get("condition")), {})} for r in rows]
