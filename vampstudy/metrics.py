"""Token metrics: pure functions of codes and masks.

Definitions (all percentages are 0–100; masks use 1 = generate, 0 = keep):

``mask_density``
    Mean of the mask over the first ``upper_codebook_mask`` codebooks — the
    fraction of prompt-codebook positions the model must generate. For a
    periodic prompt of interval P it is about ``1 - 1/P``. A study passes the
    condition's ``upper_codebook_mask`` option, else its class attribute
    (:attr:`vampstudy.study.MaskingStudy.upper_codebook_mask`, 3) — also for a
    mask built by the study's own ``mask`` hook.
``tokens_changed_pct``
    ``100 * mean(output != input)`` over every codebook and step (the
    notebook's measure of variation).
``tokens_changed_pct_cb{k}``
    The same restricted to codebook ``k``.
``masked_changed_pct``
    ``100 * mean(output != input)`` over masked positions only: how much of
    its freedom the model used.
``kept_changed_pct``
    The same over kept positions. It must be 0: anything else means the
    backend overwrote its prompt.
``interval_ms``
    ``interval * 1000 * hop_length / sample_rate``.
"""

from __future__ import annotations

import math

import torch


def _check(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")


def mask_density(mask: torch.Tensor, upper_codebook_mask: int) -> float:
    """Mean of ``mask[:, :upper_codebook_mask]`` (fraction to generate on the prompt codebooks)."""
    if upper_codebook_mask < 1:
        raise ValueError("upper_codebook_mask must be >= 1")
    return float(mask[:, :upper_codebook_mask].double().mean())


def tokens_changed_pct(codes_in: torch.Tensor, codes_out: torch.Tensor) -> float:
    """``100 * mean(codes_out != codes_in)`` over all codebooks and steps."""
    _check(codes_in, codes_out, "tokens_changed_pct")
    return 100.0 * float((codes_in.cpu() != codes_out.cpu()).double().mean())


def tokens_changed_per_codebook(codes_in: torch.Tensor, codes_out: torch.Tensor) -> list[float]:
    """Per-codebook ``100 * mean(out != in)``, one value per codebook index."""
    _check(codes_in, codes_out, "tokens_changed_per_codebook")
    diff = (codes_in.cpu() != codes_out.cpu()).double()
    return [100.0 * float(v) for v in diff.mean(dim=(0, 2))]


def changed_pct_where(codes_in: torch.Tensor, codes_out: torch.Tensor,
                      where: torch.Tensor) -> float:
    """``100 * mean(out != in)`` over positions where ``where`` is true (NaN if none)."""
    _check(codes_in, codes_out, "changed_pct_where")
    sel = where.cpu().bool()
    if not bool(sel.any()):
        return float("nan")
    return 100.0 * float((codes_in.cpu() != codes_out.cpu())[sel].double().mean())


def interval_ms(interval: float, hop_length: int, sample_rate: int) -> float:
    """Duration of ``interval`` token steps in milliseconds."""
    return interval * 1000.0 * hop_length / sample_rate


def prompt_bitrate_bps(mask: torch.Tensor, sample_rate: int, hop_length: int,
                       codebook_size: int) -> float:
    """Bits per second of audio that the prompt (the kept tokens) carries.

    Definition: ``kept / seconds × log2(codebook_size)``, where ``kept`` is the number of
    positions with mask 0 (keep) over **all** codebooks and steps of one batch item, and
    ``seconds = n_steps × hop_length / sample_rate`` the audio the mask spans. A mask of
    all zeros gives the codec's full bitrate (``n_codebooks × sample_rate / hop_length ×
    log2(codebook_size)``: 8040 bps for VampNet's codec); all ones gives 0.
    """
    item = mask[0] if mask.ndim == 3 else mask
    kept = int((item == 0).sum())
    seconds = item.shape[-1] * hop_length / sample_rate
    return kept / seconds * math.log2(codebook_size)


def token_metrics(codes_in: torch.Tensor, codes_out: torch.Tensor, mask: torch.Tensor,
                  upper_codebook_mask: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The standard metrics of a masked generation, and per-codebook series.

    Returns ``(metrics, series)``: ``metrics`` holds ``mask_density``,
    ``tokens_changed_pct``, ``masked_changed_pct``, ``kept_changed_pct`` and
    ``tokens_changed_pct_cb{k}``; ``series`` holds ``tokens_changed_pct_by_codebook``
    (index = codebook) for charting.
    """
    mask = mask.expand_as(codes_out) if mask.shape[0] == 1 else mask
    codes_in = codes_in.expand_as(codes_out) if codes_in.shape[0] == 1 else codes_in
    per_cb = tokens_changed_per_codebook(codes_in, codes_out)
    metrics = {
        "mask_density": mask_density(mask, upper_codebook_mask),
        "tokens_changed_pct": tokens_changed_pct(codes_in, codes_out),
        "masked_changed_pct": changed_pct_where(codes_in, codes_out, mask == 1),
        "kept_changed_pct": changed_pct_where(codes_in, codes_out, mask == 0),
    }
    metrics.update({f"tokens_changed_pct_cb{k}": v for k, v in enumerate(per_cb)})
    n_cb = codes_out.shape[1]
    series = {
        "tokens_changed_pct_by_codebook": per_cb,
        "masked_changed_pct_by_codebook": [
            changed_pct_where(codes_in[:, k], codes_out[:, k], mask[:, k] == 1) for k in range(n_cb)],
        "kept_changed_pct_by_codebook": [
            changed_pct_where(codes_in[:, k], codes_out[:, k], mask[:, k] == 0) for k in range(n_cb)],
    }
    return metrics, series
