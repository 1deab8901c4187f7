"""Evidence a paper can use: prompt bitrate, controls, embeddings, FAD/KAD per row, the figure."""

from __future__ import annotations

import importlib.util
import math
import sys

import numpy as np
import pytest
import torch

from studies.periodic import PeriodicIntervalStudy
from vampstudy import distribution, embeddings
from vampstudy.metrics import prompt_bitrate_bps
from vampstudy.runner import run_study
from vampstudy.tracking import Tracker

INTERVALS = (2, 50)
SEEDS = [0, 1]


# ------------------------------------------------------------------ bitrate
def test_prompt_bitrate_against_a_hand_count():
    mask = torch.tensor([[[0, 1, 0, 1], [1, 1, 0, 0], [1, 1, 1, 1]]])   # 4 kept of 12
    seconds = 4 * 768 / 44100
    assert prompt_bitrate_bps(mask, 44100, 768, 1024) == pytest.approx(4 / seconds * 10)
    assert prompt_bitrate_bps(mask, 44100, 768, 16) == pytest.approx(4 / seconds * 4)
    full = torch.zeros(1, 14, 575, dtype=torch.long)
    assert prompt_bitrate_bps(full, 44100, 768, 1024) == pytest.approx(14 * 44100 / 768 * 10)
    assert prompt_bitrate_bps(torch.ones_like(full), 44100, 768, 1024) == 0.0


# --------------------------------------------------------------- embeddings
def test_mel_embedding_matches_librosa(music_signal):
    librosa = pytest.importorskip("librosa")
    audio = music_signal.audio_data[0].mean(0).numpy()
    mel = librosa.feature.melspectrogram(y=audio, sr=44100, n_fft=2048, hop_length=1024,
                                         n_mels=64, power=2.0, center=True, pad_mode="constant")
    expected = (10 * np.log10(np.maximum(mel, 1e-8))).T
    got = embeddings.mel_frames(music_signal)
    assert got.shape == expected.shape == (1 + audio.size // 1024, 64)
    assert np.abs(got - expected).max() < 1e-2   # dB


def test_subsample_is_bounded_fixed_and_in_time_order():
    frames = np.arange(1000, dtype=np.float32)[:, None]
    a, b = embeddings.subsample(frames, 200), embeddings.subsample(frames, 200)
    assert a.shape == (200, 1) and np.array_equal(a, b)
    assert np.all(np.diff(a[:, 0]) > 0)
    assert embeddings.subsample(frames[:50], 200).shape == (50, 1)


def test_codec_embedding_of_the_reference_backend_is_its_cepstra(backend, music_signal, codes_3s):
    frames = embeddings.get_embedding("codec").frames(music_signal, backend, max_frames=10 ** 6)
    assert frames.shape == (codes_3s.shape[-1], 80)
    cep = backend.codec.cepstra(backend.preprocess(music_signal).audio_data)[0].T.numpy()
    assert np.allclose(frames, cep)


def test_codec_embedding_of_vampnet_is_the_lac_latent(vampnet_double, music_signal):
    from vampstudy.backends.vampnet import VampNetBackend

    b = VampNetBackend(device="cpu", interface=vampnet_double.Interface())
    frames = embeddings.codec_frames(music_signal, b)
    sig = b.preprocess(music_signal)
    z = b.interface.codec.encode(sig.samples, sig.sample_rate)["z"][0].T.numpy()
    assert frames.shape == z.shape and np.allclose(frames, z)
    assert ("codec.encode", {"sample_rate": 44100}) in vampnet_double.CALLS


def test_missing_optional_embedding_is_one_line_and_the_rest_run(backend):
    if importlib.util.find_spec("laion_clap") is not None:
        pytest.skip("laion-clap is installed here: nothing is missing")
    usable, notes = embeddings.resolve_embeddings(["mel", "clap"], backend)
    assert usable == ["mel"]
    assert len(notes) == 1 and "pip install laion-clap" in notes[0] and "\n" not in notes[0]


def test_unknown_embedding_is_refused(backend):
    from vampstudy.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown embedding 'nope'"):
        embeddings.resolve_embeddings(["nope"], backend)


def test_own_embedding_module_function(tmp_path, monkeypatch, backend, music_signal):
    (tmp_path / "my_embed.py").write_text(
        "import numpy as np\n"
        "def rms(signal, backend):\n"
        "    x = signal.audio_data[0, 0].numpy()\n"
        "    return np.sqrt((x[: len(x) // 512 * 512].reshape(-1, 512) ** 2).mean(1))[:, None]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    usable, notes = embeddings.resolve_embeddings(["my_embed:rms"], backend)
    assert usable == ["my_embed:rms"] and not notes
    frames = embeddings.get_embedding("my_embed:rms").frames(music_signal, backend)
    assert frames.shape == (embeddings.MAX_FRAMES, 1)
    sys.modules.pop("my_embed", None)
    embeddings._LOADED.pop("my_embed:rms", None)


# ------------------------------------------------------------ a real study
@pytest.fixture(scope="module")
def study_run(tmp_path_factory, music_3s):
    """Periodic intervals 2 and 50 on a real 3 s clip, two seeds, controls on (the default)."""
    from vampstudy.backends.reference import ReferenceBackend

    tmp = tmp_path_factory.mktemp("evidence")
    tracker = Tracker(f"sqlite:///{tmp / 'mlflow.db'}")
    result = run_study(PeriodicIntervalStudy(intervals=INTERVALS), ReferenceBackend(device="cpu"),
                       tracker, audio=[str(music_3s)], seeds=SEEDS)
    return tracker, result, tmp


def _children(tracker, result):
    return tracker.find_runs(result.experiment_id, {"mlflow.parentRunId": result.parent_run_id})


def test_controls_are_tagged_child_runs_with_the_right_densities(study_run):
    tracker, result, _ = study_run
    children = _children(tracker, result)
    kinds = [c.data.tags.get("vampstudy.control", "") for c in children]
    assert kinds.count("") == len(INTERVALS) * len(SEEDS)
    assert kinds.count("codec") == 1                           # one per clip
    assert kinds.count("noise") == len(INTERVALS) * len(SEEDS)
    assert {c.info.status for c in children} == {"FINISHED"}
    for c in children:
        assert c.data.tags["vampstudy.role"] == ("control" if "vampstudy.control" in c.data.tags
                                                 else "condition")
    by_name = {o.trial.condition.name + f" {o.trial.seed}": o for o in result.outcomes}
    for p in INTERVALS:
        for seed in SEEDS:
            cond, noise = by_name[f"interval={p} {seed}"], by_name[f"noise interval={p} {seed}"]
            assert np.array_equal(cond.arrays["mask"], noise.arrays["mask"])   # the same mask
            assert noise.params["noise_ratio"] == pytest.approx(cond.metrics["mask_density"], abs=1e-6)
            assert noise.metrics["prompt_bitrate_bps"] == cond.metrics["prompt_bitrate_bps"]
            kept = noise.arrays["mask"] == 0
            assert np.array_equal(noise.arrays["codes_out"][kept], noise.arrays["codes_in"][kept])
            assert noise.metrics["masked_changed_pct"] > 99.0 - 100 / 1024 * 100
    codec = by_name["codec 0"]
    assert codec.metrics["mask_density"] == 0 and codec.metrics["tokens_changed_pct"] == 0
    assert codec.metrics["prompt_bitrate_bps"] == pytest.approx(14 * 44100 / 768 * 10)
    run = next(c for c in children if c.data.tags.get("vampstudy.control") == "noise")
    assert "noise_ratio" in run.data.params and run.data.params["control"] == "noise"


def test_noise_baseline_at_high_density_is_worse_than_the_codec_ceiling(study_run):
    tracker, result, _ = study_run
    rows = {r["condition"]: r for r in tracker.load_table(result.parent_run_id, "summary")}
    noise, codec, cond = rows["noise interval=50"], rows["codec"], rows["interval=50"]
    assert noise["mask_density_mean"] > 0.97
    for metric in ("mel_distance_mean", "fad_mel", "kad_mel"):
        assert noise[metric] > codec[metric], metric
        assert noise[metric] > cond[metric], metric     # the model beats random tokens


def test_summary_has_condition_control_fad_and_kad_columns(study_run):
    tracker, result, _ = study_run
    rows = tracker.load_table(result.parent_run_id, "summary")
    labels = [r["condition"] for r in rows]
    assert labels == ["interval=2", "interval=50", "codec", "noise interval=2", "noise interval=50"]
    assert [r["control"] or "" for r in rows] == ["", "", "codec", "noise", "noise"]
    for r in rows:
        for col in ("fad_mel", "kad_mel", "prompt_bitrate_bps_mean"):
            assert np.isfinite(r[col]), (r["condition"], col)
    dist_rows = tracker.load_table(result.parent_run_id, "distribution")
    assert {(d["condition"], d["metric"]) for d in dist_rows} == {
        (label, m) for label in labels for m in ("fad", "kad")}
    assert all(d["n_outputs"] == (1 if d["condition"] == "codec" else 2) for d in dist_rows)
    assert all("one clip" in d["warning"] for d in dist_rows)   # one clip: no interval


def test_controls_are_out_of_neighbour_comparisons_and_in_noise_comparisons(study_run):
    tracker, result, _ = study_run
    paired = tracker.load_table(result.parent_run_id, "paired_comparisons")
    assert [(r["a"], r["b"]) for r in paired] == [("interval=2", "interval=50")]
    versus = tracker.load_table(result.parent_run_id, "noise_comparisons")
    assert {(r["a"], r["b"]) for r in versus} == {(f"interval={p}", f"noise interval={p}")
                                                  for p in INTERVALS}
    assert all(r["mean_diff"] > 0 for r in versus)


def test_numbers_are_recomputable_from_the_logged_embeddings(study_run):
    tracker, result, tmp = study_run
    parent = tracker.get_run(result.parent_run_id)
    path = tracker.download(result.parent_run_id, "embeddings/mel.npz", str(tmp / "dl"))
    saved = np.load(path)
    bandwidth = float(parent.data.params["kad_mel_bandwidth"])
    assert bandwidth == pytest.approx(distribution.median_bandwidth(saved["reference"]), rel=1e-5)
    rows = tracker.load_table(result.parent_run_id, "summary")
    for r in rows:
        frames = saved[r["condition"]]
        assert frames.shape[1] == embeddings.MEL_BANDS
        assert r["fad_mel"] == pytest.approx(distribution.fad(saved["reference"], frames), rel=1e-5)
        assert r["kad_mel"] == pytest.approx(distribution.kad(saved["reference"], frames, bandwidth),
                                             rel=1e-4)
    assert "figures/bitrate_vs_quality.png" in {
        f.path for f in tracker.client.list_artifacts(result.parent_run_id, "figures")}


def test_listening_report_lists_the_controls(study_run):
    tracker, result, tmp = study_run
    html = open(tracker.download(result.parent_run_id, "report.html", str(tmp / "r"))).read()
    assert "noise interval=50" in html and "codec" in html


def test_no_controls_leaves_the_run_layout_as_before(backend, tracker, music_3s):
    study = PeriodicIntervalStudy(intervals=INTERVALS)
    study.controls = False
    assert "controls" not in study.run_options()
    result = run_study(study, backend, tracker, audio=[str(music_3s)])
    children = _children(tracker, result)
    assert sorted(c.info.run_name for c in children) == [f"interval={p}" for p in INTERVALS]
    assert not any("vampstudy.control" in c.data.tags for c in children)
    assert {c.data.tags["vampstudy.role"] for c in children} == {"condition"}
    assert all("control" not in c.data.params for c in children)
    rows = tracker.load_table(result.parent_run_id, "summary")
    assert [r["condition"] for r in rows] == [f"interval={p}" for p in INTERVALS]
    assert not any(isinstance(r.get("control"), str) and r["control"] for r in rows)


def test_plan_puts_controls_after_the_conditions(backend, music_3s):
    from vampstudy.plan import plan_study
    from vampstudy.runner import prepare_clips

    clips = prepare_clips(backend, [str(music_3s)])
    study = PeriodicIntervalStudy(intervals=INTERVALS)
    on = plan_study(study, backend, clips, SEEDS, now=0)
    study.controls = False
    off = plan_study(study, backend, clips, SEEDS, now=0)
    n = len(off.trials)
    assert [t.run_name for t in on.trials[:n]] == [t.run_name for t in off.trials]
    assert [t.run_name for t in on.trials[n:]] == [
        "codec seed=0", "noise interval=2 seed=0", "noise interval=2 seed=1",
        "noise interval=50 seed=0", "noise interval=50 seed=1"]
    assert len({t.key for t in on.trials}) == len(on.trials)
    assert on.config_hash != off.config_hash
    assert math.isclose(len(on.trials), n + 1 + n)
