"""`vampstudy check`: the battery passes on the reference backend, and each deliberately
broken test double fails exactly the check that describes its fault."""

import json
import math

import pytest
import torch
from click.testing import CliRunner

from vampstudy.backends.base import Backend
from vampstudy.backends.reference import ReferenceBackend
from vampstudy.backends.vampnet import VampNetBackend
from vampstudy.checks import FAIL, PASS, WARN, format_check_table, overall_status, run_checks
from vampstudy.schedule_checks import schedule_figure, schedule_lines
from vampstudy.cli import main
from vampstudy.runner import prepare_clips


class IgnoresTypicalFiltering(ReferenceBackend):
    """Like VampNet's sampler: computes typical filtering, then throws it away."""

    name = "broken-typical"

    def vamp(self, codes, mask, **kw):
        kw.pop("typical_filtering", None)
        return super().vamp(codes, mask, **kw)


class AltersKeptTokens(ReferenceBackend):
    """Overwrites its prompt: every token of codebook 1 is shifted after sampling."""

    name = "broken-kept"

    def vamp(self, codes, mask, **kw):
        out = super().vamp(codes, mask, **kw)
        if isinstance(out, tuple):
            out = out[0]
        out = out.clone()
        out[:, 1, :] = (out[:, 1, :] + 1) % self.codebook_size
        return out


class BatchSamplesDifferently(ReferenceBackend):
    """A batched call regenerates only part of the masked tokens (a different schedule)."""

    name = "broken-batch"

    def vamp(self, codes, mask, batch_size=1, **kw):
        out = super().vamp(codes, mask, batch_size=batch_size, **kw)
        if batch_size > 1:
            half = torch.zeros_like(out, dtype=torch.bool)
            half[..., ::2] = True
            out = torch.where(half, codes.expand_as(out), out)
        return out


@pytest.fixture(scope="module")
def clip(music_3s):
    return prepare_clips(ReferenceBackend(device="cpu"), [str(music_3s)])[0]


def _failed(rows):
    return {r.check for r in rows if r.status == FAIL}


def test_reference_passes_every_check(clip):
    rows = run_checks(ReferenceBackend(device="cpu"), clip)
    assert _failed(rows) == set(), format_check_table(rows)
    assert overall_status(rows) == PASS
    assert {r.check for r in rows} >= {"prompts kept", "masked regenerated", "same seed",
                                       "different seeds", "option typical_filtering",
                                       "mask density", "sampling schedule", "batch schedule",
                                       "batch equivalence", "round-trip length"}


# ------------------------------------------------------------ sampling schedule
def _rows_by_name(rows):
    return {r.check: r for r in rows}


def _vampnet_double_rows(vampnet_double, clip):
    backend = VampNetBackend(device="cpu", interface=vampnet_double.Interface())
    return _rows_by_name(run_checks(backend, clip, only=["sampling_schedule"]))


def test_schedule_of_the_reference_backend_passes(clip):
    rows = _rows_by_name(run_checks(ReferenceBackend(device="cpu"), clip,
                                    only=["sampling_schedule"]))
    assert rows["sampling schedule"].status == PASS and rows["sampling schedule"].value == 0
    assert rows["batch schedule"].status == PASS, rows["batch schedule"].detail
    alone = rows["sampling schedule"].trace["alone"]
    batched = rows["batch schedule"].trace["batched"]
    assert len(alone) == 2 and batched[0]["batch_size"] == 2
    seg = alone[0]["segments"][0]
    assert len(seg["masked"]) == 12 and seg["final"] == [0]
    n0 = seg["masked"][0][0]
    assert n0 == int(_periodic_mask_count(clip, 3, 10))
    # the printed lines show the same counts for alone and batched
    lines = schedule_lines(list(rows.values()))
    assert any(line.split()[:4] == ["item", "0", "all", "alone"] and line.split()[4] == str(n0)
               for line in lines), lines


def _periodic_mask_count(clip, period, seed):
    backend = ReferenceBackend(device="cpu")
    torch.manual_seed(seed)
    return backend.build_mask(clip.codes, periodic_prompt=period, upper_codebook_mask=3).sum()


def test_vampnet_double_batch_schedule_fails_like_vampnet(vampnet_double, clip):
    """VampNet's generate sums the masked count over the batch: the check must FAIL it."""
    rows = _vampnet_double_rows(vampnet_double, clip)
    assert rows["sampling schedule"].status == PASS, rows["sampling schedule"].detail
    batch = rows["batch schedule"]
    assert batch.status == FAIL
    alone = [call["segments"][0]["masked"] for call in rows["sampling schedule"].trace["alone"]]
    n0, n1 = alone[0][0][0], alone[1][0][0]
    # alone: the cosine rule on the item's own count; batched: on the batch's total, clamped to
    # all-but-one of the item's own, so step 2 starts with n0 - 1 masked
    alone_step2 = alone[0][1][0]
    assert abs(alone_step2 - math.floor(n0 * math.cos(math.pi / 2 / 12))) <= 1  # float32 in VampNet
    batched = rows["batch schedule"].trace["batched"][0]["segments"][0]["masked"]
    assert batched[0] == [n0, n1] and batched[1] == [n0 - 1, n1 - 1]
    assert f"coarse [0:{clip.codes.shape[-1]}] step 2: {n0 - 1} masked in the batched call " \
           f"vs {alone_step2} alone" in batch.detail
    assert f"step 2: {n0 - 1} vs {alone_step2}" in batch.measured


def test_corrected_vampnet_double_passes(vampnet_double, monkeypatch, clip):
    monkeypatch.setattr(vampnet_double, "PER_ITEM_MASK_COUNT", True)
    rows = _vampnet_double_rows(vampnet_double, clip)
    assert rows["sampling schedule"].status == PASS
    assert rows["batch schedule"].status == PASS, rows["batch schedule"].detail


def test_schedule_rule_violation_fails(clip):
    class LinearSchedule(ReferenceBackend):
        """Unmasks on a linear schedule but documents the cosine."""

        def _sample_item(self, z, corpus, todo, n_total, gen, steps, counts, *args):
            for step in range(steps):
                counts.append(int(todo.sum()))
                left = (todo.flatten().nonzero().squeeze(1))
                n_fix = max(1, len(left) - n_total * (steps - step - 1) // steps)
                flat = todo.view(-1)
                flat[left[:n_fix]] = False

    rows = _rows_by_name(run_checks(LinearSchedule(device="cpu"), clip,
                                    only=["sampling_schedule"]))
    rule = rows["sampling schedule"]
    assert rule.status == FAIL and rule.value > 1
    assert "differ from the documented schedule" in rule.detail
    assert rows["batch schedule"].status == PASS


def test_backend_without_tracing_is_a_warning(clip):
    class NoTrace(ReferenceBackend):
        trace_sampling = Backend.trace_sampling

    rows = run_checks(NoTrace(device="cpu"), clip, only=["sampling_schedule"])
    assert [(r.check, r.status, r.measured) for r in rows] == [
        ("sampling schedule", WARN, "not available"), ("batch schedule", WARN, "not available")]
    assert "cannot trace" in rows[0].detail and overall_status(rows) == WARN
    assert schedule_lines(rows) == [] and schedule_figure(rows, "x") is None


def test_schedule_figure_draws_alone_and_batched(vampnet_double, clip):
    rows = list(_vampnet_double_rows(vampnet_double, clip).values())
    fig = schedule_figure(rows, "vampnet")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["coarse (first chunk)", "fine (first chunk)"]
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["item 0 alone", "item 0 in batch of 2", "item 1 alone", "item 1 in batch of 2"]
    batched_y = list(fig.axes[0].get_lines()[1].get_ydata())
    trace = rows[1].trace["batched"][0]["segments"][0]["masked"]
    assert batched_y == [row[0] for row in trace]


@pytest.mark.parametrize("backend_cls,expected,needle", [
    (IgnoresTypicalFiltering, {"option typical_filtering"}, "typical_filtering changes nothing"),
    (AltersKeptTokens, {"prompts kept"}, "overwrote kept tokens on codebooks [1]"),
    (BatchSamplesDifferently, {"batch equivalence"}, "batching is not equivalent"),
])
def test_each_fault_fails_exactly_its_check(clip, backend_cls, expected, needle):
    rows = run_checks(backend_cls(device="cpu"), clip)
    assert _failed(rows) == expected, format_check_table(rows)
    failing = [r for r in rows if r.status == FAIL]
    assert needle in failing[0].detail
    assert overall_status(rows) == FAIL


def test_unaccepted_option_is_a_warning_not_a_failure(clip):
    class NoTopP(ReferenceBackend):
        def vamp(self, codes, mask, top_p=None, **kw):
            if top_p is not None:
                raise TypeError("vamp() got an unexpected keyword argument 'top_p'")
            return super().vamp(codes, mask, **kw)

    rows = run_checks(NoTopP(device="cpu"), clip, only=["option_effects"])
    status = {r.check: r.status for r in rows}
    assert status["option top_p"] == "WARN" and overall_status(rows) == "WARN"


def test_table_fits_80_columns(clip):
    rows = run_checks(BatchSamplesDifferently(device="cpu"), clip)
    text = format_check_table(rows)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "FAIL  batch equivalence" in text


def _install_backend_plugin(site, monkeypatch):
    """A third-party package registering broken-typical under vampstudy.backends."""
    pkg = site / "brokenpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "from vampstudy.backends.reference import ReferenceBackend\n"
        "class Broken(ReferenceBackend):\n"
        "    name = 'broken-typical'\n"
        "    def vamp(self, codes, mask, **kw):\n"
        "        kw.pop('typical_filtering', None)\n"
        "        return super().vamp(codes, mask, **kw)\n")
    info = site / "brokenpkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenpkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vampstudy.backends]\nbroken-typical = brokenpkg:Broken\n")
    monkeypatch.syspath_prepend(str(site))


def test_cli_json_and_exit_codes(tmp_path, monkeypatch, music_3s):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    ok = runner.invoke(main, ["check", "--backend", "reference", "--audio", str(music_3s),
                              "--json"])
    assert ok.exit_code == 0, ok.output
    payload = json.loads(ok.output[ok.output.index("{"):])
    assert payload["status"] == "PASS" and payload["backend"] == "reference"
    assert {"check", "expectation", "measured", "status", "value", "detail"} <= set(payload["checks"][0])
    by_name = {c["check"]: c for c in payload["checks"]}
    alone = by_name["sampling schedule"]["trace"]["alone"]
    batched = by_name["batch schedule"]["trace"]["batched"]
    assert [c["batch_size"] for c in alone] == [1, 1] and batched[0]["batch_size"] == 2
    assert [row[1] for row in batched[0]["segments"][0]["masked"]] == \
        [row[0] for row in alone[1]["segments"][0]["masked"]]
    _install_backend_plugin(tmp_path / "site", monkeypatch)
    bad = runner.invoke(main, ["check", "--backend", "broken-typical", "--audio", str(music_3s)])
    assert bad.exit_code == 1
    assert "FAIL  option" in bad.output and "typical_filtering changes nothing" in bad.output


def test_run_with_check_records_the_verdict(tmp_path, monkeypatch, music_3s):
    from vampstudy.tracking import Tracker

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["run", "periodic", "--backend", "reference", "--audio",
                                  str(music_3s), "--intervals", "4", "--check"])
    assert result.exit_code == 0, result.output
    tracker = Tracker()
    parent = tracker.find_runs(tracker.experiment_id("periodic"), {"vampstudy.role": "study"})[0]
    assert parent.data.tags["vampstudy.last_check"].startswith("PASS (check run ")
    checks = tracker.find_runs(tracker.experiment_id("vampstudy-checks"), {"vampstudy.role": "check"})
    assert len(checks) == 1 and checks[0].data.tags["vampstudy.backend"] == "reference"
    check_id = checks[0].info.run_id
    assert "figures/sampling_schedule.png" in tracker.list_artifacts(check_id, "figures")
    assert "sampling_trace.json" in tracker.list_artifacts(check_id)
    # a later run without --check still records the backend's last verdict
    again = runner.invoke(main, ["run", "periodic", "--backend", "reference", "--audio",
                                 str(music_3s), "--intervals", "5"])
    assert again.exit_code == 0
    newest = tracker.find_runs(tracker.experiment_id("periodic"), {"vampstudy.role": "study"})[0]
    assert newest.data.tags["vampstudy.last_check"] == parent.data.tags["vampstudy.last_check"]


def test_run_with_check_stops_on_failure(tmp_path, monkeypatch, music_3s):
    monkeypatch.chdir(tmp_path)
    _install_backend_plugin(tmp_path / "site", monkeypatch)
    result = CliRunner().invoke(main, ["run", "periodic", "--backend", "broken-typical",
                                       "--audio", str(music_3s), "--check"])
    assert result.exit_code == 1 and "failed `vampstudy check`" in result.output
    from vampstudy.tracking import Tracker

    assert Tracker().experiment_id("periodic", create=False) is None  # no study run was made
