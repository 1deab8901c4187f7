"""Repeats and paired statistics, many clips, mask-aware metrics, beat intervals, the report."""

import base64
import io
import re
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from scipy import stats

from studies.periodic import PeriodicIntervalStudy
from tests.test_checks import AltersKeptTokens
from vampstudy.audio import synthesize_demo
from vampstudy.cli import main
from vampstudy.intervals import interval_tokens, parse_interval
from vampstudy.layout import TAG_CONTROL
from vampstudy.runner import run_study
from vampstudy.summary import mean_ci, paired_comparison
from vampstudy.tracking import Tracker


def test_mean_ci_against_hand_computation():
    values = [1.0, 2.0, 4.0, 7.0]
    st = mean_ci(values)
    sd = np.sqrt(sum((v - 3.5) ** 2 for v in values) / 3)
    assert st["mean"] == 3.5 and st["std"] == pytest.approx(sd) and st["n"] == 4
    assert st["ci95"] == pytest.approx(3.182446 * sd / 2, rel=1e-5)   # t(0.975, 3) = 3.1824


@pytest.fixture(scope="module")
def repeated(tmp_path_factory, music_3s, backend):
    tracker = Tracker(f"sqlite:///{tmp_path_factory.mktemp('rep') / 'mlflow.db'}")
    result = run_study(_without_controls(PeriodicIntervalStudy(intervals=(2, 13, 100))), backend,
                       tracker, audio=[str(music_3s)], seeds=[0, 1, 2, 3, 4])
    return tracker, result


def _without_controls(study):
    """These tests follow the conditions; test_three_clips_three_seeds counts the controls."""
    study.controls = False
    return study


def test_paired_comparison_finds_2_vs_100_and_not_self(repeated):
    _, result = repeated
    key = {o.trial.condition.params["interval"]: o.trial.condition.key for o in result.outcomes}
    far = paired_comparison(result.outcomes, key[2], key[100], "tokens_changed_pct")
    assert far["n"] == 5 and far["differs"] and far["ci_low"] > 0
    same = paired_comparison(result.outcomes, key[13], key[13], "tokens_changed_pct")
    assert same["differs"] is False and same["mean_diff"] == 0 and same["p_value"] == 1.0


def test_paired_comparison_against_independent_computation():
    class O:  # minimal outcome stand-ins
        def __init__(self, cond, seed, value):
            from vampstudy.study import Condition, PreparedClip, Trial
            clip = PreparedClip("c", {"sha256": "x"}, None, None)
            self.trial = Trial(Condition({"p": cond}), clip, seed)
            self.metrics = {"m": value}

    a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    b = [2.1, 2.9, 4.2, 5.1, 5.8, 7.3]
    outs = [O("a", i, v) for i, v in enumerate(a)] + [O("b", i, v) for i, v in enumerate(b)]
    res = paired_comparison(outs, outs[0].trial.condition.key, outs[-1].trial.condition.key, "m")
    d = np.subtract(b, a)
    assert res["mean_diff"] == pytest.approx(d.mean())
    assert res["p_value"] == pytest.approx(stats.wilcoxon(d).pvalue)
    assert d.min() <= res["ci_low"] <= d.mean() <= res["ci_high"] <= d.max()


def test_summary_has_mean_std_n_ci_and_paired_table(repeated):
    tracker, result = repeated
    rows = tracker.load_table(result.parent_run_id, "summary")
    assert [r["n"] for r in rows] == [5, 5, 5]
    for r in rows:
        assert r["tokens_changed_pct_std"] is not None and r["tokens_changed_pct_ci95"] > 0
    paired = tracker.load_table(result.parent_run_id, "paired_comparisons")
    assert [(p["a"], p["b"]) for p in paired] == [("interval=2", "interval=13"),
                                                   ("interval=13", "interval=100")]


def test_error_bars_are_drawn(repeated, backend):
    _, result = repeated
    from vampstudy.study import Session

    study = PeriodicIntervalStudy(intervals=(2, 13, 100))
    session = Session(backend, [result.outcomes[0].trial.clip], [0, 1, 2, 3, 4])
    study.prepare(session)
    summary = study.analyze(result.outcomes, session)
    ax = summary.figures["interval_vs_changed"].axes[0]
    assert ax.containers and ax.containers[0].has_yerr


def test_mask_aware_series_and_kept_change(repeated):
    tracker, result = repeated
    child = result.outcomes[0].run_id
    history = tracker.client.get_metric_history(child, "tokens_changed_pct_by_codebook")
    assert sorted(m.step for m in history) == list(range(14))
    masked = tracker.client.get_metric_history(child, "masked_changed_pct_by_codebook")
    assert len(masked) == 14
    assert all(o.metrics["kept_changed_pct"] == 0 for o in result.outcomes)


def test_kept_change_exposes_a_backend_that_overwrites_prompts(tracker, music_3s):
    bad = AltersKeptTokens(device="cpu")
    result = run_study(PeriodicIntervalStudy(intervals=(3,)), bad, tracker, audio=[str(music_3s)])
    assert result.outcomes[0].metrics["kept_changed_pct"] > 10


def test_fidelity_metrics_on_every_condition(repeated):
    _, result = repeated
    for o in result.outcomes:
        assert 0 < o.metrics["mel_distance"] and -1 <= o.metrics["chroma_similarity"] <= 1
        assert "onset_correlation" in o.metrics and "tempo_difference_bpm" in o.metrics


def test_three_clips_three_seeds(tmp_path, monkeypatch):
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(3):
        sf.write(folder / f"clip{i}.wav", synthesize_demo(1.5, seed=10 + i, bpm=100 + 20 * i), 44100)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["run", "periodic", "--backend", "reference", "--audio",
                                       str(folder), "--seeds", "0,1,2"])
    assert result.exit_code == 0, result.output
    tracker = Tracker()
    exp = tracker.experiment_id("periodic")
    parent = tracker.find_runs(exp, {"vampstudy.role": "study"})[0]
    children = tracker.find_runs(exp, {"mlflow.parentRunId": parent.info.run_id}, ("FINISHED",))
    controls = Counter(c.data.tags.get(TAG_CONTROL, "condition") for c in children)
    assert controls == {"condition": 3 * 11 * 3, "codec": 3, "noise": 3 * 11 * 3}
    rows = tracker.load_table(parent.info.run_id, "summary")
    by_control = Counter(r["control"] for r in rows)
    assert by_control == {"": 11, "codec": 1, "noise": 11}
    assert all(r["n"] == (3 if r["control"] == "codec" else 9) for r in rows)
    by_clip = [r for r in tracker.load_table(parent.info.run_id, "summary_by_clip")
               if not r.get("control")]
    assert len(by_clip) == 33 and {r["clip"] for r in by_clip} == {"clip0", "clip1", "clip2"}
    inputs = tracker.get_run(parent.info.run_id).inputs.dataset_inputs
    assert inputs and inputs[0].dataset.name == "clips"
    assert str(folder.resolve()) in inputs[0].dataset.source   # lineage: where the clips live
    assert "sha256" in inputs[0].dataset.schema                  # their identities are the rows
    child_inputs = tracker.get_run(children[0].info.run_id).inputs.dataset_inputs
    assert child_inputs and child_inputs[0].dataset.name == "clips"


def test_interval_specs():
    assert parse_interval("7") == 7 and parse_interval("beat/2") == "beat/2"
    assert parse_interval("2 beat") == "2beat" and parse_interval("bar") == "bar"
    with pytest.raises(ValueError):
        parse_interval("beet")
    tps = 44100 / 768
    assert interval_tokens("beat", 120, tps) == round(0.5 * tps) == 29
    assert interval_tokens("beat/2", 120, tps) == 14
    assert interval_tokens("bar", 120, tps) == round(2 * tps)
    assert interval_tokens(9, None, tps) == 9


def test_beat_intervals_on_a_clip_at_known_tempo(tracker, backend, tmp_path):
    path = tmp_path / "at120.wav"
    sf.write(path, synthesize_demo(6.0, bpm=120.0), 44100)
    result = run_study(_without_controls(PeriodicIntervalStudy(intervals=("beat", 7, "bar"))),
                       backend, tracker, audio=[str(path)])
    parent = tracker.get_run(result.parent_run_id)
    assert abs(float(parent.data.params["tempo_bpm"]) - 120) < 3
    tokens = {o.trial.condition.params["interval"]: int(o.params["interval_tokens"])
              for o in result.outcomes}
    assert tokens == {"beat": 29, 7: 7, "bar": 115}
    mask = result.outcomes[0].arrays["mask"][0, 0]
    kept = np.flatnonzero(mask == 0)
    assert set(np.diff(kept)) == {29}


def test_bad_interval_spec_on_the_cli():
    result = CliRunner().invoke(main, ["run", "periodic", "--intervals", "2,beet"])
    assert result.exit_code == 2 and "'beet' is not a valid interval" in result.output


def test_listening_report(repeated):
    tracker, result = repeated
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tracker.download(result.parent_run_id, "report.html", tmp)).read_text()
    assert len(page) < 20 * 1024 * 1024
    assert "not VampNet" in page and "reference" in page
    sources = re.findall(r"<audio controls preload='metadata' src='data:(audio/\w+);base64,([^']+)'", page)
    assert len(sources) == 1 + 3 * 5   # original + every condition x every seed
    mime, data = sources[1]
    audio, sr = sf.read(io.BytesIO(base64.b64decode(data)))
    assert sr == 44100 and abs(len(audio) / sr - 3.0) < 0.1
    assert page.index("interval=2") < page.index("interval=13") < page.index("interval=100")
    for seed in range(5):
        assert f"interval=13 · seed {seed}" in page          # a spectrogram per seed
    # mean ± CI over the five seeds, next to each seed's value
    changed = [o.metrics["tokens_changed_pct"] for o in result.outcomes
               if o.trial.condition.params["interval"] == 13]
    from vampstudy.summary import mean_ci
    st = mean_ci(changed)
    assert f"{st['mean']:.3g} ± {st['ci95']:.3g} <small>(n=5)</small>" in page
    assert "<th>mean ± 95% CI</th>" in page


def test_clips_dataset_entity(tmp_path):
    import json

    from vampstudy.tracking import clips_dataset

    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "b.wav").write_bytes(b"")
    rows = [{"name": "a", "path": str(tmp_path / "a.wav"), "sha256": "11", "duration_s": 1.5,
             "sample_rate": 44100, "channels": 1},
            {"name": "b", "path": str(tmp_path / "b.wav"), "sha256": "22", "duration_s": 2,
             "sample_rate": 48000, "channels": 2}]
    ds = clips_dataset("clips", rows)
    cols = json.loads(ds.schema)["mlflow_colspec"]
    assert [(c["name"], c["type"], c["required"]) for c in cols] == [
        ("name", "string", True), ("path", "string", True), ("sha256", "string", True),
        ("duration_s", "double", True), ("sample_rate", "long", True), ("channels", "long", True)]
    assert ds.source_type == "local" and json.loads(ds.source) == {"uri": str(tmp_path.resolve())}
    assert json.loads(ds.profile) == {"num_rows": 2, "num_elements": 12}
    assert ds.digest == clips_dataset("clips", [dict(r) for r in rows]).digest
    assert ds.digest != clips_dataset("clips", [rows[0]]).digest
    demo = clips_dataset("clips", [{"name": "demo", "path": "builtin:demo", "sha256": "33"}])
    assert demo.source_type == "code" and "builtin:demo" in demo.source
