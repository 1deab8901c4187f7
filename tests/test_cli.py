"""The command line: help, the run command, and one clear error per bad input."""

import re

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import write_wav
from vampstudy.cli import main
from vampstudy.tracking import Tracker


@pytest.fixture()
def cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, list(args), catch_exceptions=False)
    return invoke


def _commands(group, prefix=()):
    import click

    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))


def test_every_command_has_help_with_an_example(cli):
    for path, cmd in _commands(main):
        result = cli(*path, "--help")
        assert result.exit_code == 0, path
        assert "Example" in result.output, path


def test_run_periodic_on_a_file_logs_to_mlruns(cli, tmp_path, music_3s):
    result = cli("run", "periodic", "--backend", "reference", "--audio", str(music_3s),
                 "--intervals", "2,7,30")
    assert result.exit_code == 0, result.output
    assert "vampstudy ui" in result.output
    assert "workflowType=machine_learning" in result.output
    assert "NOT VampNet" in result.output  # banner (stderr is mixed in by CliRunner)
    assert (tmp_path / "mlruns" / "mlflow.db").exists()
    tracker = Tracker()
    exp = tracker.experiment_id("periodic", create=False)
    children = tracker.find_runs(exp, {"vampstudy.role": "condition"}, ("FINISHED",))
    assert sorted(int(c.data.params["interval"]) for c in children) == [2, 7, 30]
    shown = cli("show")
    assert shown.exit_code == 0 and re.search(r"^interval=30\s+\S*\s+30\s", shown.output, re.M)


def test_list_shows_periodic(cli):
    result = cli("list")
    assert result.exit_code == 0
    assert "periodic" in result.output and "built-in (studies/periodic.py)" in result.output


def _fails(result, *needles):
    assert result.exit_code != 0, result.output
    for n in needles:
        assert n in result.output, (n, result.output)


def test_missing_audio(cli):
    _fails(cli("run", "periodic", "--backend", "reference", "--audio", "nope.wav"),
           "audio file not found: nope.wav")


def test_not_audio(cli, tmp_path):
    fake = tmp_path / "notes.wav"
    fake.write_text("this is not audio")
    _fails(cli("run", "periodic", "--backend", "reference", "--audio", str(fake)),
           "is not a readable audio file")


def test_unreadable_audio(cli, tmp_path):
    folder = tmp_path / "song.wav"
    folder.mkdir()  # a folder named like a file: cannot be read as audio
    (folder / "readme.txt").write_text("x")
    _fails(cli("run", "periodic", "--backend", "reference", "--audio", str(folder)),
           "holds no audio files")


def test_silent_audio_is_refused_without_nan(cli, tmp_path):
    path = write_wav(tmp_path / "silence.wav", np.zeros(44100, dtype=np.float32))
    _fails(cli("run", "periodic", "--backend", "reference", "--audio", str(path)),
           "silent or near-silent")
    assert not (tmp_path / "mlruns" / "artifacts").exists() or not any(
        (tmp_path / "mlruns" / "artifacts").rglob("*.wav"))


def test_near_silent_audio_is_refused(cli, tmp_path):
    rng = np.random.default_rng(0)
    path = write_wav(tmp_path / "hiss.wav", (1e-4 * rng.standard_normal(44100)).astype(np.float32))
    _fails(cli("run", "periodic", "--backend", "reference", "--audio", str(path)),
           "silent or near-silent")


def test_audio_shorter_than_one_token(cli, tmp_path):
    tone = 0.5 * np.sin(np.arange(500) / 10.0).astype(np.float32)
    path = write_wav(tmp_path / "blip.wav", tone)
    _fails(cli("run", "periodic", "--backend", "reference", "--audio", str(path)),
           "shorter than one token")


@pytest.mark.parametrize("value,needle", [("0,3", "positive integers"), ("-2", "positive integers"),
                                          ("2,x", "'x' is not a valid int"),
                                          ("2.5", "'2.5' is not a valid int")])
def test_bad_intervals(cli, value, needle):
    _fails(cli("run", "periodic", "--backend", "reference", "--intervals", value), needle)


@pytest.mark.parametrize("value", ["0", "15"])
def test_upper_codebook_mask_out_of_range(cli, value):
    result = cli("run", "periodic", "--backend", "reference", "--upper-codebook-mask", value)
    assert result.exit_code == 2, result.output  # a usage error of the option
    _fails(result, "Invalid value for '--upper-codebook-mask'", "must be in 1..14")


def test_unknown_study(cli):
    _fails(cli("run", "periodc"), "unknown study 'periodc'", "periodic")


def test_unreachable_tracking_server(cli):
    _fails(cli("run", "periodic", "--backend", "reference", "--tracking-uri",
               "http://127.0.0.1:9"), "cannot reach the MLflow tracking store at http://127.0.0.1:9")


def test_vampnet_not_installed(cli):
    _fails(cli("run", "periodic", "--backend", "vampnet"), "vampnet is not installed",
           "pip install -e ./vampnet")


def test_auto_backend_falls_back_to_reference(cli, music_3s):
    result = cli("run", "periodic", "--backend", "auto", "--audio", str(music_3s),
                 "--intervals", "3")
    assert result.exit_code == 0, result.output
    assert "backend: reference" in result.output


def test_checkpoint_options_need_vampnet(cli):
    _fails(cli("run", "periodic", "--backend", "reference", "--coarse-ckpt", "x.pth"),
           "only apply to --backend vampnet")


def test_repeats_is_seeds_zero_to_n(cli, music_3s):
    result = cli("run", "periodic", "--backend", "reference", "--audio", str(music_3s),
                 "--intervals", "5", "--repeats", "2")
    assert result.exit_code == 0, result.output
    tracker = Tracker()
    children = tracker.find_runs(tracker.experiment_id("periodic"), {"vampstudy.role": "condition"})
    assert sorted(c.data.params["seed"] for c in children) == ["0", "1"]
    both = cli("run", "periodic", "--seeds", "1,2", "--repeats", "2")
    assert both.exit_code == 2 and "not both" in both.output


# ------------------------------------------- validation before any run (issue 10, item 7)
@pytest.mark.parametrize("study,option,value,needle", [
    ("random-mask", "--intensities", "1.5", "must be a number in [0, 1], got 1.5"),
    ("random-mask", "--intensities", "0.1,nan", "must be a number in [0, 1], got nan"),
    ("random-mask", "--intensities", "0.1,abc", "'abc' is not a valid float"),
    ("dropout", "--dropouts", "-0.1", "must be a number in [0, 1]"),
    ("codebook-depth", "--depths", "1,15", "must be an integer in 1..14, got 15"),
    ("prompt-width", "--widths", "0,1", "must be an integer >= 1, got 0"),
    ("onset-prompt", "--widths", "2,2", "lists a value twice"),
    ("temperature", "--temperatures", "-1", "must be a number >= 0, got -1.0"),
    ("inpainting", "--context-s", "-0.5", "must be a number >= 0, got -0.5"),
    ("prompt-width", "--periodic-prompt", "-3", "must be an integer >= 0, got -3"),
    ("periodic", "--dropout", "2", "must be in [0, 1], got 2.0"),
    ("periodic", "--tempo", "0", "must be a positive BPM"),
    ("sweep", "--param", "temperature=0.5,abc", "temperature must be a number >= 0, got 'abc'"),
    ("sweep", "--param", "temperatur=0.5", "unknown option 'temperatur'; choose from"),
    ("sweep", "--param", "top_p=1.2", "top_p must be a number in [0, 1] or none, got 1.2"),
])
def test_bad_values_are_usage_errors_before_any_run(cli, tmp_path, study, option, value, needle):
    result = cli("run", study, "--backend", "reference", option, value)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output and needle in result.output
    assert "--resume" not in result.output
    assert not (tmp_path / "mlruns").exists()  # refused before any store or run was created


def test_every_builtin_study_default_passes_validation_and_dry_run_creates_nothing(cli, tmp_path,
                                                                                   music_3s):
    from vampstudy.registry import registered

    for name in registered():
        result = cli("run", name, "--backend", "reference", "--dry-run", "--seeds", "0,1",
                     "--audio", str(music_3s))
        assert result.exit_code == 0, (name, result.output)
        assert "1 clips ×" in result.output and "× 2 seeds" in result.output, result.output
    assert "music.wav  3.00 s, 44100 Hz, 1 ch" in result.output
    assert not (tmp_path / "mlruns").exists()


def test_dry_run_counts_conditions(cli):
    result = cli("run", "sweep", "--backend", "reference", "--dry-run",
                 "--param", "periodic_prompt=3,7", "--param", "upper_codebook_mask=1,2,3")
    assert result.exit_code == 0, result.output
    assert "6 conditions" in result.output and "= 6 runs" in result.output


def test_help_shows_real_defaults_never_none(cli):
    for study in ("periodic", "sweep", "random-mask"):
        result = cli("run", study, "--help")
        assert "(None)" not in result.output and "[default: None]" not in result.output
    assert "[default: 3]" in cli("run", "periodic", "--help").output
