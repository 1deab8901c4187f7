"""Discovery: built-in files, FILE.py:Class, entry points, clashes, options from signatures."""

import textwrap
from pathlib import Path

import pytest

from vampstudy.errors import ConfigError, StudyNotFound
from vampstudy.layout import TAG_CONTROL
from vampstudy.registry import find_study, registered
from vampstudy.tracking import Tracker

STUDY_SOURCE = textwrap.dedent('''
    from vampstudy import MaskingStudy, Condition


    class KnobStudy(MaskingStudy):
        """A study written outside the package.

        Parameters
        ----------
        periods : tuple of int
            Prompt intervals.
        strength : float
            Sampling temperature.
        greedy_end : bool
            A flag.
        """

        name = "{name}"

        def __init__(self, periods: tuple[int, ...] = (4, 8), strength: float = 1.0,
                     greedy_end: bool = False):
            self.periods = periods
            self.strength = strength
            self.greedy_end = greedy_end

        def iterate(self):
            return [Condition({{"periodic_prompt": p}}) for p in self.periods]

        def sampling_options(self, condition):
            return {{"temperature": self.strength}}
''')


def _write_study(folder: Path, name="knob") -> Path:
    path = folder / "knob_study.py"
    path.write_text(STUDY_SOURCE.format(name=name))
    return path


def _install_fake_package(site: Path, monkeypatch, study_name="knob", dist="knobpkg"):
    """A package installed the way pip lays it out: module + dist-info with entry points."""
    pkg = site / dist
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(STUDY_SOURCE.format(name=study_name))
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[vampstudy.studies]\n{study_name} = {dist}:KnobStudy\n")
    monkeypatch.syspath_prepend(str(site))


def test_file_study_runs_with_options_from_its_signature(cli, tmp_path, music_3s):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    path = _write_study(outside)
    help_text = cli("run", f"{path}:KnobStudy", "--help").output
    for flag in ("--periods", "--strength", "--greedy-end / --no-greedy-end", "Prompt intervals."):
        assert flag in help_text
    result = cli("run", f"{path}:KnobStudy", "--backend", "reference", "--audio", str(music_3s),
                 "--periods", "3,9", "--strength", "0.5", "--greedy-end")
    assert result.exit_code == 0, result.output
    tracker = Tracker()
    exp = tracker.experiment_id("knob", create=False)
    parent = tracker.find_runs(exp, {"vampstudy.role": "study"})[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["periods"] == "3,9" and parent.data.params["strength"] == "0.5"
    assert parent.data.params["greedy_end"] == "True"
    children = [c for c in tracker.find_runs(exp, {"mlflow.parentRunId": parent.info.run_id})
                if TAG_CONTROL not in c.data.tags]   # the conditions (controls follow them)
    assert sorted(int(c.data.params["periodic_prompt"]) for c in children) == [3, 9]
    for child in children:
        assert child.data.params["strength"] == "0.5"
        assert "tokens_changed_pct" in child.data.metrics
    artifacts = {f.path for f in tracker.client.list_artifacts(parent.info.run_id)}
    assert {"summary.json", "config.yaml", "audio"} <= artifacts


def test_config_file_supplies_params_and_cli_wins(cli, tmp_path, music_3s):
    path = _write_study(tmp_path)
    config = tmp_path / "study.yaml"
    config.write_text("periods: [5, 6]\nstrength: 0.25\nseeds: [1]\n")
    result = cli("run", f"{path}:KnobStudy", "--backend", "reference", "--audio", str(music_3s),
                 "--config", str(config), "--strength", "0.75")
    assert result.exit_code == 0, result.output
    tracker = Tracker()
    parent = tracker.find_runs(tracker.experiment_id("knob"), {"vampstudy.role": "study"})[0]
    assert parent.data.params["periods"] == "5,6"      # from the file
    assert parent.data.params["strength"] == "0.75"    # the command line wins
    assert parent.data.params["seeds"] == "1"
    bad = tmp_path / "bad.yaml"
    bad.write_text("perods: [1]\n")
    out = cli("run", f"{path}:KnobStudy", "--backend", "reference", "--config", str(bad))
    assert out.exit_code != 0 and "unknown parameter(s) ['perods']" in out.output


def test_resolved_config_reruns_exactly(cli, tmp_path, music_3s):
    path = _write_study(tmp_path)
    first = cli("run", f"{path}:KnobStudy", "--backend", "reference", "--audio", str(music_3s),
                "--periods", "7", "--seed", "3")
    assert first.exit_code == 0, first.output
    tracker = Tracker()
    exp = tracker.experiment_id("knob")
    parent = tracker.find_runs(exp, {"vampstudy.role": "study"})[0]
    config = Path(tracker.download(parent.info.run_id, "config.yaml", str(tmp_path / "dl")))
    again = cli("run", f"{path}:KnobStudy", "--config", str(config))
    assert again.exit_code == 0, again.output
    parents = tracker.find_runs(exp, {"vampstudy.role": "study"})
    assert len(parents) == 2
    assert parents[0].data.tags["vampstudy.config_hash"] == parents[1].data.tags["vampstudy.config_hash"]


def test_entry_point_study_shows_in_list(cli, tmp_path, monkeypatch):
    _install_fake_package(tmp_path / "site", monkeypatch, study_name="knob-plugin")
    result = cli("list")
    assert "knob-plugin" in result.output
    assert "entry point (knobpkg 0.1)" in result.output
    assert find_study("knob-plugin").cls.__name__ == "KnobStudy"


def test_name_clash_is_reported_not_resolved(cli, tmp_path, monkeypatch):
    _install_fake_package(tmp_path / "site", monkeypatch, study_name="periodic")
    assert len(registered()["periodic"]) == 2
    assert "NAME CLASH" in cli("list").output
    with pytest.raises(ConfigError, match="registered more than once"):
        find_study("periodic")


def test_unknown_class_in_file(tmp_path):
    path = _write_study(tmp_path)
    with pytest.raises(StudyNotFound, match="no Study subclass named 'Nope'.*KnobStudy"):
        find_study(f"{path}:Nope")
    assert find_study(str(path)).cls.__name__ == "KnobStudy"  # one study: class optional


def test_guide_example_runs(cli, music_3s):
    example = Path(__file__).resolve().parents[1] / "docs" / "examples" / "continuation.py"
    result = cli("run", f"{example}:ContinuationStudy", "--backend", "reference",
                 "--audio", str(music_3s), "--prompt-s", "0.5,1.5")
    assert result.exit_code == 0, result.output
    tracker = Tracker()
    parent = tracker.find_runs(tracker.experiment_id("continuation"), {"vampstudy.role": "study"})[0]
    figures = {f.path for f in tracker.client.list_artifacts(parent.info.run_id, "figures")}
    assert "figures/prompt_vs_change.png" in figures
    children = [c for c in tracker.find_runs(tracker.experiment_id("continuation"),
                                             {"mlflow.parentRunId": parent.info.run_id})
                if TAG_CONTROL not in c.data.tags]
    drift = {float(c.data.params["prompt_s"]): c.data.metrics["continuation_changed_pct"]
             for c in children}
    assert set(drift) == {0.5, 1.5} and all(v > 50 for v in drift.values())
