"""MaskingStudy.mask: a study's own mask reaches vamp, the metrics and the artifacts; bad masks
fail their trial (and only it) before the model is called; the guide's example runs."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from studies.anchored_periodic import AnchoredPeriodicStudy
from studies.periodic import PeriodicIntervalStudy
from vampstudy import Condition, MaskingStudy
from vampstudy.backends.reference import ReferenceBackend
from vampstudy.execute import seed_everything
from vampstudy.masks import keep_either, keep_prefix
from vampstudy.record import TAG_ERROR
from vampstudy.runner import StudyFailed, prepare_clips, run_study
from vampstudy.study import Trial
from vampstudy.tracking import TAG_PARENT, TAG_ROLE, Tracker

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "writing-a-study.md"
EXAMPLE = Path(__file__).resolve().parents[1] / "studies" / "anchored_periodic.py"


@pytest.fixture(scope="module")
def clip(backend, music_3s):
    return prepare_clips(backend, [str(music_3s)])


def anchored_by_hand(n_codebooks: int, n_steps: int, period: int) -> torch.Tensor:
    """Codebook 0 kept, codebooks 1-2 kept at steps j % period == 0, the rest generated."""
    mask = np.ones((1, n_codebooks, n_steps), dtype=np.int64)
    mask[0, 0, :] = 0
    for cb in (1, 2):
        for j in range(0, n_steps, period):
            mask[0, cb, j] = 0
    return torch.from_numpy(mask)


def children(tracker, parent_id):
    """The condition runs of a study (its control runs, role ``control``, aside)."""
    exp = tracker.get_run(parent_id).info.experiment_id
    return tracker.find_runs(exp, {TAG_PARENT: parent_id, TAG_ROLE: "condition"})


# ------------------------------------------------------------- the example
def test_the_guide_shows_the_example_study_the_suite_runs():
    guide = GUIDE.read_text()
    assert "## A mask of your own" in guide
    code = EXAMPLE.read_text()
    body = code[code.index("from vampstudy import"):].strip()
    assert body in guide, "docs/writing-a-study.md must show studies/anchored_periodic.py verbatim"


def test_vampstudy_list_shows_the_example(cli):
    out = cli("list").output
    assert re.search(r"anchored-periodic\s.*keep codebook 0 everywhere", out), out


def test_example_end_to_end_through_the_cli(cli, music_3s, tmp_path):
    """`vampstudy run anchored-periodic`: the logged mask is the study's own, kept positions
    are unchanged, every standard metric, figure and artifact is there."""
    result = cli("run", "anchored-periodic", "--backend", "reference", "--device", "cpu",
                 "--audio", str(music_3s), "--periods", "4,9")
    assert result.exit_code == 0, result.output
    tracker = Tracker()
    exp = tracker.experiment_id("anchored-periodic", create=False)
    (parent,) = tracker.find_runs(exp, {TAG_ROLE: "study"})
    assert parent.info.status == "FINISHED"
    kids = children(tracker, parent.info.run_id)
    assert sorted(int(k.data.params["period"]) for k in kids) == [4, 9]
    backend = ReferenceBackend(device="cpu")
    (prepared,) = prepare_clips(backend, [str(music_3s)])
    study = AnchoredPeriodicStudy(periods=(4, 9))
    for kid in kids:
        period = int(kid.data.params["period"])
        arrays = tracker.load_arrays(kid.info.run_id, str(tmp_path / kid.info.run_id))
        mask, codes_in, codes_out = (torch.from_numpy(arrays[k]) for k in ("mask", "codes_in", "codes_out"))
        trial = Trial(Condition({"period": period}), prepared, seed=0)
        seed_everything(0)
        assert torch.equal(mask, study.mask(trial, backend).cpu())              # the study's mask
        assert torch.equal(mask, anchored_by_hand(14, mask.shape[-1], period))   # and the intended one
        kept = mask == 0
        assert torch.equal(codes_out[kept], codes_in[kept])                     # prompt untouched
        assert bool((codes_out[~kept] != codes_in[~kept]).any())                 # the rest generated
        n = mask.shape[-1]
        density = 2 * (n - math.ceil(n / period)) / (3 * n)     # codebooks 0-2: 0 + 2 × periodic
        assert kid.data.metrics["mask_density"] == pytest.approx(density, abs=1e-9)
        assert kid.data.metrics["kept_changed_pct"] == 0.0
        assert {"tokens_changed_pct", "masked_changed_pct", "mel_distance"} <= set(kid.data.metrics)
        assert {"figures/mask.png", "figures/spectrogram.png"} <= set(
            tracker.list_artifacts(kid.info.run_id, "figures"))
        assert "audio/output.wav" in tracker.list_artifacts(kid.info.run_id, "audio")
    assert "summary.json" in tracker.list_artifacts(parent.info.run_id)


def test_custom_mask_gives_the_same_results_on_every_local_executor(backend, tracker, clip):
    study = AnchoredPeriodicStudy(periods=(5,))
    study.fidelity = False                                   # token results are what differ
    runs = {name: run_study(study, backend, tracker, clips=clip, seeds=(0, 1), executor=name,
                            experiment=name)
            for name in ("sequential", "pipelined")}
    for ours, theirs in zip(runs["pipelined"].outcomes, runs["sequential"].outcomes, strict=True):
        assert ours.trial.key == theirs.trial.key
        assert np.array_equal(ours.arrays["mask"], theirs.arrays["mask"])
        assert np.array_equal(ours.arrays["codes_out"], theirs.arrays["codes_out"])
        np.testing.assert_equal(ours.metrics, theirs.metrics)   # (NaN: the codec control's)


def test_default_mask_is_build_mask_of_the_resolved_condition(backend, clip):
    study = PeriodicIntervalStudy(intervals=(5,), dropout=0.2)
    trial = Trial(Condition({"interval": 5}), clip[0], seed=3)
    seed_everything(3)
    ours = study.mask(trial, backend)
    seed_everything(3)
    theirs = backend.build_mask(clip[0].codes, clip[0].signal, periodic_prompt=5,
                                upper_codebook_mask=3, _dropout=0.2)
    assert torch.equal(ours, theirs)


# ----------------------------------------------------------------- bad masks
BAD = {
    "shape": lambda c: torch.ones(1, c.shape[1], c.shape[2] - 1, dtype=torch.long),
    "two": lambda c: torch.full_like(c, 2),
    "minus_one": lambda c: -torch.ones_like(c),
    "float": lambda c: torch.ones(c.shape),
    "bool": lambda c: torch.ones(c.shape, dtype=torch.bool),
    "device": lambda c: torch.ones(c.shape, dtype=torch.long, device="meta"),
}
SAYS = {"shape": "shape (1, 14, ", "two": "holding [2]", "minus_one": "holding [-1]",
        "float": "dtype torch.float32", "bool": "dtype torch.bool", "device": "device meta"}


class BadMaskStudy(MaskingStudy):
    """Every kind of bad mask, and one good one built on the default mask."""

    name = "bad-masks"
    fidelity = False

    def __init__(self, kinds: tuple[str, ...] = (*BAD, "good")):
        self.kinds = kinds

    def iterate(self):
        return [Condition({"kind": k}) for k in self.kinds]

    def mask(self, trial, backend):
        kind = trial.condition.params["kind"]
        if kind == "good":
            return keep_either(super().mask(trial, backend), keep_prefix(trial.clip.codes, 5))
        return BAD[kind](trial.clip.codes)


class CountingBackend(ReferenceBackend):
    """The reference backend, remembering the masks it was asked to vamp with."""

    def __init__(self, **options):
        super().__init__(**options)
        self.masks = []

    def vamp(self, codes, mask, **options):
        self.masks.append(mask.clone())
        return super().vamp(codes, mask, **options)


def test_bad_masks_fail_their_trial_before_the_model_and_the_others_run(tracker, clip, tmp_path):
    backend = CountingBackend(device="cpu")
    with pytest.raises(StudyFailed) as info:
        run_study(BadMaskStudy(), backend, tracker, clips=clip)
    result = info.value.result
    assert len(backend.masks) == 1                                  # only the good trial vamped
    kids = {k.data.params["kind"]: k for k in children(tracker, result.parent_run_id)}
    assert {k: r.info.status for k, r in kids.items()} == {**{k: "FAILED" for k in BAD},
                                                          "good": "FINISHED"}
    shape = tuple(clip[0].codes.shape)
    for kind, says in SAYS.items():
        error = kids[kind].data.tags[TAG_ERROR]
        assert "\n" not in error and error.startswith(
            f"MaskError: BadMaskStudy.mask() of study 'bad-masks' for trial 'kind={kind}' "
            f"(clip 'music', seed 0) returned")
        assert says in error and f"shaped like the codes {shape} on cpu" in error
        text = Path(tracker.client.download_artifacts(kids[kind].info.run_id, "traceback.txt",
                                                      str(tmp_path))).read_text()
        assert "Traceback" in text and "vampstudy.errors.MaskError" in text
    # the good one: the default mask (periodic 7, codebooks >= 3 generated) plus a kept prefix
    good = torch.from_numpy(tracker.load_arrays(kids["good"].info.run_id, str(tmp_path / "g"))["mask"])
    assert torch.equal(good, backend.masks[0])
    assert torch.all(good[..., :5] == 0) and torch.all(good[:, 3:, 5:] == 1)
    assert kids["good"].data.metrics["kept_changed_pct"] == 0.0
    assert tracker.get_run(result.parent_run_id).info.status == "FAILED"
