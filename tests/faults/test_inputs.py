"""Bad audio inputs, generated here: each is refused with one line naming the file and the
problem (exit != 0, no traceback, no signal, no run created), or — where the input is
legitimate — runs to FINISHED.
"""

from __future__ import annotations

import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from vampstudy.audio import check_inputs, synthesize_demo
from vampstudy.cli import main

from harness import one_line_error

RNG = np.random.default_rng(10)


def music(seconds: float = 1.0, sr: int = 44100, channels: int = 1) -> np.ndarray:
    mono = synthesize_demo(duration=seconds, sample_rate=sr, seed=3)
    return mono if channels == 1 else np.stack([mono * (0.5 + 0.5 * c / channels)
                                                for c in range(channels)], axis=1)


def wav_bytes(data: np.ndarray, sr: int = 44100, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    path = Path(tempfile.mkdtemp()) / f"x.{fmt.lower()}"
    sf.write(path, data, sr, subtype=subtype, format=fmt)
    out = path.read_bytes()
    shutil.rmtree(path.parent)
    return out


def long_wav_header(path: Path, seconds: float, sr: int = 48000, channels: int = 2) -> Path:
    """A real (sparse, silent) 16-bit WAV of ``seconds``: header plus holes, no disk used."""
    data = int(seconds * sr) * channels * 2
    header = (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt "
              + struct.pack("<IHHIIHH", 16, 1, channels, sr, sr * channels * 2, channels * 2, 16)
              + b"data" + struct.pack("<I", data))
    with open(path, "wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + data)
    return path


# name → (bytes or a function of the path, what the one error line must say)
def _bad_cases() -> dict:
    good = wav_bytes(music(0.5))
    flac = wav_bytes(music(0.5), subtype="PCM_16", fmt="FLAC")
    nan = music(0.5).astype(np.float32)
    nan[100:200] = np.nan
    inf = music(0.5).astype(np.float32)
    inf[5] = np.inf
    t = np.arange(44100) / 44100
    return {
        "empty.wav": (b"", "is empty (0 bytes)"),
        "empty.mp3": (b"", "is empty (0 bytes)"),
        "empty.flac": (b"", "is empty (0 bytes)"),
        "truncated-header.wav": (good[:20], "not a readable audio file"),
        "truncated-header.flac": (flac[:30], "not a readable audio file"),
        "truncated-id3.mp3": (b"ID3\x04\x00\x00\x00\x00\x10\x00" + b"\x00" * 20,
                              "not a readable audio file"),
        "truncated-frame.mp3": (b"\xff\xfb\x90\x64" + bytes(RNG.integers(0, 256, 60, dtype=np.uint8)),
                                "not a readable audio file"),
        "header-only.wav": (good[:44], "contains no samples"),
        "random.wav": (bytes(RNG.integers(0, 256, 4000, dtype=np.uint8)), "not a readable audio file"),
        "random.flac": (bytes(RNG.integers(0, 256, 4000, dtype=np.uint8)), "not a readable audio file"),
        "random.mp3": (bytes(RNG.integers(0, 256, 4000, dtype=np.uint8)), "not a readable audio file"),
        "random.ogg": (bytes(RNG.integers(0, 256, 4000, dtype=np.uint8)), "not a readable audio file"),
        "random.aiff": (bytes(RNG.integers(0, 256, 4000, dtype=np.uint8)), "not a readable audio file"),
        "text.wav": (b"this is a text file, not audio\n" * 20, "not a readable audio file"),
        "nan.wav": (wav_bytes(nan, subtype="FLOAT"), "NaN or infinite samples"),
        "inf.wav": (wav_bytes(inf, subtype="FLOAT"), "NaN or infinite samples"),
        "zeros.wav": (wav_bytes(np.zeros(44100, np.float32)), "silent"),
        "dc-only.wav": (wav_bytes(np.full(44100, 0.5, np.float32)), "constant (DC) offset"),
        "hiss.wav": (wav_bytes((1e-4 * RNG.standard_normal(44100)).astype(np.float32)), "silent"),
        "one-sample.wav": (wav_bytes(np.array([0.5], np.float32)), "shorter than one token"),
        "tiny.wav": (wav_bytes((0.5 * np.sin(t[:300] * 2000)).astype(np.float32)),
                     "shorter than one token"),
        "symlink-loop.wav": (lambda p: (os.symlink(p.name + ".b", p),
                                        os.symlink(p.name, str(p) + ".b")),
                             "symbolic link loop"),
        "dangling.wav": (lambda p: os.symlink("gone.wav", p), "broken symbolic link"),
        "missing.wav": (lambda p: None, "audio file not found"),
        "folder.wav": (lambda p: (p.mkdir(), (p / "readme.txt").write_text("x")),
                       "holds no audio files"),
        "fifo.wav": (lambda p: os.mkfifo(p), "not a regular file"),
        "one-hour.wav": (lambda p: long_wav_header(p, 3600.0), "longer than --max-seconds 600"),
    }


BAD = _bad_cases()


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad inputs ✗")
    for name, (content, _) in BAD.items():
        path = folder / name
        if callable(content):
            content(path)
        else:
            path.write_bytes(content)
    return folder


@pytest.fixture()
def cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runner = CliRunner()
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"

    def invoke(*args):
        result = runner.invoke(main, ["run", "periodic", "--backend", "reference", "--intervals",
                                      "7", "--tracking-uri", uri, *map(str, args)])
        result.uri = uri
        return result
    return invoke


def no_runs(uri: str) -> None:
    from mlflow.tracking import MlflowClient

    db = Path(uri.removeprefix("sqlite:///"))
    if not db.exists():
        return  # refused before the store was even opened
    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(exps) == [], "a run was created for a refused input"


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_one_line_naming_the_file(cli, bad_dir, name):
    path = bad_dir / name
    result = cli("--audio", path)
    one_line_error(result, path.name, BAD[name][1])
    no_runs(result.uri)


def test_a_folder_with_one_damaged_file_names_it_and_says_what_it_skipped(cli, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    sf.write(folder / "good.wav", music(1.0), 44100)
    (folder / "damaged.flac").write_bytes(b"fLaC" + b"\x00" * 10)
    (folder / "notes.txt").write_text("liner notes")
    (folder / "sub").mkdir()
    result = cli("--audio", folder)
    one_line_error(result, "damaged.flac", "not a readable audio file")
    assert f"skipped {folder / 'notes.txt'}: not an audio suffix" in result.output
    assert f"skipped {folder / 'sub'}: a folder" in result.output
    no_runs(result.uri)


def test_one_hour_file_is_refused_from_its_header_as_a_real_process(tmp_path):
    """A 1-hour 48 kHz stereo file: refused before decoding (which would need GBs), exit 1."""
    path = long_wav_header(tmp_path / "an hour.wav", 3600.0)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run([sys.executable, "-m", "vampstudy.cli", "run", "periodic", "--backend",
                           "reference", "--audio", str(path), "--tracking-uri",
                           f"sqlite:///{tmp_path / 'mlflow.db'}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("Error:")]
    assert str(path) in line and "3600 s" in line and "--max-seconds 600" in line
    assert "ffmpeg -i" in line and "-t 600" in line
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    decoded = 3600 * 48000 * 2 * 4 / 1024  # KiB the float32 samples alone would take
    assert max(peak, before) < decoded, "the file was decoded before being refused"
    raised = subprocess.run([sys.executable, "-m", "vampstudy.cli", "run", "periodic",
                             "--backend", "reference", "--audio", str(path), "--dry-run",
                             "--max-seconds", "4000"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert raised.returncode == 0 and "3600.00 s, 48000 Hz, 2 ch" in raised.stdout


def _check_as_nobody(path: Path) -> str:
    """``check_inputs([path])`` in a forked child that dropped root for `nobody`; the error
    line the CLI would print ("Error: " + message), or "ok". (No exec: the venv's interpreter
    may live under /root, which `nobody` cannot enter; no CLI: only the file check runs, so
    no thread pool is inherited half-locked.)"""
    import pwd

    from vampstudy.errors import VampstudyError

    nobody = pwd.getpwnam("nobody")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        out = "child failed"
        try:
            import signal

            signal.alarm(60)
            os.close(read)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            check_inputs([str(path)])
            out = "ok"
        except VampstudyError as exc:
            out = f"Error: {exc}"
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            out = f"Exception: {exc!r}"
        finally:
            os.write(write, out.encode())
            os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
def test_unreadable_file(tmp_path, monkeypatch):
    """A file without read permission (checked as `nobody` when the tests run as root)."""
    folder = Path(tempfile.mkdtemp(prefix="vampstudy-perm-"))
    try:
        folder.chmod(0o755)
        monkeypatch.chdir(folder)
        path = folder / "locked.wav"
        sf.write(path, music(1.0), 44100)
        path.chmod(0o000)
        if os.geteuid() == 0:
            sf.write(folder / "open.wav", music(1.0), 44100)
            check_inputs([str(folder / "open.wav")])  # warm every lazy import first
            line = _check_as_nobody(path)
        else:
            result = CliRunner().invoke(main, ["run", "periodic", "--backend", "reference",
                                               "--audio", str(path), "--dry-run"])
            assert result.exit_code == 1 and "Traceback" not in result.output, result.output
            (line,) = [x for x in result.output.splitlines() if x.startswith("Error:")]
        assert line.startswith("Error:"), line
        assert str(path) in line and "Permission denied" in line and "permissions" in line
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------ legitimate inputs
LEGIT = {
    "8-channels.wav": lambda p: sf.write(p, music(1.0, channels=8), 44100),
    "8kHz.wav": lambda p: sf.write(p, music(1.0, sr=8000), 8000),
    "192kHz.wav": lambda p: sf.write(p, music(1.0, sr=192000), 192000),
    "uint8.wav": lambda p: sf.write(p, music(1.0), 44100, subtype="PCM_U8"),
    "int24.wav": lambda p: sf.write(p, music(1.0), 44100, subtype="PCM_24"),
    "int32.wav": lambda p: sf.write(p, music(1.0), 44100, subtype="PCM_32"),
    "float64.wav": lambda p: sf.write(p, music(1.0), 44100, subtype="DOUBLE"),
    "flac-clip.flac": lambda p: sf.write(p, music(1.0), 44100, format="FLAC"),
    "ogg-clip.ogg": lambda p: sf.write(p, music(1.0), 44100, format="OGG", subtype="VORBIS"),
    "söng ♪ (live).wav": lambda p: sf.write(p, music(1.0), 44100),
    "my song with spaces.aiff": lambda p: sf.write(p, music(1.0), 44100, format="AIFF"),
}


def test_legitimate_odd_inputs_run_to_finished(cli, tmp_path):
    from mlflow.tracking import MlflowClient

    folder = tmp_path / "odd but fine"
    folder.mkdir()
    for name, make in LEGIT.items():
        make(folder / name)
    (folder / "cover.jpg").write_bytes(b"\xff\xd8\xff")
    result = cli("--audio", folder)
    assert result.exit_code == 0, result.output
    assert f"skipped {folder / 'cover.jpg'}: not an audio suffix" in result.output
    client = MlflowClient(result.uri)
    exp = client.get_experiment_by_name("periodic").experiment_id
    runs = client.search_runs([exp], max_results=1000)
    children = [r for r in runs if r.data.tags.get("vampstudy.role") == "condition"]
    assert sorted(r.data.params["clip"] for r in children) == sorted(Path(n).stem for n in LEGIT)
    assert {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.parametrize("fmt, subtype, channels, sr", [
    ("WAV", "PCM_16", 1, 44100), ("WAV", "PCM_24", 2, 48000), ("WAV", "FLOAT", 2, 22050),
    ("FLAC", "PCM_16", 2, 44100), ("OGG", "VORBIS", 1, 44100),
])
def test_files_read_with_soundfile_give_audiotools_samples(tmp_path, fmt, subtype, channels, sr):
    """load_clip reads with soundfile (no librosa in the process): the same samples, shape and
    rate as audiotools' own loader (librosa.load) gives."""
    from audiotools import AudioSignal

    from vampstudy.audio import load_clip

    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, music(0.5, sr, channels), sr, subtype=subtype, format=fmt)
    ours = load_clip(str(path)).signal
    theirs = AudioSignal(str(path))
    assert ours.sample_rate == theirs.sample_rate == sr
    assert ours.audio_data.shape == theirs.audio_data.shape == (1, channels, ours.signal_length)
    assert ours.audio_data.dtype == theirs.audio_data.dtype
    np.testing.assert_array_equal(ours.audio_data.numpy(), theirs.audio_data.numpy())
