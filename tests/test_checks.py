"""`vampstudy check`: the battery passes on the reference backend, and each deliberately
broken test double fails exactly the check that describes its fault."""

import json

import pytest
import torch
from click.testing import CliRunner

from vampstudy.backends.reference import ReferenceBackend
from vampstudy.checks import FAIL, PASS, format_check_table, overall_status, run_checks
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
                                       "mask density", "batch equivalence", "round-trip length"}


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
