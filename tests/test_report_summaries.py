"""Summaries that tell the truth: per-clip beat intervals, the compact terminal table, texts."""

import math
import tempfile
from pathlib import Path

import pytest
import soundfile as sf

from studies.periodic import PeriodicIntervalStudy
from vampstudy.audio import synthesize_demo
from vampstudy.report import compact_columns, format_table, legend
from vampstudy.runner import run_study


def test_compact_table_keeps_custom_metrics_and_lists_short_names():
    rows = [{"interval": p, "interval_tokens": p, "interval_ms": p * 17.4, "expected_density": 0.5,
             "n": 3, "mask_density_mean": 0.5, "tokens_changed_pct_mean": 90.0,
             "tokens_changed_pct_ci95": 1.0, "masked_changed_pct_mean": 95.0,
             "kept_changed_pct_mean": 0.0, "mel_distance_mean": 3.0,
             "chroma_similarity_mean": 0.8, "onset_correlation_mean": 0.3,
             "tempo_difference_bpm_mean": 1.0, "continuation_changed_pct_mean": 12.5,
             "continuation_changed_pct_std": 1.0} for p in (2, 13, 100)]
    table = format_table(compact_columns(rows), max_width=120, drop_empty=True)
    header = table.splitlines()[0].split()
    assert all(len(line) <= 120 for line in table.splitlines())
    assert "continuatio~" in header                      # the custom metric survived the width
    text = legend(rows, [{k: None for k in header}])
    assert "continuatio~ = continuation_changed_pct" in text.replace("\n  ", " ")
    assert "changed% = tokens_changed_pct" in text
    assert "_std" not in text


def test_beat_summary_per_clip_and_observations_newline(tracker, backend, tmp_path):
    clips = []
    for bpm in (120.0, 90.0):
        path = tmp_path / f"at{int(bpm)}.wav"
        sf.write(path, synthesize_demo(5.0, seed=2, bpm=bpm), 44100)
        clips.append(str(path))
    study = PeriodicIntervalStudy(intervals=("beat", 7))
    result = run_study(study, backend, tracker, audio=clips)
    rows = tracker.load_table(result.parent_run_id, "summary_by_clip")
    beat = {r["clip"]: r for r in rows if r.get("interval") == "beat" and not r["control"]}
    assert set(beat) == {"at120", "at90"}
    tokens = {o.trial.clip.name: int(o.params["interval_tokens"]) for o in result.outcomes
              if o.trial.condition.params.get("interval") == "beat"}   # (noise controls too)
    assert tokens["at120"] != tokens["at90"]              # tempo differs, so does the beat
    for clip, row in beat.items():
        assert row["interval_tokens"] == tokens[clip]     # each clip its own, not the first's
        ms = tokens[clip] * 1000 * backend.hop_length / backend.sample_rate
        assert abs(row["interval_ms"] - ms) < 0.1
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tracker.download(result.parent_run_id, "observations.txt", tmp)).read_text()
    assert text.endswith("\n") and not text.endswith("\n\n")


@pytest.mark.parametrize("x, y", [
    ([2, 3, 5, 7, 10, 13, 20], [78.8, 80.8, 81.8, 87.6, 90.6, 91.9, 94.4]),   # monotone
    ([1, 2, 3, 4, 5, 6], [3.0, 1.0, 4.0, 1.0, 5.0, 9.0]),                       # ties in y
    ([1, 1, 2, 2, 3, 3, 4], [0.5, 0.2, 0.9, 0.9, 0.1, 0.3, 0.7]),               # ties in both
    ([5, 4, 3, 2, 1], [1, 2, 3, 4, 5]),                                          # reversed
])
def test_spearman_matches_scipy(x, y):
    from scipy import stats

    from vampstudy.summary import spearman

    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_spearman_undefined_is_nan():
    from vampstudy.summary import spearman

    assert math.isnan(spearman([1, 2], [3, 4]))           # too few points
    assert math.isnan(spearman([1, 2, 3], [7, 7, 7]))     # constant side
