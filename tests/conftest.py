"""Shared fixtures: real audio files, a real MLflow sqlite store in a temp dir, backends."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from audiotools import AudioSignal
from click.testing import CliRunner

from vampstudy.audio import synthesize_demo
from vampstudy.backends.reference import ReferenceBackend
from vampstudy.cli import main
from vampstudy.tracking import Tracker

DOUBLES = Path(__file__).parent / "doubles"


@pytest.fixture(scope="session")
def backend() -> ReferenceBackend:
    return ReferenceBackend(device="cpu")


@pytest.fixture(scope="session")
def music_3s(tmp_path_factory) -> Path:
    """Three seconds of the demo music at 44.1 kHz, written as a real WAV file."""
    path = tmp_path_factory.mktemp("audio") / "music.wav"
    sf.write(path, synthesize_demo(duration=3.0, seed=1), 44100, subtype="PCM_16")
    return path


@pytest.fixture(scope="session")
def music_signal(music_3s) -> AudioSignal:
    return AudioSignal(str(music_3s))


@pytest.fixture(scope="session")
def codes_3s(backend, music_signal) -> torch.Tensor:
    return backend.encode(music_signal)


@pytest.fixture()
def cli(tmp_path, monkeypatch):
    """``cli("run", ...)``: the command line in a temp folder with the default store there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), catch_exceptions=False)


@pytest.fixture()
def tracking_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture()
def tracker(tracking_uri, tmp_path, monkeypatch) -> Tracker:
    monkeypatch.chdir(tmp_path)
    return Tracker(tracking_uri)


@pytest.fixture()
def vampnet_double(monkeypatch):
    """Put the VampNet test double (tests/doubles/vampnet) on the import path."""
    monkeypatch.syspath_prepend(str(DOUBLES))
    for name in [m for m in sys.modules if m == "vampnet" or m.startswith("vampnet.")]:
        monkeypatch.delitem(sys.modules, name)
    import vampnet.interface

    vampnet.interface.CALLS.clear()
    yield vampnet.interface
    for name in [m for m in sys.modules if m == "vampnet" or m.startswith("vampnet.")]:
        sys.modules.pop(name, None)


def write_wav(path: Path, samples: np.ndarray, sr: int = 44100) -> Path:
    sf.write(path, samples, sr, subtype="PCM_16")
    return path


REPO_STORE = Path(__file__).resolve().parent.parent / "mlruns"


def _store_files() -> set[str]:
    return {str(p.relative_to(REPO_STORE)) for p in REPO_STORE.rglob("*")} if REPO_STORE.exists() else set()


@pytest.fixture(scope="session", autouse=True)
def repository_store_untouched():
    """No test writes into the repository's own mlruns/ (tests use temporary stores only)."""
    before = _store_files()
    yield
    added = sorted(_store_files() - before)
    assert not added, f"tests wrote into the repository's mlruns/: {added[:10]}"


@pytest.fixture(scope="session")
def listen_study(tmp_path_factory, backend):
    """One finished tiny periodic study for the listening-test tests (1 s clip, intervals
    3/7/20, seeds 0 and 1: two items, three conditions). Returns (tracker, parent run id, root).
    Shared by tests/test_listen_*.py: each writes the parent's listening/* artifacts anew and
    checks what it wrote itself."""
    from studies.periodic import PeriodicIntervalStudy
    from vampstudy.runner import run_study

    root = tmp_path_factory.mktemp("listen")
    clip = write_wav(root / "clip.wav", synthesize_demo(1.0, seed=3))
    tracker = Tracker(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    study = PeriodicIntervalStudy(intervals=(3, 7, 20))
    study.controls = False   # three conditions, no control runs (their listening: test_listen_results)
    result = run_study(study, backend, tracker, audio=[str(clip)], seeds=[0, 1])
    return tracker, result.parent_run_id, root
