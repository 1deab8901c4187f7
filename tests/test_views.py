"""The comparison view behind the printed URL: its state, its storage, the URLs and hints."""

import json

import pytest

from studies.periodic import PeriodicIntervalStudy
from vampstudy import cli, sharedviews, views
from vampstudy.intervals import interval_warnings, parse_interval, suggest
from vampstudy.runner import run_study
from vampstudy.study import Condition, Outcome, PreparedClip, Trial


def _outcome(interval, seed, clip="c", **metrics):
    o = Outcome(metrics={"tokens_changed_pct": 90.0 + interval / 10, "mask_density": 1 - 1 / interval,
                         "expected_density": 1 - 1 / interval, "mel_distance": 3.0,
                         "my_custom_score": 0.5, "tokens_changed_pct_cb3": 1.0, **metrics},
                params={"interval_ms": round(interval * 17.41, 3), "interval_tokens": interval})
    o.trial = Trial(Condition({"interval": interval}), PreparedClip(clip, {"sha256": clip}, None, None),
                    seed)
    return o


def test_view_state_columns_sort_and_charts():
    outcomes = [_outcome(p, s) for s in (0, 1) for p in (100, 2, 13)]
    state = views.comparison_view(PeriodicIntervalStudy(), outcomes, config_hash="abc123")
    cols = state["selectedColumns"]
    assert cols[:4] == ["params.`interval`", "params.`interval_ms`", "params.`interval_tokens`",
                        "params.`seed`"]
    assert "metrics.`tokens_changed_pct`" in cols and "metrics.`mel_distance`" in cols
    assert "metrics.`my_custom_score`" in cols                 # custom metrics kept
    assert not any("_cb" in c for c in cols)                  # per-codebook ones are not
    assert "params.`clip`" not in cols                         # one clip: does not vary
    # params sort as text in MLflow ("100" < "2"): sort by a metric that follows the interval
    assert state["orderByKey"] in ("metrics.`mask_density`", "metrics.`expected_density`")
    assert state["orderByAsc"] is True
    assert state["runsHiddenMode"] == "SHOW_ALL"               # every run, not the first 10
    first = state["compareRunCharts"][0]
    assert first["type"] == "SCATTER" and first["xaxis"] == {"key": "interval", "type": "PARAM"}
    assert first["yaxis"] == {"key": "tokens_changed_pct", "type": "METRIC"}
    assert first["runsCountToCompare"] >= len(outcomes) + 1
    assert all(c["metricSectionId"] == views.SECTION_ID for c in state["compareRunCharts"])
    assert state["searchFilter"] == "tags.`vampstudy.config_hash` = 'abc123'"
    json.dumps(state)                                          # serialisable


def test_beat_intervals_plot_along_tokens_and_sort_by_start_time_without_a_monotone_metric():
    outcomes = [_outcome(7, 0), _outcome(29, 0)]
    outcomes[1].trial = Trial(Condition({"interval": "beat"}), outcomes[1].trial.clip, 0)
    assert views.condition_axis(outcomes) == "interval_tokens"
    flat = [_outcome(p, 0, mask_density=0.5, expected_density=0.5) for p in (2, 5)]
    for o in flat:
        o.metrics["tokens_changed_pct"] = 1.0
        o.metrics.pop("my_custom_score")
        o.metrics["mel_distance"] = 3.0
    assert views.order_metric(flat, "interval") is None
    assert views.comparison_view(None, flat)["orderByKey"] == "attributes.start_time"


def test_saved_view_is_the_experiment_tag_mlflow_reads(tracker, backend, music_3s):
    study = PeriodicIntervalStudy(intervals=(2, 13, 100))
    result = run_study(study, backend, tracker, audio=[str(music_3s)])
    key = views.save_comparison_view(tracker, result.experiment_id, result.parent_run_id, study,
                                     result.outcomes)
    tags = tracker.client.get_experiment(result.experiment_id).tags
    envelope = json.loads(tags[f"mlflow.sharedViewState.{key}"])
    assert set(envelope) == {"name", "createdAt", "state"} and isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])
    config_hash = tracker.get_run(result.parent_run_id).data.tags["vampstudy.config_hash"]
    assert config_hash in state["searchFilter"]
    assert sharedviews.latest_view(tracker, result.experiment_id) == key
    assert sharedviews.load_view(tracker, result.experiment_id, key) == state
    # the filter selects exactly this study's runs, parent included (MLflow hides orphans)
    runs = tracker.client.search_runs([result.experiment_id], state["searchFilter"])
    assert len(runs) == 1 + 3 + 1 + 3     # parent, conditions, codec control, noise controls
    url = sharedviews.ui_url(result.experiment_id, view_key=key)
    assert url.endswith(f"runs?workflowType=machine_learning&viewStateShareKey={key}")
    assert sharedviews.ui_url(result.experiment_id, view_key=key, charts=True).endswith(
        "&compareRunsMode=CHART")


def test_end_of_run_hint_names_a_command_that_works(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.sys, "argv", [".venv/bin/vampstudy", "run", "periodic"])
    monkeypatch.setattr("shutil.which", lambda name: None)     # not on PATH (after make demo)
    assert cli._self_command() == ".venv/bin/vampstudy"
    (tmp_path / "Makefile").write_text("demo:\n\techo\nui: x\n\techo\n")
    assert cli._has_make_ui()
    monkeypatch.setattr("shutil.which", lambda name: str(tmp_path / ".venv/bin/vampstudy"))
    assert cli._self_command() == "vampstudy"


@pytest.mark.parametrize("typo, hint", [("beets", "beat"), ("xyz", ""), ("baet", "beat"),
                                        ("2beet", "2beat"), ("brs", "bar")])
def test_near_miss_intervals_suggest_the_right_value(typo, hint):
    text = suggest(typo)
    assert (f"did you mean {hint!r}?" in text) if hint else text == ""


def test_plural_beats_mean_beat():
    assert parse_interval("beats") == "beat" and parse_interval("2 bars") == "2bar"


def test_interval_longer_than_the_clip_warns():
    warnings = interval_warnings([600, 7], [600, 7], 575, 9.99)
    assert len(warnings) == 1
    assert "interval 600 exceeds the clip (575 tokens" in warnings[0]
    assert interval_warnings([7, 13], [7, 13], 575, 9.99) == []
