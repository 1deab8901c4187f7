"""Start-up cost: the command line and the package import nothing heavy until it is used."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "mlflow", "librosa", "matplotlib", "audiotools", "pandas")


def loaded_after(code: str) -> list[str]:
    """Top-level modules of HEAVY loaded by ``code`` in a fresh interpreter."""
    probe = (f"{code}\nimport sys\n"
             f"print('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("loaded:"), out.stdout
    return [m for m in last[len("loaded:"):].split(",") if m]


@pytest.mark.parametrize("code", ["import vampstudy.cli", "import vampstudy",
                                  "import vampstudy.errors"])
def test_imports_load_no_heavy_library(code):
    assert loaded_after(code) == []


def test_help_loads_no_heavy_library():
    code = ("import sys\nfrom vampstudy.cli import main\nsys.argv = ['vampstudy', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass")
    assert loaded_after(code) == []


def test_public_names_still_import_from_the_package():
    code = ("from vampstudy import (Condition, MaskingStudy, Outcome, Session, Study, Summary,\n"
            "    SweepStudy, Trial, VampstudyError, load_backend, plots, __version__)\n"
            "import vampstudy\n"
            "from vampstudy.study import Study as S\n"
            "assert Study is S and vampstudy.Study is S\n"
            "assert plots.__name__ == 'vampstudy.plots'\n"
            "assert isinstance(__version__, str) and __version__\n"
            "assert set(vampstudy.__all__) <= set(dir(vampstudy))")
    loaded = loaded_after(code)
    assert "torch" in loaded   # the study classes were really loaded, on demand


def test_unknown_attribute_is_an_attribute_error():
    import vampstudy

    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        vampstudy.NoSuchThing  # noqa: B018


IN_A_STUDY = ("librosa", "numba", "ray", "mlflow", "matplotlib", "sqlalchemy")


def _loaded_by_a_study_run(tmp_path, *extra: str) -> str:
    """Which of :data:`IN_A_STUDY` the ``vampstudy run periodic`` process itself loaded."""
    import soundfile as sf

    from vampstudy.audio import synthesize_demo

    clip = tmp_path / "clip.wav"
    sf.write(clip, synthesize_demo(1.5), 44100)
    code = (
        "import sys\n"
        "from vampstudy.cli import main\n"
        f"sys.argv = ['vampstudy', 'run', 'periodic', '--backend', 'reference', '--device', 'cpu',"
        f" '--audio', {str(clip)!r}, '--intervals', '3,7', '--no-controls', *{list(extra)!r},"
        f" '--tracking-uri', 'sqlite:///{tmp_path / 'm.db'}']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        f"print('loaded:' + ','.join(m for m in {IN_A_STUDY!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2 conditions finished" in out.stdout, out.stdout[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_the_model_process_of_a_study_loads_no_mlflow_matplotlib_librosa_or_ray(tmp_path):
    """Under the default executor (``process``) the study's own process runs the model
    stages only: MLflow (import ~2.3 s, opening the store ~1.3 s) and matplotlib load in the
    measuring process, librosa + numba (~2.7 s, ~190 MB) and Ray nowhere."""
    assert _loaded_by_a_study_run(tmp_path) == "loaded:"


def test_in_one_process_a_study_loads_only_mlflow_and_what_it_needs_to_draw(tmp_path):
    """``--executor pipelined`` measures and records in the study's process: MLflow (with
    SQLAlchemy) and matplotlib load there — and still no librosa, numba or Ray."""
    assert (_loaded_by_a_study_run(tmp_path, "--executor", "pipelined")
            == "loaded:mlflow,matplotlib,sqlalchemy")
