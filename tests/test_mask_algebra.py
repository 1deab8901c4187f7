"""vampstudy.masks' algebra: against hand-built masks, against build_mask, against the VampNet double."""

import math

import pytest
import torch

from vampstudy.errors import ConfigError, MaskError
from vampstudy.masks import (build_mask, check_mask, dropout, generate_random, keep_both,
                             keep_codebooks, keep_either, keep_everything, keep_nothing,
                             keep_onsets, keep_periodic, keep_prefix, keep_suffix, onset_frames,
                             random_offset)

SR, HOP = 44100, 768


def z(n_steps=12, n_codebooks=4, batch=1):
    return torch.zeros(batch, n_codebooks, n_steps, dtype=torch.long)


def kept_steps(mask, codebook=0):
    return (mask[0, codebook] == 0).nonzero().squeeze(1).tolist()


def hand(n_steps, kept, n_codebooks=4):
    """A mask keeping the listed steps on every codebook, written out by hand."""
    row = [0 if j in kept else 1 for j in range(n_steps)]
    return torch.tensor([[row] * n_codebooks], dtype=torch.long)


# ------------------------------------------------------------ hand-built masks
def test_every_function_returns_a_long_mask_shaped_like_its_input():
    like = z(9, 5, batch=2)
    for mask in (keep_nothing(like), keep_everything(like), keep_periodic(like, 3),
                 keep_prefix(like, 2), keep_suffix(like, 2), keep_codebooks(like, 0, 2),
                 keep_onsets(like, [4], 1), generate_random(like, 0.5, seed=0),
                 dropout(keep_everything(like), 0.5, seed=0)):
        assert mask.shape == like.shape and mask.dtype == torch.long
        assert set(mask.unique().tolist()) <= {0, 1}
    assert torch.all(keep_nothing(like) == 1) and torch.all(keep_everything(like) == 0)


@pytest.mark.parametrize("period, width, offset, kept", [
    (3, 1, 0, [0, 3, 6, 9]),
    (5, 3, 0, [0, 1, 4, 5, 6, 9, 10, 11]),          # each widened to j-1 .. j+1, clipped at 0
    (5, 1, 2, [0, 2, 7]),                           # {0, 5, 10} rolled by 2, wrapping 10 -> 0
    (0, 1, 0, []),                                  # period 0 keeps nothing
])
def test_keep_periodic_by_hand(period, width, offset, kept):
    assert torch.equal(keep_periodic(z(), period, width, offset), hand(12, kept))


def test_prefix_suffix_and_codebooks_by_hand():
    assert torch.equal(keep_prefix(z(), 3), hand(12, [0, 1, 2]))
    assert torch.equal(keep_suffix(z(), 2), hand(12, [10, 11]))
    assert torch.equal(keep_suffix(z(), 40), hand(12, range(12)))    # longer than the clip
    assert torch.equal(keep_prefix(z(), 0), keep_nothing(z()))
    mask = keep_codebooks(z(5, 6), 1, 3)
    assert mask[0, :, 0].tolist() == [1, 0, 0, 1, 1, 1] and torch.all(mask == mask[..., :1])
    assert torch.equal(keep_codebooks(z(), 2, 2), keep_nothing(z()))
    with pytest.raises(ConfigError, match="stop must be >= start"):
        keep_codebooks(z(), 3, 1)


def test_keep_onsets_by_hand_clipped_at_the_start():
    # windows are onset - width .. onset + width - 1 (VampNet's slice), clipped at step 0
    assert torch.equal(keep_onsets(z(20), [1, 10], 2), hand(20, [0, 1, 2, 8, 9, 10, 11]))


def test_combinations_truth_table_and_inputs_untouched():
    a = torch.tensor([[[0, 0, 1, 1]]])
    b = torch.tensor([[[0, 1, 0, 1]]])
    assert keep_either(a, b).tolist() == [[[0, 0, 0, 1]]]      # kept where either keeps
    assert keep_both(a, b).tolist() == [[[0, 1, 1, 1]]]        # kept where both keep
    c = torch.tensor([[[1, 1, 1, 0]]])
    assert keep_either(a, b, c).tolist() == [[[0, 0, 0, 0]]]
    assert keep_both(a, b, c).tolist() == [[[1, 1, 1, 1]]]            # c keeps only step 3
    assert a.tolist() == [[[0, 0, 1, 1]]] and b.tolist() == [[[0, 1, 0, 1]]]
    with pytest.raises(ConfigError, match="one shape"):
        keep_either(a, z())


def test_the_guide_example_mask_by_hand():
    codes, period = z(8), 3
    mask = keep_either(keep_codebooks(codes, 0, 1),
                       keep_both(keep_periodic(codes, period), keep_codebooks(codes, 1, 3)))
    assert mask[0].tolist() == [[0, 0, 0, 0, 0, 0, 0, 0],
                                [0, 1, 1, 0, 1, 1, 0, 1],
                                [0, 1, 1, 0, 1, 1, 0, 1],
                                [1, 1, 1, 1, 1, 1, 1, 1]]


def test_random_functions_take_a_seed_and_leave_the_global_rng_alone():
    like = z(400, 4)
    state = torch.get_rng_state()
    a = generate_random(like, 0.3, seed=7)
    b = generate_random(like, 0.3, seed=torch.Generator().manual_seed(7))
    d = dropout(keep_everything(like), 0.1, seed=7)
    offset = random_offset(13, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, generate_random(like, 0.3, seed=8))
    assert abs(float(a.float().mean()) - 0.3) < 0.03                 # p = probability to generate
    assert offset == int(torch.randint(0, 13, (1,), generator=torch.Generator().manual_seed(7)))
    drawn = torch.randint(0, 400, (40,), generator=torch.Generator().manual_seed(7))
    assert kept_steps(d) == sorted(set(range(400)) - set(drawn.tolist()))
    assert torch.all(d == d[:, :1])                                    # whole steps
    assert torch.all(generate_random(like, 1.0) == 1) and torch.all(generate_random(like, 0.0) == 0)
    with pytest.raises(ConfigError, match="seed must be"):
        generate_random(like, 0.5, seed="7")


# ----------------------------------------------------- against build_mask
def _build(codes, **options):
    return build_mask(codes, sample_rate=SR, hop_length=HOP, **options)


@pytest.mark.parametrize("period, width, upper", [(3, 1, 3), (7, 3, 1), (13, 1, 14), (1, 1, 2)])
def test_periodic_and_codebooks_equal_build_mask(period, width, upper):
    codes = z(300, 14)
    torch.manual_seed(3)
    expected = _build(codes, periodic_prompt=period, periodic_prompt_width=width,
                      upper_codebook_mask=upper)
    torch.manual_seed(3)
    ours = keep_both(keep_periodic(codes, period, width, random_offset(period)),
                     keep_codebooks(codes, 0, upper))
    assert torch.equal(ours, expected)


def test_prefix_suffix_ncc_equal_build_mask():
    codes = z(300, 14)
    expected = _build(codes, periodic_prompt=0, prefix_s=0.5, suffix_s=1.0,
                      upper_codebook_mask=14, ncc=2)
    pre, suf = math.ceil(0.5 * SR / HOP), math.ceil(1.0 * SR / HOP)
    ours = keep_either(keep_prefix(codes, pre), keep_suffix(codes, suf), keep_codebooks(codes, 0, 2))
    assert torch.equal(ours, expected)


def test_random_and_dropout_equal_build_mask():
    codes = z(300, 14)
    torch.manual_seed(11)
    expected = _build(codes, rand_mask_intensity=0.6, periodic_prompt=5, _dropout=0.2,
                      upper_codebook_mask=4)
    torch.manual_seed(11)                 # seed=None draws from torch's global RNG, as VampNet
    mask = keep_either(generate_random(codes, 0.6), keep_periodic(codes, 5, 1, random_offset(5)))
    ours = keep_both(dropout(mask, 0.2), keep_codebooks(codes, 0, 4))
    assert torch.equal(ours, expected)


def test_onsets_equal_build_mask(backend, music_signal):
    signal = backend.preprocess(music_signal)
    codes = backend.encode(signal)
    expected = _build(codes, signal=signal, periodic_prompt=0, onset_mask_width=2,
                      upper_codebook_mask=14)
    ours = keep_onsets(codes, onset_frames(signal, HOP), 2)
    assert torch.equal(ours, expected) and bool((ours == 0).any())


# ------------------------------------------------- against the VampNet double
@pytest.fixture()
def interface(vampnet_double):
    return vampnet_double.Interface(coarse_ckpt="c.pth", codec_ckpt="k.pth",
                                    coarse2fine_ckpt="f.pth", wavebeat_ckpt=None, compile=False)


@pytest.mark.parametrize("period, upper", [(3, 3), (7, 1), (13, 14)])
def test_periodic_and_codebooks_equal_the_double(interface, period, upper):
    codes = torch.zeros(1, 14, 700, dtype=torch.long)
    for seed in range(4):
        torch.manual_seed(seed)
        theirs = interface.build_mask(codes, periodic_prompt=period, upper_codebook_mask=upper)
        torch.manual_seed(seed)
        ours = keep_both(keep_periodic(codes, period, offset=random_offset(period)),
                         keep_codebooks(codes, 0, upper))
        assert torch.equal(ours, theirs)


def test_random_means_the_same_as_the_double(interface):
    # the double draws with torch.rand < p (VampNet: bernoulli): equal in law, p = P(generate)
    codes = torch.zeros(1, 14, 2000, dtype=torch.long)
    theirs = interface.build_mask(codes, rand_mask_intensity=0.2, periodic_prompt=0,
                                  upper_codebook_mask=14)
    ours = generate_random(codes, 0.2, seed=0)
    assert abs(float(theirs.float().mean()) - 0.2) < 0.01
    assert abs(float(ours.float().mean()) - 0.2) < 0.01


# ----------------------------------------------------------------- check_mask
@pytest.mark.parametrize("bad, says", [
    (torch.ones(1, 4, 11, dtype=torch.long), "shape (1, 4, 11)"),
    (torch.full((1, 4, 12), 2, dtype=torch.long), "holding [2]"),
    (-torch.ones(1, 4, 12, dtype=torch.long), "holding [-1]"),
    (torch.ones(1, 4, 12), "dtype torch.float32"),
    (torch.ones(1, 4, 12, dtype=torch.bool), "dtype torch.bool"),
    (torch.ones(1, 4, 12, dtype=torch.long, device="meta"), "device meta"),
    ([[1, 0]], "a list, not a torch.Tensor"),
])
def test_check_mask_one_line_naming_what_came_and_what_was_expected(bad, says):
    with pytest.raises(MaskError) as err:
        check_mask(bad, z(), "MyStudy.mask()")
    text = str(err.value)
    assert "\n" not in text and text.startswith("MyStudy.mask() returned") and says in text
    assert "expected a torch.long tensor of 0 (keep) and 1 (generate) shaped like the codes " \
           "(1, 4, 12) on cpu" in text


def test_check_mask_passes_a_good_mask_through():
    good = keep_periodic(z(), 3)
    assert check_mask(good, z()) is good
