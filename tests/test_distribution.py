"""FAD and KAD (vampstudy.distribution) against independent computations."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from scipy import linalg
from scipy.spatial.distance import pdist

from vampstudy import distribution as dist


def _sets(seed=0, m=300, n=250, d=6, shift=0.5):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    x = rng.normal(size=(m, d)) @ a
    y = rng.normal(size=(n, d)) @ (a + 0.3 * rng.normal(size=(d, d))) + shift
    return x, y


def _fad_sqrtm(x, y):
    """The textbook formula with scipy.linalg.sqrtm (as FAD's reference code computes it)."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _mmd2_loops(x, y, sigma):
    k = lambda a, b: math.exp(-float(((a - b) ** 2).sum()) / (2 * sigma ** 2))  # noqa: E731
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_fad_matches_scipy_sqrtm():
    x, y = _sets()
    assert dist.fad(x, y) == pytest.approx(_fad_sqrtm(x, y), rel=1e-6)
    assert dist.fad(x, y) > 0.1


def test_fad_is_zero_for_one_set_and_grows_with_a_shift():
    x, _ = _sets()
    assert dist.fad(x, x) == pytest.approx(0.0, abs=1e-8)
    assert dist.fad(x, x + 1.0) == pytest.approx(x.shape[1] * 1.0, rel=1e-6)   # |Δμ|² = d


def test_mmd2_matches_a_naive_double_loop():
    x, y = _sets(seed=1, m=23, n=17, d=4)
    sigma = 1.7
    assert dist.mmd2_unbiased(x, y, sigma) == pytest.approx(_mmd2_loops(x, y, sigma), rel=1e-9)


def test_kernel_blocks_are_bounded_by_entries_not_rows(monkeypatch):
    """Issue 19: a condition with many seeds has many frames; each kernel block holds at
    most KERNEL_BLOCK_ENTRIES entries (before, 1024 rows × every column: 128 MB of
    temporaries at 20 seeds), and the block sums do not depend on the block size."""
    x, y = _sets(seed=4, m=37, n=29, d=3)
    gx, gy = np.arange(37) % 3, np.arange(29) % 3
    whole = dist.kernel_block_sums(x, gx, y, gy, 3, 1.3)
    direct = np.exp(-((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / (2 * 1.3 ** 2))
    expected = np.array([[direct[gx == g][:, gy == h].sum() for h in range(3)] for g in range(3)])
    np.testing.assert_allclose(whole, expected, rtol=1e-12)
    steps = []
    real = dist.kernel_rows_per_block
    monkeypatch.setattr(dist, "KERNEL_BLOCK_ENTRIES", 100)
    monkeypatch.setattr(dist, "kernel_rows_per_block", lambda n: steps.append((real(n), n)) or real(n))
    np.testing.assert_allclose(dist.kernel_block_sums(x, gx, y, gy, 3, 1.3), expected, rtol=1e-12)
    assert steps == [(3, 29)]                       # 3 rows × 29 columns <= 100 entries
    dist.kernel_block_sums(x, gx, np.tile(y, (5, 1)), np.tile(gy, 5), 3, 1.3)
    assert steps[-1] == (1, 145)                    # wider than the budget: one row at a time
    for n in (1, 99, 100, 101, 4000):
        rows = real(n)
        assert rows >= 1 and (rows * n <= 100 or rows == 1)


def test_kad_scale_and_median_bandwidth():
    x, y = _sets(seed=2, m=40, n=30, d=5)
    sigma = float(np.median(pdist(x)))
    assert dist.median_bandwidth(x) == pytest.approx(sigma, rel=1e-9)
    assert dist.kad(x, y) == pytest.approx(100 * _mmd2_loops(x, y, sigma), rel=1e-9)


def test_kad_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(3)
    x, x2 = rng.normal(size=(400, 4)), rng.normal(size=(400, 4))
    sigma = dist.median_bandwidth(x)
    same = dist.kad(x, x2, sigma)
    shifted = dist.kad(x, x2 + 1.0, sigma)
    assert abs(same) < 0.5 and shifted > 10 * abs(same) and shifted > 1.0


def _per_clip(seed=4, clips=5, seeds=2, frames=60, d=3):
    rng = np.random.default_rng(seed)
    ref = [rng.normal(size=(frames, d)) + c for c in range(clips)]
    out = [[rng.normal(size=(frames, d)) * 1.3 + c + 0.4 for _ in range(seeds)] for c in range(clips)]
    return ref, out


@pytest.mark.parametrize("metric", ["fad", "kad"])
def test_distribution_metric_equals_the_metric_on_all_frames(metric):
    ref, out = _per_clip()
    x = np.concatenate(ref)
    y = np.concatenate([a for outs in out for a in outs])
    r = dist.distribution_metric(metric, ref, out, n_boot=200)
    expected = dist.fad(x, y) if metric == "fad" else dist.kad(x, y, dist.median_bandwidth(x))
    assert r.value == pytest.approx(expected, rel=1e-9)
    assert (r.n_outputs, r.n_clips, r.n_frames, r.n_reference_frames) == (10, 5, 600, 300)
    assert r.ci_low <= r.value <= r.ci_high and r.ci95 > 0
    if metric == "kad":
        assert r.params["bandwidth"] == pytest.approx(dist.median_bandwidth(x))
        assert r.params["scale"] == 100.0


@pytest.mark.parametrize("metric", ["fad", "kad"])
def test_bootstrap_resample_equals_concatenating_the_resampled_clips(metric):
    """The sufficient-statistics shortcut gives what concatenating the chosen clips gives."""
    ref, out = _per_clip(seed=5, clips=4)
    r = dist.distribution_metric(metric, ref, out, n_boot=1, seed=11)
    weights = dist._resamples(4, 1, 11)[0]
    chosen = [c for c in range(4) for _ in range(int(weights[c]))]
    x = np.concatenate([ref[c] for c in chosen])
    y = np.concatenate([a for c in chosen for a in out[c]])
    if metric == "fad":
        expected = dist.fad(x, y)
    else:  # duplicated clips: duplicated frames are distinct samples of the unbiased sum
        expected = dist.kad(x, y, r.params["bandwidth"])
    assert r.ci_low == pytest.approx(expected, rel=1e-9)   # one resample: both ends are it


def test_small_n_warns_and_one_clip_has_no_interval():
    ref, out = _per_clip(clips=1, seeds=1, frames=20, d=3)
    r = dist.distribution_metric("fad", ref, out)
    assert r.ci_low is None and r.ci95 is None
    assert "fewer than 10 per dimension" in r.warning and "one clip" in r.warning
    ref, out = _per_clip(clips=3, frames=200, d=3)
    assert dist.distribution_metric("fad", ref, out).warning == ""


def test_clips_without_outputs_are_left_out_of_both_sides():
    ref, out = _per_clip(clips=3)
    out[1] = []
    r = dist.distribution_metric("fad", ref, out, n_boot=0)
    x = np.concatenate([ref[0], ref[2]])
    y = np.concatenate(out[0] + out[2])
    assert r.value == pytest.approx(dist.fad(x, y), rel=1e-9) and r.n_clips == 2


@pytest.mark.skipif(importlib.util.find_spec("kadtk") is None,
                    reason="kadtk not installed (pip install kadtk): the maintained KAD "
                           "implementation to compare with")
def test_kad_matches_kadtk():  # pragma: no cover - optional package
    import torch
    from kadtk.kad import calc_kernel_audio_distance

    x, y = _sets(seed=6, m=200, n=150, d=8)
    sigma = dist.median_bandwidth(x)
    theirs = calc_kernel_audio_distance(torch.tensor(x), torch.tensor(y), (None, None), "cpu",
                                        bandwidth=sigma, precision=torch.float64, eps=0.0)
    assert dist.kad(x, y, sigma) == pytest.approx(float(theirs), rel=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("fadtk") is None,
                    reason="fadtk not installed (pip install fadtk): the maintained FAD "
                           "implementation to compare with")
def test_fad_matches_fadtk():  # pragma: no cover - optional package
    from fadtk.fad import calc_frechet_distance

    x, y = _sets(seed=7)
    theirs = calc_frechet_distance(x.mean(0), np.cov(x, rowvar=False),
                                   y.mean(0), np.cov(y, rowvar=False))
    assert dist.fad(x, y) == pytest.approx(float(theirs), rel=1e-5)
