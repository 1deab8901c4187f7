"""Distribution-level metrics of frame embeddings: FAD and KAD, with bootstrap CIs over clips.

Both compare two sets of frame embeddings: the **reference** set ``X`` (frames of the
original clips) and the **evaluation** set ``Y`` (frames of every output of one condition,
all clips and seeds). Each frame is a row vector of dimension ``d``.

FAD — Fréchet Audio Distance (Kilgour et al. 2019)
    Fit a Gaussian to each set (mean ``mu``, covariance ``S`` with ``ddof = 1``) and take
    their Fréchet (2-Wasserstein) distance::

        FAD = |mu_x - mu_y|^2 + tr(S_x + S_y - 2 (S_x^1/2 S_y S_x^1/2)^1/2)

    (the trace term equals ``tr(S_x + S_y - 2 (S_x S_y)^1/2)``). Computed here with
    symmetric eigendecompositions, which stay real and finite for rank-deficient
    covariances. FAD is biased when the number of frames is small next to ``d``
    (:data:`FAD_MIN_FRAMES_PER_DIM`): :func:`distribution_metric` then adds a warning.

KAD — Kernel Audio Distance (Chung et al. 2025)
    The unbiased estimate of the squared maximum mean discrepancy with a Gaussian RBF
    kernel ``k(a, b) = exp(-|a - b|^2 / (2 sigma^2))``, times a scale factor::

        KAD = s * [ 1/(m(m-1)) sum_{i != j} k(x_i, x_j) + 1/(n(n-1)) sum_{i != j} k(y_i, y_j)
                    - 2/(mn) sum_{i, j} k(x_i, y_j) ]

    with ``m`` reference and ``n`` evaluation frames. The bandwidth ``sigma`` is the median
    pairwise Euclidean distance of the reference frames (:func:`median_bandwidth`, the
    median heuristic), so that every condition of a study is measured with the same kernel;
    ``s`` = :data:`KAD_SCALE` (100, as the KAD authors' toolkit uses). Being unbiased, KAD
    can be slightly negative when the two sets come from one distribution.

Confidence intervals
    :func:`distribution_metric` resamples **clips** with replacement (``n_boot`` times,
    fixed seed): a resample takes every frame of the chosen clips on both sides (the
    originals' and the outputs' frames of the same clips), and the 95 % interval is the
    2.5 and 97.5 percentiles of the metric over the resamples (the kernel bandwidth stays
    that of the full reference set). With a single clip there is no interval.
    Both metrics are computed from per-clip sufficient statistics (frame sums, outer
    products, kernel block sums), so a resample costs O(clips^2), not O(frames^2).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: Below this many frames per embedding dimension FAD is flagged as unreliable.
FAD_MIN_FRAMES_PER_DIM = 10
#: KAD's scale factor (the KAD authors' toolkit multiplies MMD² by 100).
KAD_SCALE = 100.0
#: Frames the median heuristic looks at, at most (a fixed-seed subsample).
BANDWIDTH_MAX_FRAMES = 2000
#: Bootstrap resamples of clips for the 95 % intervals.
N_BOOT = 500
#: Kernel entries computed at once (bounds the memory of :func:`kernel_block_sums`: a few
#: float64 temporaries of this many entries, 8 MiB each, however many frames a row has).
KERNEL_BLOCK_ENTRIES = 1 << 20


# ------------------------------------------------------------------ FAD
def gaussian_fit(frames) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and covariance ``(d, d)`` (``ddof = 1``) of frames ``(n, d)``, n >= 2."""
    x = np.asarray(frames, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need frames of shape (n >= 2, d), got {x.shape}")
    return x.mean(0), np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix (negative eigenvalues → 0)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu_x, cov_x, mu_y, cov_y) -> float:
    """Fréchet distance of two Gaussians (the FAD formula in the module docstring)."""
    root_x = _psd_sqrt(np.asarray(cov_x, dtype=np.float64))
    middle = root_x @ np.asarray(cov_y, dtype=np.float64) @ root_x
    w = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(w, 0, None)).sum())
    diff = np.asarray(mu_x, dtype=np.float64) - np.asarray(mu_y, dtype=np.float64)
    return float(diff @ diff + np.trace(cov_x) + np.trace(cov_y) - 2.0 * trace_sqrt)


def fad(reference, evaluation) -> float:
    """FAD between frame sets ``(m, d)`` and ``(n, d)``."""
    return frechet_distance(*gaussian_fit(reference), *gaussian_fit(evaluation))


# ------------------------------------------------------------------ KAD
def median_bandwidth(frames, max_frames: int = BANDWIDTH_MAX_FRAMES, seed: int = 0) -> float:
    """Median pairwise Euclidean distance of (at most ``max_frames``, fixed-seed) frames."""
    x = np.asarray(frames, dtype=np.float64)
    if len(x) > max_frames:
        x = x[np.random.default_rng(seed).choice(len(x), max_frames, replace=False)]
    sq = (x * x).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * x @ x.T
    iu = np.triu_indices(len(x), k=1)
    distance = float(np.median(np.sqrt(np.clip(d2[iu], 0, None))))
    if not distance > 0:
        raise ValueError("the reference frames are all identical: no kernel bandwidth; "
                         "check that the original clips are not silent")
    return distance


def kernel_block_sums(a, a_groups, b, b_groups, n_groups: int, bandwidth: float) -> np.ndarray:
    """``S[g, h]`` = sum of ``k(a_i, b_j)`` over rows ``i`` of group ``g`` and ``j`` of group ``h``.

    Groups are integers in ``[0, n_groups)``; the kernel is the Gaussian RBF of the module
    docstring. Computed in blocks of :func:`kernel_rows_per_block` rows of ``a``, so that
    each block holds at most :data:`KERNEL_BLOCK_ENTRIES` kernel entries: the memory does
    not grow with the frames of a condition (seeds × clips).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    a_groups, b_groups = np.asarray(a_groups), np.asarray(b_groups)
    gamma = 1.0 / (2.0 * bandwidth ** 2)
    b_sq = (b * b).sum(1)
    b_onehot = np.zeros((len(b), n_groups))
    b_onehot[np.arange(len(b)), b_groups] = 1.0
    out = np.zeros((n_groups, n_groups))
    step = kernel_rows_per_block(len(b))
    for start in range(0, len(a), step):
        rows = a[start:start + step]
        d2 = (rows * rows).sum(1)[:, None] + b_sq[None, :] - 2.0 * rows @ b.T
        by_col = np.exp(-gamma * np.clip(d2, 0, None)) @ b_onehot          # (rows, groups)
        np.add.at(out, a_groups[start:start + len(rows)], by_col)
    return out


def kernel_rows_per_block(n_columns: int) -> int:
    """Rows of a kernel block of ``n_columns`` columns within :data:`KERNEL_BLOCK_ENTRIES`
    entries (at least one row)."""
    return max(1, KERNEL_BLOCK_ENTRIES // max(1, n_columns))


def mmd2_unbiased(x, y, bandwidth: float) -> float:
    """Unbiased MMD² of frame sets ``x`` and ``y`` with the Gaussian RBF kernel (no scale)."""
    m, n = len(x), len(y)
    kxx = kernel_block_sums(x, np.zeros(m, int), x, np.zeros(m, int), 1, bandwidth)[0, 0]
    kyy = kernel_block_sums(y, np.zeros(n, int), y, np.zeros(n, int), 1, bandwidth)[0, 0]
    kxy = kernel_block_sums(x, np.zeros(m, int), y, np.zeros(n, int), 1, bandwidth)[0, 0]
    return float((kxx - m) / (m * (m - 1)) + (kyy - n) / (n * (n - 1)) - 2.0 * kxy / (m * n))


def kad(reference, evaluation, bandwidth: float | None = None, scale: float = KAD_SCALE) -> float:
    """KAD between frame sets; ``bandwidth`` from the reference (median heuristic) if not given."""
    if bandwidth is None:
        bandwidth = median_bandwidth(reference)
    return scale * mmd2_unbiased(reference, evaluation, bandwidth)


# ------------------------------------------------------- per condition
@dataclass
class DistributionResult:
    """One distribution metric of one set of outputs against the originals.

    Attributes
    ----------
    value : float
        The metric on every frame.
    ci_low, ci_high : float or None
        95 % bootstrap interval over clips (None with one clip).
    n_outputs, n_clips, n_frames, n_reference_frames : int
        Outputs (clips × seeds), distinct clips, evaluation and reference frames.
    params : dict
        What the value depends on (bandwidth, scale, bootstrap settings).
    warning : str
        Empty, or why the value should be read with care.
    """

    value: float
    ci_low: float | None
    ci_high: float | None
    n_outputs: int
    n_clips: int
    n_frames: int
    n_reference_frames: int
    params: dict = field(default_factory=dict)
    warning: str = ""

    @property
    def ci95(self) -> float | None:
        """Half the width of the 95 % interval (as the summary's other ``_ci95`` columns)."""
        return None if self.ci_low is None else (self.ci_high - self.ci_low) / 2.0


@dataclass
class _Grouped:
    """Frames stacked with a clip index per row."""

    frames: np.ndarray
    groups: np.ndarray
    counts: np.ndarray


def _grouped(by_clip: Sequence[Sequence[np.ndarray]]) -> _Grouped:
    parts, groups = [], []
    for g, arrays in enumerate(by_clip):
        for a in arrays:
            a = np.asarray(a, dtype=np.float64)
            parts.append(a)
            groups.append(np.full(len(a), g))
    frames = np.concatenate(parts) if parts else np.zeros((0, 0))
    groups = np.concatenate(groups) if groups else np.zeros(0, int)
    return _Grouped(frames, groups, np.bincount(groups, minlength=len(by_clip)))


def _one_blas_thread():
    """Limit BLAS/LAPACK to one thread (threadpoolctl): a 64 × 64 eigendecomposition took
    34 ms with OpenBLAS' default threads on a busy 2-core machine, 1.5 ms with one."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency; only slower without it
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _resamples(n_clips: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n_clips)`` multiplicities of each clip in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_clips, size=(n_boot, n_clips))
    return np.stack([np.bincount(d, minlength=n_clips) for d in draws]).astype(np.float64)


def _fad_stats(g: _Grouped, n_clips: int):
    d = g.frames.shape[1]
    sums = np.zeros((n_clips, d))
    outer = np.zeros((n_clips, d, d))
    np.add.at(sums, g.groups, g.frames)
    for c in range(n_clips):
        rows = g.frames[g.groups == c]
        outer[c] = rows.T @ rows
    return sums, outer


def _fad_from_stats(w, stats_x, counts_x, stats_y, counts_y) -> float:
    fits = []
    for (sums, outer), counts in ((stats_x, counts_x), (stats_y, counts_y)):
        n = float(w @ counts)
        if n < 2:
            return float("nan")
        mu = (w @ sums) / n
        cov = (np.tensordot(w, outer, 1) - n * np.outer(mu, mu)) / (n - 1)
        fits.append((mu, cov))
    return frechet_distance(*fits[0], *fits[1])


def _kad_from_sums(w, kxx, kyy, kxy, cx, cy, scale) -> float:
    m, n = float(w @ cx), float(w @ cy)
    if m < 2 or n < 2:
        return float("nan")
    sxx = w @ kxx @ w - w @ cx        # minus the diagonal k(x, x) = 1 of every frame
    syy = w @ kyy @ w - w @ cy
    return scale * float(sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2.0 * (w @ kxy @ w) / (m * n))


def distribution_metric(metric: str, reference: Sequence[np.ndarray],
                        outputs: Sequence[Sequence[np.ndarray]], *, bandwidth: float | None = None,
                        scale: float = KAD_SCALE, n_boot: int = N_BOOT,
                        seed: int = 0) -> DistributionResult:
    """FAD or KAD of ``outputs`` against ``reference``, with a bootstrap CI over clips.

    Parameters
    ----------
    metric : {"fad", "kad"}
    reference : sequence of arrays
        Per clip, the original's frames ``(n_c, d)``.
    outputs : sequence of sequences of arrays
        Per clip (same order), the frames of each of its outputs (one per seed); a clip
        with no outputs is left out of both sides.
    bandwidth : float, optional
        KAD's kernel bandwidth; the median heuristic on ``reference`` when not given.
    scale : float
        KAD's scale factor.
    n_boot, seed : int
        Bootstrap resamples and their seed.

    Returns
    -------
    DistributionResult
    """
    if metric not in ("fad", "kad"):
        raise ValueError(f"unknown distribution metric {metric!r}; use 'fad' or 'kad'")
    keep = [i for i, outs in enumerate(outputs) if len(outs)]
    if not keep:
        raise ValueError("no outputs to compare with the reference")
    x = _grouped([[reference[i]] for i in keep])
    y = _grouped([outputs[i] for i in keep])
    k = len(keep)
    ones = np.ones(k)
    params: dict = {"n_boot": n_boot, "bootstrap_seed": seed}
    if metric == "fad":
        sx, sy = _fad_stats(x, k), _fad_stats(y, k)
        value_of = lambda w: _fad_from_stats(w, sx, x.counts, sy, y.counts)  # noqa: E731
    else:
        if bandwidth is None:
            bandwidth = median_bandwidth(x.frames)
        params.update(bandwidth=bandwidth, scale=scale, kernel="gaussian")
        kxx = kernel_block_sums(x.frames, x.groups, x.frames, x.groups, k, bandwidth)
        kyy = kernel_block_sums(y.frames, y.groups, y.frames, y.groups, k, bandwidth)
        kxy = kernel_block_sums(x.frames, x.groups, y.frames, y.groups, k, bandwidth)
        value_of = lambda w: _kad_from_sums(w, kxx, kyy, kxy, x.counts, y.counts, scale)  # noqa: E731
    value = value_of(ones)
    low = high = None
    if k > 1 and n_boot > 0:
        with _one_blas_thread():   # many small eigendecompositions: threads only contend
            boots = np.array([value_of(w) for w in _resamples(k, n_boot, seed)])
        boots = boots[np.isfinite(boots)]
        if len(boots):
            low, high = (float(v) for v in np.percentile(boots, [2.5, 97.5]))
    warning = _warning(metric, k, len(y.frames), len(x.frames), x.frames.shape[1])
    return DistributionResult(value, low, high, sum(len(outputs[i]) for i in keep), k,
                              len(y.frames), len(x.frames), params, warning)


def _warning(metric: str, n_clips: int, n_frames: int, n_ref: int, dim: int) -> str:
    notes = []
    if metric == "fad" and min(n_frames, n_ref) < FAD_MIN_FRAMES_PER_DIM * dim:
        notes.append(f"FAD from {min(n_frames, n_ref)} frames of dimension {dim} (fewer than "
                     f"{FAD_MIN_FRAMES_PER_DIM} per dimension) is biased and noisy; "
                     "prefer KAD, or add clips and seeds")
    if n_clips < 2:
        notes.append("one clip: no confidence interval (pass several clips)")
    return "; ".join(notes)
