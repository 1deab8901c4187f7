"""The shared check over every registered study, and each built-in study's defining behaviour."""

import math

import pytest
import torch

from studies.codebook_depth import CodebookDepthStudy
from studies.dropout import DropoutStudy
from studies.inpainting import InpaintingStudy
from studies.onset_prompt import OnsetPromptStudy
from studies.prompt_width import PromptWidthStudy
from studies.random_mask import RandomMaskStudy
from studies.sweep import GenericSweepStudy
from studies.temperature import TemperatureStudy, generated_entropy
from vampstudy.errors import ConfigError
from vampstudy.registry import registered
from vampstudy.runner import prepare_clips, run_study

STANDARD_METRICS = {"mask_density", "tokens_changed_pct", "masked_changed_pct", "kept_changed_pct"}


@pytest.fixture(scope="module")
def clip(backend, music_3s):
    return prepare_clips(backend, [str(music_3s)])


def _run(study, backend, tracker, clip, first_only=False, seeds=(0,), controls=False):
    """Run ``study``; without control runs unless asked (each study's behaviour is in its
    conditions; the shared check runs the controls of every masking study)."""
    study.controls = controls
    if first_only:
        conditions = study.iterate()
        study.iterate = lambda: conditions[:1]
    return run_study(study, backend, tracker, clips=clip, seeds=seeds)


BUILTIN = sorted(name for name, entries in registered().items()
                 if entries[0].source.startswith("built-in"))


@pytest.mark.parametrize("name", BUILTIN)
def test_shared_check(name, backend, tracker, clip):
    cls = registered()[name][0].cls
    study = cls()                                   # constructs from defaults
    assert study.iterate(), "iterate() returned no conditions"
    result = _run(study, backend, tracker, clip, first_only=True, controls=True)
    parent = tracker.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert set(study.get_params()) <= set(parent.data.params)
    assert parent.data.params["backend"] == "reference"
    children = tracker.find_runs(result.experiment_id, {"mlflow.parentRunId": result.parent_run_id})
    controls = sorted(c.data.tags.get("vampstudy.control", "") for c in children)
    assert controls == ["", "codec", "noise"], "a masking study gets a codec and a noise control"
    assert {c.info.status for c in children} == {"FINISHED"}
    for c in children:   # (the codec control generates nothing: no masked_changed_pct)
        assert {"mask_density", "tokens_changed_pct", "prompt_bitrate_bps",
                "mel_distance"} <= set(c.data.metrics)
    assert {"fad_mel", "kad_mel"} <= set(tracker.load_table(result.parent_run_id, "summary")[0])
    child = next(c for c in children if "vampstudy.control" not in c.data.tags)
    assert STANDARD_METRICS <= set(child.data.metrics)
    assert {"output_peak", "clipped_pct", "loudness_delta_db"} <= set(child.data.metrics)
    assert {"seed", "backend", "clip"} <= set(child.data.params)
    assert child.data.tags["vampstudy.trial_key"]
    paths = {f.path for f in tracker.client.list_artifacts(child.info.run_id)}
    assert {"audio", "figures", "arrays.npz"} <= paths
    assert "summary.json" in {f.path for f in tracker.client.list_artifacts(result.parent_run_id)}
    assert not result.outcomes[0].trial.condition.control
    assert result.outcomes[0].metrics["kept_changed_pct"] in (0.0,) or math.isnan(
        result.outcomes[0].metrics["kept_changed_pct"])


def _masks(result):
    return {tuple(o.trial.condition.params.values())[0]: torch.as_tensor(o.arrays["mask"])
            for o in result.outcomes}


def test_codebook_depth_masks_every_codebook_at_or_above_k(backend, tracker, clip):
    result = _run(CodebookDepthStudy(depths=(1, 4, 9)), backend, tracker, clip)
    for k, mask in _masks(result).items():
        assert torch.all(mask[:, k:] == 1)
        assert bool((mask[:, :k] == 0).any())
    changed = {o.trial.condition.params["upper_codebook_mask"]: o.metrics["tokens_changed_pct"]
               for o in result.outcomes}
    assert changed[1] > changed[9]  # more prompted codebooks, fewer changes


def test_random_mask_density_follows_intensity(backend, tracker, clip):
    result = _run(RandomMaskStudy(intensities=(0.2, 0.8)), backend, tracker, clip)
    for r, mask in _masks(result).items():
        assert abs(float(mask.float().mean()) - r) < 0.03


def test_inpainting_keeps_both_ends(backend, tracker, clip):
    result = _run(InpaintingStudy(context_s=(0.5,)), backend, tracker, clip)
    o = result.outcomes[0]
    n = math.ceil(0.5 * 44100 / 768)
    mask, codes_in, codes_out = (torch.as_tensor(o.arrays[k]) for k in ("mask", "codes_in", "codes_out"))
    assert torch.all(mask[..., :n] == 0) and torch.all(mask[..., -n:] == 0)
    assert torch.all(mask[..., n:-n] == 1)
    assert torch.equal(codes_out[..., :n], codes_in[..., :n])


def test_prompt_width_keeps_w_steps_per_period(backend, tracker, clip):
    result = _run(PromptWidthStudy(widths=(1, 3, 5), periodic_prompt=13), backend, tracker, clip)
    masks = _masks(result)
    densities = [float(masks[w][:, :3].float().mean()) for w in (1, 3, 5)]
    assert densities[0] > densities[1] > densities[2]
    n_steps = masks[3].shape[-1]
    kept = int((masks[3][0, 0] == 0).sum())
    assert abs(kept - 3 * n_steps / 13) <= 6


def test_dropout_raises_density(backend, tracker, clip):
    result = _run(DropoutStudy(dropouts=(0.0, 0.5)), backend, tracker, clip)
    d = {o.trial.condition.params["_dropout"]: o.metrics["mask_density"] for o in result.outcomes}
    assert d[0.5] > d[0.0] + 0.1


def test_temperature_entropy_rises(backend, tracker, clip):
    result = _run(TemperatureStudy(temperatures=(0.0, 1.5)), backend, tracker, clip)
    h = {o.trial.condition.params["temperature"]: o.metrics["generated_entropy"] for o in result.outcomes}
    assert h[0.0] < h[1.5]


def test_generated_entropy_against_hand_count():
    codes = torch.tensor([[[1, 1, 2, 3], [5, 5, 5, 5]]])
    mask = torch.tensor([[[1, 1, 1, 0], [1, 1, 0, 0]]])
    # codebook 0 generated tokens: 1, 1, 2 -> p = (2/3, 1/3); codebook 1: 5, 5 -> 0
    expected = (-(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3) + 0.0) / 2
    assert generated_entropy(codes, mask) == pytest.approx(expected)


def test_onset_prompt_keeps_steps_around_onsets(backend, tracker, clip):
    import librosa

    result = _run(OnsetPromptStudy(widths=(2,)), backend, tracker, clip)
    mask = torch.as_tensor(result.outcomes[0].arrays["mask"])
    audio = clip[0].signal.audio_data[0, 0].numpy()
    onsets = librosa.onset.onset_detect(y=audio, sr=44100, hop_length=768, backtrack=True)
    assert len(onsets) > 2
    for idx in onsets:
        assert torch.all(mask[0, :3, max(0, idx - 2): idx + 2] == 0)
    kept = set((mask[0, 0] == 0).nonzero().squeeze(1).tolist())
    n_steps = mask.shape[-1]
    near = {t for idx in onsets for t in range(max(0, idx - 2), min(n_steps, idx + 2))}
    assert kept == near


def test_generic_sweep_is_the_cartesian_product(backend, tracker, clip):
    study = GenericSweepStudy(param=("periodic_prompt=3,9", "upper_codebook_mask=1,3"))
    result = _run(study, backend, tracker, clip)
    combos = {(o.trial.condition.params["periodic_prompt"],
               o.trial.condition.params["upper_codebook_mask"]) for o in result.outcomes}
    assert combos == {(3, 1), (3, 3), (9, 1), (9, 3)}
    figures = {f.path for f in tracker.client.list_artifacts(result.parent_run_id, "figures")}
    assert {"figures/heatmap_tokens_changed_pct.png",
            "figures/periodic_prompt_vs_tokens_changed_pct.png",
            "figures/upper_codebook_mask_vs_tokens_changed_pct.png"} <= figures
    notes = tracker.client.download_artifacts(result.parent_run_id, "observations.txt",
                                              str(tracker_dir(tracker)))
    text = open(notes).read()
    assert ("plots of periodic_prompt show the mean over the other swept options: "
            "upper_codebook_mask (2 values)") in text
    assert "plots of upper_codebook_mask show the mean over" in text and text.endswith("\n")


def tracker_dir(tracker):
    import os
    import tempfile

    return tempfile.mkdtemp(dir=os.path.dirname(tracker.uri[len("sqlite:///"):]))


def test_one_axis_sweep_has_no_averaging_note():
    from vampstudy.sweep import averaging_notes

    assert averaging_notes({"temperature": (0.5, 1.0)}) == []
    assert len(averaging_notes({"temperature": (0.5, 1.0), "_dropout": (0.0, 0.2, 0.4)})) == 2


def test_generic_sweep_rejects_bad_specs(backend):
    for spec, needle in [("periodic_prompt", "OPTION=V1"), ("bogus=1,2", "unknown option 'bogus'")]:
        with pytest.raises(ConfigError, match=needle):
            GenericSweepStudy(param=(spec,)).validate(backend)


def test_sweep_cli_takes_repeated_param(tmp_path, monkeypatch, music_3s):
    from click.testing import CliRunner

    from vampstudy.cli import main

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["run", "sweep", "--backend", "reference", "--audio",
                                       str(music_3s), "--param", "periodic_prompt=3,7",
                                       "--param", "temperature=0.5,1.0"])
    assert result.exit_code == 0, result.output
    assert "4 conditions finished" in result.output
