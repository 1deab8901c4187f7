"""Mask semantics of VampNet's build_mask (shared/VAMPNET.md), checked by counting."""

import math

import pytest
import torch

from vampstudy.errors import ConfigError
from vampstudy.masks import build_mask, periodic_prompt_mask

SR, HOP = 44100, 768


def z(n_steps=575, batch=1):
    return torch.zeros(batch, 14, n_steps, dtype=torch.long)


@pytest.mark.parametrize("period", [2, 3, 7, 30])
def test_periodic_density_matches_one_minus_one_over_p(period):
    torch.manual_seed(0)
    mask = build_mask(z(), sample_rate=SR, hop_length=HOP, periodic_prompt=period,
                      upper_codebook_mask=3)
    kept_steps = int((mask[0, 0] == 0).sum())
    # every kept step is a multiple of P after the roll: ceil(T / P) or one fewer
    assert kept_steps in (math.ceil(575 / period), math.floor(575 / period))
    density = float(mask[:, :3].float().mean())
    assert abs(density - (1 - 1 / period)) < 1.5 / 575
    assert torch.all(mask[:, 3:] == 1)


def test_prompt_codebooks_share_the_same_kept_steps():
    torch.manual_seed(1)
    mask = build_mask(z(), sample_rate=SR, hop_length=HOP, periodic_prompt=5)
    assert torch.equal(mask[0, 0], mask[0, 1]) and torch.equal(mask[0, 0], mask[0, 2])
    kept = (mask[0, 0] == 0).nonzero().squeeze(1)
    assert set((kept[1:] - kept[:-1]).tolist()) == {5}


def test_roll_varies_with_the_seed():
    offsets = set()
    for seed in range(12):
        torch.manual_seed(seed)
        mask = build_mask(z(), sample_rate=SR, hop_length=HOP, periodic_prompt=13)
        offsets.add(int((mask[0, 0] == 0).nonzero()[0]))
    assert len(offsets) > 3
    assert all(0 <= o < 13 for o in offsets)


def test_same_seed_same_mask():
    torch.manual_seed(4)
    a = build_mask(z(), sample_rate=SR, hop_length=HOP, periodic_prompt=7)
    torch.manual_seed(4)
    b = build_mask(z(), sample_rate=SR, hop_length=HOP, periodic_prompt=7)
    assert torch.equal(a, b)


@pytest.mark.parametrize("upper", [1, 3, 8, 14])
def test_upper_codebook_mask(upper):
    mask = build_mask(z(), sample_rate=SR, hop_length=HOP, periodic_prompt=4,
                      upper_codebook_mask=upper)
    assert torch.all(mask[:, upper:] == 1)
    assert bool((mask[:, :upper] == 0).any())


def test_width_centres_prompts():
    m = periodic_prompt_mask(20, 10, width=3)
    assert (m == 0).nonzero().squeeze(1).tolist() == [0, 1, 9, 10, 11]


def test_prefix_suffix_keep_seconds_rounded_up():
    mask = build_mask(z(), sample_rate=SR, hop_length=HOP, periodic_prompt=0,
                      prefix_s=1.0, suffix_s=0.5, upper_codebook_mask=14)
    n_pre, n_suf = math.ceil(SR / HOP), math.ceil(0.5 * SR / HOP)
    assert torch.all(mask[..., :n_pre] == 0) and torch.all(mask[..., -n_suf:] == 0)
    assert torch.all(mask[..., n_pre:575 - n_suf] == 1)


def test_dropout_unmasks_whole_steps():
    torch.manual_seed(0)
    base = build_mask(z(), sample_rate=SR, hop_length=HOP, periodic_prompt=2, _dropout=0.0)
    torch.manual_seed(0)
    dropped = build_mask(z(), sample_rate=SR, hop_length=HOP, periodic_prompt=2, _dropout=0.3)
    assert dropped[:, :3].float().mean() > base[:, :3].float().mean() + 0.05
    assert torch.equal(dropped[0, 0], dropped[0, 2])  # whole steps, every codebook


def test_random_intensity_and_ncc():
    torch.manual_seed(0)
    mask = build_mask(z(), sample_rate=SR, hop_length=HOP, periodic_prompt=0,
                      rand_mask_intensity=0.5, upper_codebook_mask=14, ncc=2)
    assert torch.all(mask[:, :2] == 0)
    assert 0.4 < float(mask[:, 2:].float().mean()) < 0.6


def test_full_intensity_without_prompt_masks_everything():
    mask = build_mask(z(), sample_rate=SR, hop_length=HOP, periodic_prompt=0)
    assert torch.all(mask == 1)


def test_bad_options_raise():
    with pytest.raises(ConfigError):
        build_mask(z(), sample_rate=SR, hop_length=HOP, _dropout=1.5)
    with pytest.raises(ConfigError):
        build_mask(z(), sample_rate=SR, hop_length=HOP, periodic_prompt=-1)
