"""The reference backend: codec quality, generator contract, determinism."""

import math

import pytest
import torch
from audiotools import AudioSignal
from audiotools.metrics.spectral import MelSpectrogramLoss

from vampstudy.backends import load_backend
from vampstudy.errors import ConfigError


def test_timing_matches_vampnet(backend):
    assert (backend.sample_rate, backend.hop_length, backend.n_codebooks,
            backend.codebook_size) == (44100, 768, 14, 1024)
    assert math.isclose(backend.tokens_per_second, 57.421875)


def test_codes_shape_dtype_range(backend, music_signal, codes_3s):
    n = math.ceil(music_signal.signal_length / 768)
    assert codes_3s.shape == (1, 14, n) and codes_3s.dtype == torch.long
    assert 0 <= int(codes_3s.min()) and int(codes_3s.max()) < 1024


def test_decode_keeps_length_and_sounds_like_input(backend, music_signal, codes_3s):
    ref = backend.preprocess(music_signal)
    out = backend.decode(codes_3s)
    assert out.signal_length == ref.signal_length and out.sample_rate == 44100
    loss = MelSpectrogramLoss()
    by_k = [float(loss(AudioSignal(backend.codec.decode(codes_3s, k), 44100), ref))
            for k in (1, 2, 4, 8, 14)]
    assert all(a > b for a, b in zip(by_k, by_k[1:])), by_k   # more codebooks, closer
    # the input's own hop-sized frames in a shuffled order: same content, no structure
    frames = ref.audio_data.reshape(1, 1, -1, 768)
    perm = torch.randperm(frames.shape[2], generator=torch.Generator().manual_seed(0))
    shuffled = AudioSignal(frames[:, :, perm].reshape(1, 1, -1), 44100)
    assert float(loss(shuffled, ref)) >= 3 * by_k[-1], (float(loss(shuffled, ref)), by_k[-1])


def _periodic(backend, codes, p=7, seed=0):
    torch.manual_seed(seed)
    return backend.build_mask(codes, periodic_prompt=p, upper_codebook_mask=3)


def test_unmasked_tokens_are_returned_bit_for_bit(backend, codes_3s):
    mask = _periodic(backend, codes_3s)
    out = backend.vamp(codes_3s, mask, seed=0)
    assert torch.equal(out[mask == 0], codes_3s[mask == 0])
    assert out.shape == codes_3s.shape and out.dtype == torch.long


def test_all_zero_mask_returns_input(backend, codes_3s):
    out = backend.vamp(codes_3s, torch.zeros_like(codes_3s), seed=3)
    assert torch.equal(out, codes_3s)


def test_all_one_mask_changes_most_tokens(backend, codes_3s):
    out = backend.vamp(codes_3s, torch.ones_like(codes_3s), seed=0)
    assert float((out != codes_3s).float().mean()) > 0.8


def test_seed_determinism(backend, codes_3s):
    mask = _periodic(backend, codes_3s, p=5)
    a = backend.vamp(codes_3s, mask, seed=11)
    b = backend.vamp(codes_3s, mask, seed=11)
    c = backend.vamp(codes_3s, mask, seed=12)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def _entropy(tokens: torch.Tensor) -> float:
    """Mean over codebooks of the empirical entropy (nats) of the generated tokens."""
    total = 0.0
    for row in tokens[0]:
        _, counts = torch.unique(row, return_counts=True)
        p = counts.float() / counts.sum()
        total += float(-(p * p.log()).sum())
    return total / tokens.shape[1]


def test_low_temperature_lowers_entropy(backend, codes_3s):
    mask = torch.ones_like(codes_3s)
    hot = backend.vamp(codes_3s, mask, seed=0, temperature=1.0, typical_filtering=False)
    cold = backend.vamp(codes_3s, mask, seed=0, temperature=0.0, typical_filtering=False)
    assert _entropy(cold) < _entropy(hot)


def test_sampling_options_act(backend, codes_3s):
    mask = _periodic(backend, codes_3s, p=7)
    base = backend.vamp(codes_3s, mask, seed=0)
    for option in ({"typical_filtering": False}, {"top_p": 0.5}, {"_sampling_steps": 4},
                   {"temperature": 0.5}):
        assert not torch.equal(base, backend.vamp(codes_3s, mask, seed=0, **option)), option


def test_larger_intervals_change_more(backend, codes_3s):
    changed = []
    for p in (2, 13, 100):
        mask = _periodic(backend, codes_3s, p=p)
        out = backend.vamp(codes_3s, mask, seed=0)
        changed.append(float((out != codes_3s).float().mean()))
    assert changed[0] < changed[1] < changed[2]


def test_batch_expansion_and_return_mask(backend, codes_3s):
    mask = _periodic(backend, codes_3s)
    out, applied = backend.vamp(codes_3s, mask, batch_size=2, seed=0, return_mask=True)
    assert out.shape == (2, 14, codes_3s.shape[-1]) and applied.shape == out.shape
    with pytest.raises(ConfigError):
        backend.vamp(codes_3s, mask.expand(3, -1, -1), batch_size=2)


def test_unknown_option_is_refused(backend, codes_3s):
    with pytest.raises(TypeError, match="cfg_scal"):
        backend.vamp(codes_3s, torch.ones_like(codes_3s), cfg_scal=3.0)
    with pytest.raises(TypeError, match="periodic"):
        backend.build_mask(codes_3s, periodic=3)


def test_load_backend_by_name_and_option_check():
    b = load_backend("reference", device="cpu", context_width=2)
    assert b.name == "reference" and b.context_width == 2
    with pytest.raises(ConfigError, match="context_widht"):
        load_backend("reference", context_widht=2)
    with pytest.raises(ConfigError, match="unknown backend"):
        load_backend("nope")


# ------------------------------------------------------------------ sampling trace
def test_cosine_schedule_rules():
    from vampstudy.backends.trace import cosine_schedule

    assert cosine_schedule(100, 4) == [92, 70, 38, 0]
    assert cosine_schedule(3, 12) == [2, 1] + [1] * 9 + [0]          # VampNet keeps one back
    assert cosine_schedule(3, 12, keep_one=False) == [2, 1, 0]        # the reference stops early
    assert cosine_schedule(0, 12) == []


def test_trace_records_the_cosine_schedule_without_changing_output(backend, codes_3s):
    from vampstudy.backends.trace import cosine_schedule

    torch.manual_seed(4)
    masks = torch.cat([backend.build_mask(codes_3s, periodic_prompt=p) for p in (3, 13)])
    plain = backend.vamp(codes_3s, masks, batch_size=2, seed=5)
    with backend.trace_sampling() as trace:
        traced = backend.vamp(codes_3s, masks, batch_size=2, seed=5, _sampling_steps=8)
        again = backend.vamp(codes_3s, masks, batch_size=2, seed=5)
    assert torch.equal(plain, again)                       # tracing changes nothing
    assert not torch.equal(traced, again)
    assert [c.batch_size for c in trace.calls] == [2, 2]
    seg = trace.calls[0].segments[0]
    assert (seg.group, seg.start, seg.stop, seg.steps) == ("all", 0, codes_3s.shape[-1], 8)
    for i in range(2):
        n = int(masks[i].sum())
        assert seg.item(i) == [n] + cosine_schedule(n, 8, keep_one=False)
    backend.vamp(codes_3s, masks, batch_size=2, seed=5)
    assert len(trace.calls) == 2                           # nothing recorded after the block
    assert backend._trace is None


# ------------------------------------------------------------------ windows (linear cost)
def test_windows_are_equal_and_cover_the_clip(backend):
    assert backend.windows(575) == [(0, 575)]                 # 10 s: one window, as before
    spans = backend.windows(1200)
    assert spans == [(0, 400), (400, 800), (800, 1200)]
    assert load_backend("reference", device="cpu", window_s=1.0).windows(173) == [
        (0, 58), (58, 115), (115, 173)]
    with pytest.raises(ConfigError, match="window_s"):
        load_backend("reference", device="cpu", window_s=0)


def test_long_clips_are_sampled_window_by_window(codes_3s):
    """Each window is its own clip: its tokens come from its own frames, on its own schedule."""
    from vampstudy.backends.trace import cosine_schedule

    small = load_backend("reference", device="cpu", window_s=1.0)
    whole = load_backend("reference", device="cpu", window_s=60.0)
    torch.manual_seed(2)
    mask = small.build_mask(codes_3s, periodic_prompt=5)
    with small.trace_sampling() as trace:
        out = small.vamp(codes_3s, mask, seed=3)
    assert torch.equal(out[mask == 0], codes_3s[mask == 0])
    assert not torch.equal(out, whole.vamp(codes_3s, mask, seed=3))
    segments = trace.calls[0].segments
    assert [(s.start, s.stop) for s in segments] == small.windows(codes_3s.shape[-1])
    for seg in segments:
        n = int(mask[0, :, seg.start:seg.stop].sum())
        assert seg.item(0) == [n] + cosine_schedule(n, 12, keep_one=False)
        for c in range(14):
            own = set(codes_3s[0, c, seg.start:seg.stop].tolist())
            assert set(out[0, c, seg.start:seg.stop].tolist()) <= own


def test_long_clips_decode_in_cross_faded_blocks(backend, codes_3s):
    """Block-wise synthesis (bounded memory) sounds like whole-clip synthesis, same length."""
    blocked = load_backend("reference", device="cpu", window_s=1.0)
    whole = load_backend("reference", device="cpu", window_s=60.0)
    a, b = blocked.decode(codes_3s), whole.decode(codes_3s)
    assert torch.equal(b.audio_data, backend.decode(codes_3s).audio_data)   # ≤ one window: as before
    assert a.signal_length == b.signal_length == codes_3s.shape[-1] * 768
    assert not torch.equal(a.audio_data, b.audio_data)
    loss = MelSpectrogramLoss()
    assert float(loss(a, b)) < 0.25 * float(loss(AudioSignal(torch.zeros_like(b.audio_data) + 1e-4,
                                                             44100), b))


def test_random_tokens_decode_within_full_scale(backend, codes_3s):
    """The noise control's uniformly random tokens stay within full scale (bounded output stage)."""
    gen = torch.Generator().manual_seed(0)
    noise = torch.randint(0, backend.codebook_size, codes_3s.shape, generator=gen)
    raw = backend.codec.synthesize(backend.codec.dequantize(noise))
    assert raw.abs().max() > 1.0          # without the output stage the synthesis exceeds full scale
    out = backend.codec.decode(noise)
    assert out.abs().max() <= 1.0          # never beyond full scale (tanh saturates to 1.0 in float32)


def test_output_stage_is_identity_below_the_knee_and_bounded_above():
    from vampstudy.backends.refcodec import OUTPUT_KNEE, bounded_output

    x = torch.linspace(-50, 50, 20001)
    y = bounded_output(x)
    below = x.abs() <= OUTPUT_KNEE
    assert torch.equal(y[below], x[below])
    assert y.abs().max() <= 1.0
    assert torch.all(torch.diff(y) >= 0)                       # monotonic: no fold-over
    assert torch.allclose(torch.sign(y), torch.sign(x))
