"""The VampNet adapter against a test double of vampnet.interface.Interface (VAMPNET.md)."""

import numpy as np
import pytest
import torch
from audiotools import AudioSignal

from vampstudy.backends import MASK_OPTIONS, load_backend
from vampstudy.errors import BackendUnavailable


@pytest.fixture()
def adapter(vampnet_double):
    return load_backend("vampnet", device="cpu", coarse_ckpt="c.pth", c2f_ckpt="f.pth",
                        codec_ckpt="k.pth")


def test_local_checkpoints_reach_the_interface(vampnet_double, adapter):
    name, kwargs = vampnet_double.CALLS[0]
    assert name == "__init__"
    assert kwargs["coarse_ckpt"] == "c.pth" and kwargs["coarse2fine_ckpt"] == "f.pth"
    assert kwargs["codec_ckpt"] == "k.pth" and kwargs["compile"] is False
    assert ("to", {"device": "cpu"}) in vampnet_double.CALLS


def test_default_interface_without_checkpoints(vampnet_double):
    load_backend("vampnet", device="cpu")
    assert vampnet_double.CALLS[0] == ("default", {})


def test_timing_is_plain_python(adapter):
    assert type(adapter.hop_length) is int and adapter.hop_length == 768
    assert adapter.info()["tokens_per_second"] == pytest.approx(57.4219, abs=1e-3)
    assert adapter.is_vampnet and adapter.name == "vampnet"


def test_encode_returns_an_editable_tensor(adapter, music_signal):
    codes = adapter.encode(adapter.preprocess(music_signal))
    assert codes.dtype == torch.long and codes.shape[:2] == (1, 14)
    codes[0, 0, 0] = 5  # an inference tensor would raise here
    assert not codes.is_inference()


def test_every_mask_option_passes_through_unchanged(vampnet_double, adapter, codes_3s):
    options = dict(rand_mask_intensity=0.9, prefix_s=0.5, suffix_s=0.25, periodic_prompt=13,
                   periodic_prompt_width=2, onset_mask_width=0, _dropout=0.1,
                   upper_codebook_mask=5, ncc=1)
    assert set(options) == set(MASK_OPTIONS)
    adapter.build_mask(codes_3s, None, **options)
    name, seen = vampnet_double.CALLS[-1]
    assert name == "build_mask" and seen == options


def test_every_sampling_option_passes_through_unchanged(vampnet_double, adapter, codes_3s):
    options = dict(temperature=0.8, typical_filtering=False, typical_mass=0.2,
                   typical_min_tokens=32, top_p=0.9, _sampling_steps=24, mask_temperature=8.0,
                   sample_cutoff=0.7, seed=5, batch_size=1, feedback_steps=1,
                   time_stretch_factor=1)
    mask = torch.ones_like(codes_3s)
    out = adapter.vamp(codes_3s, mask, **options)
    name, seen = vampnet_double.CALLS[-1]
    assert name == "vamp"
    assert {k: seen[k] for k in options} == options
    assert out.shape == codes_3s.shape and out.dtype == torch.long


def test_return_mask_tuple_and_batch(adapter, codes_3s):
    mask = torch.ones_like(codes_3s)
    out, applied = adapter.vamp(codes_3s, mask, batch_size=2, return_mask=True, seed=0)
    assert out.shape[0] == 2 and applied.shape == out.shape


def test_unknown_option_is_refused_before_vampnet(vampnet_double, adapter, codes_3s):
    with pytest.raises(TypeError, match="temprature"):
        adapter.vamp(codes_3s, torch.ones_like(codes_3s), temprature=1.0)
    assert all(name != "vamp" for name, _ in vampnet_double.CALLS)


def test_decode_gives_an_audio_signal(adapter, codes_3s):
    sig = adapter.decode(codes_3s)
    assert isinstance(sig, AudioSignal) and sig.signal_length == codes_3s.shape[-1] * 768


def test_missing_vampnet_gives_install_hint(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_vampnet(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and (name == "vampnet" or name.startswith("vampnet.")):
            raise ModuleNotFoundError("No module named 'vampnet'", name="vampnet")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_vampnet)
    with pytest.raises(BackendUnavailable, match="pip install -e ./vampnet"):
        load_backend("vampnet", device="cpu")


def test_auto_without_vampnet_is_reference(caplog):
    import importlib.util

    assert importlib.util.find_spec("vampnet") is None
    with caplog.at_level("WARNING"):
        b = load_backend("auto", device="cpu")
    assert b.name == "reference"
    assert "not VampNet" in caplog.text


def test_auto_with_vampnet_is_vampnet(vampnet_double):
    assert load_backend("auto", device="cpu").name == "vampnet"


def test_hop_length_numpy_in_double(vampnet_double):
    assert isinstance(vampnet_double.Interface.default().codec.hop_length, np.int64)


def test_default_interface_failure_explains_the_fix(vampnet_double, monkeypatch):
    def missing(cls):
        raise FileNotFoundError("./models/vampnet/wavebeat.pth")

    monkeypatch.setattr(vampnet_double.Interface, "default", classmethod(missing))
    with pytest.raises(BackendUnavailable, match="wavebeat.pth.*--coarse-ckpt"):
        load_backend("vampnet", device="cpu")


# ------------------------------------------------------------------ sampling trace
def _expected_coarse_count(mask, start, stop):
    """Masked coarse positions of one chunk as VampNet's coarse_vamp applies the mask."""
    chunk = mask[:, :4, start:stop].clone()
    if bool((chunk == 0).any()):
        chunk[:, :, 0] = 0
        chunk[:, :, -1] = 0
    return [int(n) for n in chunk.flatten(1).sum(1)]


def test_trace_counts_mask_tokens_in_the_coarse_inputs(vampnet_double, adapter):
    codes = torch.randint(0, 1024, (1, 14, 700), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    mask = adapter.build_mask(codes, periodic_prompt=5, upper_codebook_mask=3)
    plain = adapter.vamp(codes, mask, seed=3)
    with adapter.trace_sampling() as trace:
        traced = adapter.vamp(codes, mask, seed=3, _sampling_steps=6)
        again = adapter.vamp(codes, mask, seed=3)
    assert torch.equal(plain, again)                       # observing changes nothing
    assert not torch.equal(plain, traced)
    call = trace.calls[0]
    coarse = [s for s in call.segments if s.group == "coarse"]
    fine = [s for s in call.segments if s.group == "fine"]
    assert [(s.start, s.stop, s.steps, len(s.masked)) for s in coarse] == [
        (0, 575, 6, 6), (575, 700, 6, 6)]                    # 10 s chunks of 575 steps
    assert [(s.start, s.steps, len(s.masked)) for s in fine] == [
        (0, 2, 2), (173, 2, 2), (346, 2, 2), (519, 2, 2), (692, 2, 2)]   # 3 s chunks, 2 steps
    for seg in coarse:
        assert seg.masked[0] == _expected_coarse_count(mask, seg.start, seg.stop)
        assert seg.final is None
        n = seg.masked[0][0]
        observed = [row[0] for row in seg.masked[1:]]
        documented = adapter.sampling_schedule(n, 6)[:-1]   # VampNet computes it in float32:
        assert max(abs(a - b) for a, b in zip(observed, documented)) <= 1   # ±1 token
    assert fine[0].masked[0] == [10 * 173]                  # codebooks 4-13 all masked
    assert call.options["_sampling_steps"] == 6 and call.batch_size == 1
    for model in (vampnet_double_model(adapter, "coarse"), vampnet_double_model(adapter, "c2f")):
        assert len(model.embedding._forward_pre_hooks) == 0   # hooks only during the call


def vampnet_double_model(adapter, name):
    return getattr(adapter.interface, name)


def test_trace_unavailable_without_the_mask_embedding(vampnet_double, adapter):
    from vampstudy.backends.trace import SamplingTraceUnavailable

    del adapter.interface.coarse.embedding
    with pytest.raises(SamplingTraceUnavailable, match="special\\['MASK'\\]"):
        with adapter.trace_sampling():
            pass
