"""Frame embeddings of audio, for the distribution metrics (:mod:`vampstudy.distribution`).

An embedding turns one signal into frames ``(n_frames, dim)``. Chosen with
``vampstudy run ... --embedding NAME`` (repeatable; ``mel`` by default):

``mel`` (built in, training-free)
    Log-mel frames: the power mel spectrogram (:func:`vampstudy.spectral.mel_spectrogram`,
    :data:`MEL_BANDS` Slaney mel bands from 0 Hz to 22.05 kHz, window :data:`MEL_N_FFT`,
    hop :data:`MEL_HOP`, zero-padded centred STFT) of the mono signal resampled to
    :data:`MEL_SAMPLE_RATE`, in dB: ``10 log10(max(P, 1e-8))``. The same for every backend,
    so backends can be compared.
``codec``
    The backend codec's continuous latents (:meth:`vampstudy.backends.base.Backend.codec_latents`):
    for the reference backend the mel cepstra its encoder quantises, for VampNet the latent
    ``z`` of its LAC codec (as fadtk's DAC embedding). Comparable within one backend only.
``vggish``, ``clap`` (optional extras)
    VGGish (``pip install torchvggish``; fetches its weights on first use) and LAION CLAP
    (``pip install laion-clap``; fetches its checkpoint on first use). Where the package or
    the weights are missing, :func:`resolve_embeddings` says in one line what to install
    and the study runs with the other embeddings.
``package.module:function``
    Your own: ``function(signal, backend) -> array (n_frames, dim)``, ``signal`` an
    ``audiotools.AudioSignal``.

Memory is bounded: each output keeps at most :data:`MAX_FRAMES` frames, a subsample with
a fixed seed (:func:`subsample`), so a trial adds at most ``MAX_FRAMES × dim`` float32
values whatever its length.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import ConfigError, VampstudyError

logger = logging.getLogger(__name__)

#: Frames kept per output (a fixed-seed subsample when there are more).
MAX_FRAMES = 200
#: Seed of the frame subsample.
FRAME_SEED = 0
MEL_SAMPLE_RATE = 44100
MEL_N_FFT = 2048
MEL_HOP = 1024
MEL_BANDS = 64
MEL_FLOOR = 1e-8
#: The embedding of a study that names none.
DEFAULT_EMBEDDINGS = ("mel",)


class EmbeddingUnavailable(VampstudyError):
    """An embedding's package or weights are missing here; the message says what to install."""


@dataclass
class Embedding:
    """A named way to turn a signal into frames ``(n_frames, dim)``."""

    name: str
    compute: Callable
    params: dict = field(default_factory=dict)

    def frames(self, signal, backend, max_frames: int = MAX_FRAMES) -> np.ndarray:
        """The frames of ``signal`` (float32, at most ``max_frames``, :func:`subsample`)."""
        frames = np.asarray(self.compute(signal, backend), dtype=np.float32)
        if frames.ndim != 2 or not len(frames):
            raise ValueError(f"embedding {self.name!r} returned shape {frames.shape}; "
                             "it must return frames of shape (n_frames, dim), n_frames >= 1")
        return subsample(frames, max_frames)


def subsample(frames: np.ndarray, max_frames: int = MAX_FRAMES, seed: int = FRAME_SEED) -> np.ndarray:
    """At most ``max_frames`` rows of ``frames``, chosen with a fixed seed, in time order."""
    if len(frames) <= max_frames:
        return frames
    keep = np.sort(np.random.default_rng(seed).choice(len(frames), max_frames, replace=False))
    return frames[keep]


def _mono(signal, sample_rate: int | None = None) -> np.ndarray:
    sig = signal
    if sample_rate is not None and int(signal.sample_rate) != sample_rate:
        sig = signal.clone().resample(sample_rate)
    return sig.audio_data[0].mean(0).detach().cpu().numpy().astype(np.float32)


def mel_frames(signal, backend=None) -> np.ndarray:
    """The ``mel`` embedding of ``signal`` (see the module docstring): ``(frames, MEL_BANDS)``."""
    from .spectral import mel_spectrogram

    mel = mel_spectrogram(_mono(signal, MEL_SAMPLE_RATE), MEL_SAMPLE_RATE, MEL_N_FFT, MEL_HOP,
                          MEL_BANDS, power=2.0)
    return (10.0 * np.log10(np.maximum(mel.numpy(), MEL_FLOOR))).T


def codec_frames(signal, backend) -> np.ndarray:
    """The ``codec`` embedding: the backend's continuous codec latents ``(steps, dim)``."""
    latents = backend.codec_latents(signal)
    return latents.detach().float().cpu().numpy().reshape(-1, latents.shape[-1]).T


def _vggish():
    try:
        from torchvggish import vggish, vggish_input
    except ImportError as exc:
        raise EmbeddingUnavailable("embedding 'vggish' needs torchvggish: pip install torchvggish "
                                   "(it fetches its weights on first use)") from exc
    try:
        model = vggish()
    except Exception as exc:
        raise EmbeddingUnavailable(f"embedding 'vggish': could not load its weights "
                                   f"({type(exc).__name__}: {str(exc)[:120]}); they download on "
                                   "first use, so run once with network access") from exc
    model.eval()

    def compute(signal, backend=None):
        import torch

        examples = vggish_input.waveform_to_examples(_mono(signal, 16000), 16000)
        with torch.no_grad():
            return model(examples).reshape(len(examples), -1).cpu().numpy()
    return compute


CLAP_WINDOW_S = 5.0


def _clap():
    try:
        import laion_clap
    except ImportError as exc:
        raise EmbeddingUnavailable("embedding 'clap' needs LAION CLAP: pip install laion-clap "
                                   "(it fetches its checkpoint on first use)") from exc
    try:
        model = laion_clap.CLAP_Module(enable_fusion=False)
        model.load_ckpt()
    except Exception as exc:
        raise EmbeddingUnavailable(f"embedding 'clap': could not load its checkpoint "
                                   f"({type(exc).__name__}: {str(exc)[:120]}); it downloads on "
                                   "first use, so run once with network access") from exc

    def compute(signal, backend=None):
        audio = _mono(signal, 48000)
        n = int(CLAP_WINDOW_S * 48000)
        windows = [audio[i:i + n] for i in range(0, max(1, len(audio) - n // 2), n)]
        batch = np.stack([np.pad(w, (0, n - len(w))) for w in windows])
        return model.get_audio_embedding_from_data(x=batch, use_tensor=False)
    return compute


def _user_function(spec: str) -> Callable:
    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--embedding {spec}: cannot import {attr!r} from {module_name!r} "
                          f"({type(exc).__name__}: {exc}); give package.module:function, "
                          "importable here", option="--embedding") from exc
    if not callable(fn):
        raise ConfigError(f"--embedding {spec}: {attr} is not a function", option="--embedding")
    return fn


BUILTIN = ("mel", "codec", "vggish", "clap")
_LOADED: dict[str, Embedding] = {}


def get_embedding(name: str) -> Embedding:
    """The embedding called ``name`` (built in or ``module:function``), loaded once per process.

    Raises
    ------
    ConfigError
        Unknown name.
    EmbeddingUnavailable
        Its optional package or weights are missing (one line naming what to install).
    """
    if name in _LOADED:
        return _LOADED[name]
    if name == "mel":
        emb = Embedding("mel", mel_frames, {"sample_rate": MEL_SAMPLE_RATE, "n_fft": MEL_N_FFT,
                                            "hop": MEL_HOP, "n_mels": MEL_BANDS, "scale": "dB"})
    elif name == "codec":
        emb = Embedding("codec", codec_frames)
    elif name == "vggish":
        emb = Embedding("vggish", _vggish(), {"package": "torchvggish"})
    elif name == "clap":
        emb = Embedding("clap", _clap(), {"package": "laion-clap", "window_s": CLAP_WINDOW_S})
    elif ":" in name:
        emb = Embedding(name, _user_function(name), {"function": name})
    else:
        raise ConfigError(f"unknown embedding {name!r}; choose from {', '.join(BUILTIN)} or "
                          "give package.module:function", option="--embedding")
    _LOADED[name] = emb
    return emb


def resolve_embeddings(names, backend=None) -> tuple[list[str], list[str]]:
    """Split ``names`` into the usable ones and one-line reasons for the others.

    ``codec`` is unusable on a backend without :meth:`codec_latents`; optional embeddings
    whose package or weights are missing say what to install. Unknown names raise
    ``ConfigError`` (a typo should stop the study, a missing extra should not).
    """
    usable, notes = [], []
    for name in dict.fromkeys(names):
        try:
            get_embedding(name)
            if name == "codec" and backend is not None and not backend.has_codec_latents():
                raise EmbeddingUnavailable(f"embedding 'codec': the {backend.name} backend does "
                                           "not expose its codec's latents")
        except EmbeddingUnavailable as exc:
            notes.append(f"{exc}; running without it")
            continue
        usable.append(name)
    return usable, notes


def array_name(embedding: str) -> str:
    """The key of an embedding's frames in a trial's ``arrays.npz``."""
    return f"embedding_{embedding.replace(':', '.')}"
