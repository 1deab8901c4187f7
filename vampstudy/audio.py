"""Audio inputs: loading, checking, identifying, and the built-in demo clip.

Everything here returns :class:`audiotools.AudioSignal`. Loading and checks
raise :class:`~vampstudy.errors.AudioError` with a message that names the file
and the fix. Preprocessing for a model (resampling, loudness) belongs to the
backend (``Backend.preprocess``), as it does in VampNet.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from audiotools import AudioSignal

from .errors import AudioError

logger = logging.getLogger(__name__)

DEMO_NAME = "builtin:demo"
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".aiff", ".aif", ".m4a")
#: Loudness (LUFS) at or below which a clip is refused as silent or near-silent.
#: audiotools reports -70 LUFS for digital silence; normalising a clip this
#: quiet to -24 LUFS would amplify its noise floor by more than 36 dB.
MIN_LOUDNESS_LUFS = -60.0
#: Longest input accepted by default (``vampstudy run --max-seconds``). Decoding holds the
#: whole clip as float32 several times over (original, preprocessed, every output), so a
#: 10-minute stereo clip at 44.1 kHz already needs a few GB; longer files are refused up front.
DEFAULT_MAX_SECONDS = 600.0


@dataclass(frozen=True)
class ClipInfo:
    """What the file header says about an input (read without decoding the samples)."""

    path: str
    duration_s: float
    sample_rate: int
    channels: int
    frames: int


@dataclass(frozen=True)
class Clip:
    """One input clip, as loaded (not yet preprocessed).

    Attributes
    ----------
    name : str
        Short label used in run names and tables (file stem, or ``demo``).
    path : str
        Where it came from: a file path, or ``builtin:demo``.
    sha256 : str
        Hash of the file bytes (of the synthesised samples for the demo).
    signal : AudioSignal
        The audio as read, before any model preprocessing.
    """

    name: str
    path: str
    sha256: str
    signal: AudioSignal

    @property
    def duration_s(self) -> float:
        return float(self.signal.signal_duration)

    def identity(self) -> dict:
        """Params that identify the clip in MLflow."""
        return {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "duration_s": round(self.duration_s, 4),
            "sample_rate": int(self.signal.sample_rate),
            "channels": int(self.signal.num_channels),
        }


# --------------------------------------------------------------------- demo
def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


def synthesize_demo(duration: float = 10.0, sample_rate: int = 44100, bpm: float = 120.0,
                    seed: int = 0) -> np.ndarray:
    """Synthesise the built-in demo music as a mono float array.

    Four-chord progression (C, Am, F, G; one chord per 4/4 bar) played by a
    soft additive pad, a plucked bass on every beat, an eighth-note arpeggio,
    a kick on every beat, a snare on beats 2 and 4 and hi-hats on the
    off-beats. Deterministic for a given ``seed``; peak normalised to 0.9.

    Parameters
    ----------
    duration : float
        Length in seconds.
    sample_rate : int
        Output sample rate.
    bpm : float
        Tempo in beats per minute; one beat is ``60 / bpm`` seconds.
    seed : int
        Seed for the noise of the drums.

    Returns
    -------
    numpy.ndarray
        Shape ``(round(duration * sample_rate),)``, float32.
    """
    rng = np.random.default_rng(seed)
    n = int(round(duration * sample_rate))
    out = np.zeros(n)
    beat = 60.0 / bpm
    chords = [(60, 64, 67), (57, 60, 64), (53, 57, 60), (55, 59, 62)]  # C Am F G

    def add(start: float, signal: np.ndarray) -> None:
        i = int(round(start * sample_rate))
        if i >= n:
            return
        m = min(len(signal), n - i)
        out[i:i + m] += signal[:m]

    def decay(length: float, tau: float) -> tuple[np.ndarray, np.ndarray]:
        tt = np.arange(int(length * sample_rate)) / sample_rate
        return tt, np.exp(-tt / tau)

    n_beats = int(np.ceil(duration / beat))
    for b in range(n_beats):
        start = b * beat
        chord = chords[(b // 4) % len(chords)]
        if b % 4 == 0:  # pad: one chord per bar, additive harmonics
            tt, env = decay(4 * beat, 3.0)
            env = env * np.minimum(1.0, tt / 0.05)
            pad = sum(np.sin(2 * np.pi * _midi_hz(k) * h * tt) / h
                      for k in chord for h in range(1, 6))
            add(start, 0.05 * env * pad)
        tt, env = decay(beat, 0.25)  # bass on the chord root
        f = _midi_hz(chord[0] - 24)
        add(start, 0.35 * env * (np.sin(2 * np.pi * f * tt) + 0.4 * np.sin(4 * np.pi * f * tt)))
        tt, env = decay(0.3, 0.06)  # kick: falling sine sweep
        phase = 2 * np.pi * (45 * tt + 75 * 0.04 * (1 - np.exp(-tt / 0.04)))
        add(start, 0.8 * env * np.sin(phase))
        if b % 2 == 1:  # snare on 2 and 4
            tt, env = decay(0.25, 0.05)
            add(start, 0.25 * env * (rng.standard_normal(len(tt)) + np.sin(2 * np.pi * 185 * tt)))
        tt, env = decay(0.08, 0.015)  # hat on the off-beat
        add(start + beat / 2, 0.12 * env * np.diff(rng.standard_normal(len(tt) + 1)))
        for half in range(2):  # arpeggio in eighth notes
            note = chord[(2 * b + half) % 3] + 12
            tt, env = decay(beat / 2, 0.12)
            add(start + half * beat / 2, 0.12 * env * np.sin(2 * np.pi * _midi_hz(note) * tt))
    out = out / max(1e-9, np.abs(out).max()) * 0.9
    return out.astype(np.float32)


def demo_clip(duration: float = 10.0, sample_rate: int = 44100) -> Clip:
    """The built-in demo clip: about ten seconds of synthesised music at 120 BPM."""
    samples = synthesize_demo(duration=duration, sample_rate=sample_rate)
    signal = AudioSignal(torch.from_numpy(samples)[None, None], sample_rate)
    sha = hashlib.sha256(samples.tobytes()).hexdigest()
    return Clip(name="demo", path=DEMO_NAME, sha256=sha, signal=signal)


# ------------------------------------------------------------------ loading
def _check_file(p: Path) -> None:
    """Refuse missing files, symlink loops, folders, unreadable and empty files (one line each)."""
    try:
        st = p.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AudioError(f"{p} is a symbolic link loop (it points back to itself); "
                             "pass the real audio file") from exc
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            broken = " (a broken symbolic link)" if p.is_symlink() else ""
            raise AudioError(f"audio file not found: {p}{broken} — check the path passed to "
                             "--audio") from exc
        raise AudioError(f"cannot read audio file {p}: {exc.strerror}") from exc
    if p.is_dir():
        raise AudioError(f"{p} is a folder; pass audio files (or use a glob like '{p}/*.wav')")
    if not p.is_file():
        raise AudioError(f"{p} is not a regular file (a device, pipe or socket); pass an audio file")
    try:
        with open(p, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise AudioError(f"cannot read audio file {p}: {exc.strerror} — check its "
                         "permissions") from exc
    if st.st_size == 0:
        raise AudioError(f"{p} is empty (0 bytes); pass a non-empty audio file")


def probe_clip(path: str | Path, max_seconds: float | None = DEFAULT_MAX_SECONDS) -> ClipInfo:
    """Check one input from its header, without decoding its samples.

    Parameters
    ----------
    path : str or Path
        The audio file (``builtin:demo`` for the demo clip).
    max_seconds : float, optional
        Longest duration accepted; None for no limit.

    Raises
    ------
    AudioError
        Missing, a folder, a symlink loop, unreadable, empty, not audio, without samples,
        or longer than ``max_seconds`` (the message says how to cut it).
    """
    if str(path) == DEMO_NAME:
        return ClipInfo(DEMO_NAME, 10.0, 44100, 1, 441000)
    p = Path(path)
    _check_file(p)
    import soundfile as sf

    try:
        meta = sf.info(str(p))
        info = ClipInfo(str(p), float(meta.frames) / meta.samplerate, int(meta.samplerate),
                        int(meta.channels), int(meta.frames))
    except Exception:  # not a format libsndfile knows: ask audioread (header only)
        try:
            import audioread

            with audioread.audio_open(str(p)) as f:
                rate = int(f.samplerate)
                info = ClipInfo(str(p), float(f.duration), rate, int(f.channels),
                                int(round(f.duration * rate)))
        except Exception as exc:
            raise AudioError(f"{p} is not a readable audio file (its header is not WAV, FLAC, "
                             "OGG, AIFF or MP3, or it is damaged); pass a valid audio file") from exc
    if info.frames <= 0 or info.sample_rate <= 0:
        raise AudioError(f"{p} contains no samples; pass a non-empty audio file")
    if max_seconds is not None and info.duration_s > max_seconds:
        raise AudioError(
            f"{p} lasts {info.duration_s:.0f} s, longer than --max-seconds {max_seconds:g} (the memory "
            f"bound); cut it first, e.g. `ffmpeg -i '{p}' -t {max_seconds:g} cut.wav` or "
            f"`sox '{p}' cut.wav trim 0 {max_seconds:g}`, or raise --max-seconds")
    return info


def check_inputs(inputs, max_seconds: float | None = DEFAULT_MAX_SECONDS,
                 skipped: list | None = None) -> list[ClipInfo]:
    """Expand ``--audio`` inputs and check every file's header before anything is run.

    Returns the inputs' :class:`ClipInfo` (the demo clip's when ``inputs`` is empty);
    ``skipped`` (if given) receives ``(path, reason)`` for files a folder held but that
    are not audio.
    """
    paths = expand_audio_inputs(list(inputs), skipped=skipped) if inputs else [DEMO_NAME]
    return [probe_clip(p, max_seconds) for p in paths]


def load_clip(path: str | Path, max_seconds: float | None = None) -> Clip:
    """Read one audio file into a :class:`Clip`.

    Parameters
    ----------
    path : str or Path
        The audio file, or ``builtin:demo``.
    max_seconds : float, optional
        Refuse files longer than this from their header, before decoding (see
        :func:`probe_clip`); None for no limit.

    Raises
    ------
    AudioError
        If the file is missing, unreadable, not audio, empty, too long, or holds
        NaN or infinite samples.
    """
    p = Path(path)
    if str(path) == DEMO_NAME:
        return demo_clip()
    if max_seconds is not None:
        probe_clip(p, max_seconds)
    else:
        _check_file(p)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise AudioError(f"cannot read audio file {p}: {exc.strerror} — check its permissions") from exc
    try:
        signal = _read_signal(p)
    except Exception as exc:  # soundfile/audioread raise many different types
        raise AudioError(
            f"{p} is not a readable audio file ({type(exc).__name__}); "
            f"use WAV, FLAC, OGG or MP3 audio") from exc
    if signal.signal_length == 0:
        raise AudioError(f"{p} contains no samples; pass a non-empty audio file")
    if not torch.isfinite(signal.audio_data).all():
        bad = int((~torch.isfinite(signal.audio_data)).sum())
        raise AudioError(f"{p} holds {bad} NaN or infinite samples (a damaged float file); "
                         "re-export it as 16- or 24-bit PCM")
    return Clip(name=p.stem, path=str(p), sha256=hashlib.sha256(data).hexdigest(), signal=signal)


def expand_audio_inputs(inputs: list[str] | tuple[str, ...],
                        skipped: list | None = None) -> list[str]:
    """Expand files, folders and globs into a sorted, de-duplicated list of paths.

    A folder contributes its audio files (by suffix, not recursive); a glob
    contributes its matches. A plain path is kept as given, so that a missing
    file is reported by :func:`load_clip` by name. What a folder holds but does
    not contribute is appended to ``skipped`` as ``(path, reason)``.
    """
    paths: list[str] = []
    for item in inputs:
        p = Path(item)
        if item == DEMO_NAME:
            paths.append(item)
        elif p.is_dir():
            found = []
            for q in sorted(p.iterdir()):
                if q.suffix.lower() in AUDIO_SUFFIXES:
                    found.append(str(q))
                elif skipped is not None:
                    why = ("a folder (folders are not searched recursively)" if q.is_dir()
                           else f"not an audio suffix ({', '.join(AUDIO_SUFFIXES)})")
                    skipped.append((str(q), why))
            if not found:
                raise AudioError(f"folder {p} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
            paths.extend(found)
        elif any(ch in item for ch in "*?["):
            found = sorted(glob.glob(item))
            if not found:
                raise AudioError(f"the pattern {item!r} matches no files")
            paths.extend(found)
        else:
            paths.append(item)
    seen: dict[str, None] = {}
    for q in paths:
        seen.setdefault(q, None)
    return list(seen)


def _read_signal(p: Path) -> AudioSignal:
    """The file's samples as float32, every channel, at the file's own rate.

    Read with soundfile (libsndfile: WAV, FLAC, OGG, MP3, ...); only a file it cannot
    read goes through audiotools' loader (librosa, whose audioread fallback covers other
    formats). The same samples either way; soundfile alone keeps librosa and numba —
    about 2 s and 120 MB — out of a study's process.
    """
    import soundfile as sf

    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)   # (frames, channels)
    except Exception:  # noqa: BLE001 (libsndfile's many errors): let audiotools try
        return AudioSignal(str(p))
    return AudioSignal(torch.from_numpy(np.ascontiguousarray(data.T))[None], int(sr))


def check_audible(signal: AudioSignal, label: str, loudness: bool = True) -> float | None:
    """Return the clip's loudness in LUFS, refusing silent or near-silent audio.

    Loudness normalisation divides by the measured loudness, so silence would
    produce an enormous (or non-finite) gain; it is refused here instead. With
    ``loudness=False`` only what needs no loudness meter is checked (digital silence, a
    constant offset) and None is returned: the meter's import (scipy.signal, about a
    second) is then left to the measuring process, which checks the rest
    (:func:`vampstudy.tracked.track_study`) before anything is logged.
    """
    mono = signal.clone().to_mono()
    peak = float(mono.audio_data.abs().max())
    if peak > 0 and float((mono.audio_data - mono.audio_data.mean()).abs().max()) < 1e-6 * peak:
        raise AudioError(f"{label} holds only a constant (DC) offset of {float(mono.audio_data.mean()):.3g}, "
                         "which is silent; pass a clip with audible sound")
    if peak > 0 and not loudness:
        return None
    lufs = float(mono.loudness().max()) if peak > 0 else float("-inf")
    if not np.isfinite(lufs) or lufs <= MIN_LOUDNESS_LUFS:
        shown = "-inf" if not np.isfinite(lufs) else f"{lufs:.1f}"
        raise AudioError(
            f"{label} is silent or near-silent (loudness {shown} LUFS, peak {peak:.2e}); "
            f"vampstudy needs audible audio above {MIN_LOUDNESS_LUFS:.0f} LUFS — pass another clip")
    return lufs


def wav_bytes_to_signal(data: bytes) -> AudioSignal:
    """The inverse of :func:`signal_to_wav_bytes`: float32 samples, every channel, the file's rate."""
    import soundfile as sf

    samples, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return AudioSignal(torch.from_numpy(np.ascontiguousarray(samples.T))[None], int(sr))


def signal_to_wav_bytes(signal: AudioSignal, index: int = 0) -> bytes:
    """Encode batch item ``index`` of a signal as 32-bit float WAV bytes.

    Float, not fixed-point: the stored file holds exactly the samples that were
    measured, including any beyond full scale (nothing is clipped; see
    :mod:`vampstudy.levels` for the ``clipped_pct`` metric that reports them).
    """
    import soundfile as sf

    buf = io.BytesIO()
    data = signal.audio_data[index].detach().cpu().float().numpy().T
    sf.write(buf, data, int(signal.sample_rate), format="WAV", subtype="FLOAT")
    return buf.getvalue()
