"""Each metric against an independent computation (loops, not the vectorised code)."""

import math

import torch

from vampstudy.metrics import (changed_pct_where, interval_ms, mask_density, token_metrics,
                               tokens_changed_pct)


def _rand(shape, seed):
    return torch.randint(0, 4, shape, generator=torch.Generator().manual_seed(seed))


def test_tokens_changed_pct_counts_every_position():
    a, b = _rand((1, 5, 40), 0), _rand((1, 5, 40), 1)
    count = sum(int(a[0, c, t] != b[0, c, t]) for c in range(5) for t in range(40))
    assert math.isclose(tokens_changed_pct(a, b), 100 * count / 200)
    assert tokens_changed_pct(a, a) == 0.0


def test_mask_density_is_mean_over_prompt_codebooks_only():
    mask = torch.ones(1, 6, 10, dtype=torch.long)
    mask[0, 0, :4] = 0
    mask[0, 5, :] = 0  # above upper: ignored
    assert math.isclose(mask_density(mask, 2), (20 - 4) / 20)


def test_masked_and_kept_change():
    a = torch.zeros(1, 2, 4, dtype=torch.long)
    b = torch.tensor([[[1, 0, 1, 0], [0, 0, 0, 1]]])
    mask = torch.tensor([[[1, 1, 0, 0], [1, 1, 1, 1]]])
    # masked positions: (0,0)=chg,(0,1)=same,(1,0..3)=same,same,same,chg -> 2/6
    assert math.isclose(changed_pct_where(a, b, mask == 1), 100 * 2 / 6)
    # kept: (0,2)=chg,(0,3)=same -> 1/2
    assert math.isclose(changed_pct_where(a, b, mask == 0), 50.0)
    metrics, series = token_metrics(a, b, mask, upper_codebook_mask=1)
    assert series["tokens_changed_pct_by_codebook"] == [50.0, 25.0]
    assert metrics["tokens_changed_pct_cb1"] == 25.0
    assert math.isclose(metrics["mask_density"], 0.5)


def test_interval_ms():
    assert math.isclose(interval_ms(7, 768, 44100), 7 * 768 / 44.1)
