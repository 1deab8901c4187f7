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
