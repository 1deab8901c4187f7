"""A listening test of a finished study, without a browser: stimuli, journal, resume, and the
ratings, screening, summary and metrics it leaves on the study's runs (real MLflow)."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from scipy import stats as sps

from tests.listen_raters import ratings as oracle
from vampstudy import sharedviews, views
from vampstudy.cli import main
from vampstudy.listen import design as dz
from vampstudy.listen import stimuli
from vampstudy.listen.build import build_test
from vampstudy.listen.server import ListeningTest

RATERS = ("alice", "bob", "careless-carl")
CONDITION_NAMES = ("interval=3", "interval=7", "interval=20")


def _artifact(tracker, run_id: str, path: str, tmp_path) -> str:
    return Path(tracker.download(run_id, path, str(tmp_path))).read_text()


@pytest.fixture(scope="module")
def built(listen_study, tmp_path_factory):
    tracker, run_id, _ = listen_study
    return build_test(tracker, run_id, "mushra", tmp_path_factory.mktemp("state"))


def _rate_all(state: ListeningTest, rater: str) -> dict:
    nxt = state.next_trial(rater)
    while not nxt["done"]:
        nxt = state.submit(rater, nxt["trial_id"], {k: {"score": v, "plays": 1, "listen_ms": 500}
                                                    for k, v in oracle(state.design, rater,
                                                                       nxt["trial_id"]).items()})
    return nxt


def test_stimuli_are_excerpts_matched_in_loudness_with_low_pass_anchors(built):
    design = built.design
    assert [c["condition"] for c in design["conditions"]] == list(CONDITION_NAMES)
    assert [i["item"] for i in design["items"]] == ["clip/seed0", "clip/seed1"]
    assert not design["blocked"] and len(design["trials"]) == 2
    for item in design["items"]:
        signals = {}
        for name in design["stimulus_files"]:
            x, sr = sf.read(built.stimulus_path(item["item"], name))
            signals[name] = x
            assert len(x) / sr <= stimuli.MAX_EXCERPT_S and x.ndim == 1
            assert stimuli.loudness_lufs(x, sr) == pytest.approx(design["loudness_lufs"], abs=0.3)
        assert len({len(x) for x in signals.values()}) == 1
        for role, cutoff in ((dz.ANCHOR_3K5, 3500), (dz.ANCHOR_7K, 7000)):
            spec = np.abs(np.fft.rfft(signals[role])) ** 2
            ref = np.abs(np.fft.rfft(signals[dz.HIDDEN_REFERENCE])) ** 2
            freqs = np.fft.rfftfreq(len(signals[role]), 1 / sr)
            above = freqs > cutoff * 1.3
            assert spec[above].sum() < 1e-3 * ref[above].sum()


def test_long_clips_are_cut_to_the_excerpt_length(listen_study, tmp_path):
    tracker, run_id, _ = listen_study
    test = build_test(tracker, run_id, "mushra", tmp_path, max_seconds=0.4)
    x, sr = sf.read(test.stimulus_path("clip/seed1", "interval=7"))
    assert len(x) == int(0.4 * sr) and test.design["excerpt_s"] == pytest.approx(0.4, abs=1e-3)


def test_payloads_name_no_condition(built, listen_study):
    tracker, _, _ = listen_study
    state = ListeningTest(built, tracker)
    text = json.dumps([state.next_trial(r) for r in RATERS])
    run_ids = [rid for c in built.design["conditions"] for rid in c["run_ids"]]
    for secret in (*CONDITION_NAMES, "interval", *dz.ROLES, "anchor", "hidden", *run_ids):
        assert secret not in text
    assert state.next_trial("alice")["trial_id"] == dz.TRAINING


def test_ratings_screening_summary_and_metrics_land_on_the_runs(built, listen_study, tmp_path):
    tracker, run_id, _ = listen_study
    state = ListeningTest(built, tracker)
    for rater in RATERS:
        assert _rate_all(state, rater)["done"]
    rows = list(csv.DictReader(_artifact(tracker, run_id, "listening/ratings.csv", tmp_path)
                               .splitlines()))
    assert {"rater_id", "trial_id", "item", "condition", "role", "score", "training", "plays",
            "listen_ms"} <= set(rows[0])
    assert len(rows) == len(RATERS) * 3 * 6      # training + 2 trials, 6 stimuli each
    for row in rows:                              # attribution: the oracle's score, per letter
        expected = oracle(built.design, row["rater_id"], row["trial_id"])[row["letter"]]
        assert float(row["score"]) == expected
        assert row["role"] == dz.role_of(row["condition"])
        assert dz.rater_order(built.design, row["rater_id"])[int(row["position"])] == row["trial_id"]
    screening = json.loads(_artifact(tracker, run_id, "listening/screening.json", tmp_path))
    assert list(screening["excluded"]) == ["careless-carl"]
    assert (screening["n_before"], screening["n_after"]) == (3, 2)
    summary = json.loads(_artifact(tracker, run_id, "listening/summary.json", tmp_path))
    assert "listening/boxplot.png" in tracker.list_artifacts(run_id, "listening")
    assert json.loads(_artifact(tracker, run_id, "listening/design.json", tmp_path))["trials"]
    for cond in built.design["conditions"]:
        kept = [float(r["score"]) for r in rows if r["condition"] == cond["condition"]
                and r["training"] == "False" and r["rater_id"] != "careless-carl"]
        lo, hi = sps.t.interval(0.95, len(kept) - 1, loc=np.mean(kept), scale=sps.sem(kept))
        for child in cond["run_ids"]:
            m = tracker.get_run(child).data.metrics
            assert m["listen_mean"] == pytest.approx(np.mean(kept))
            assert m["listen_ci95"] == pytest.approx((hi - lo) / 2)
            assert m["listen_n"] == len(kept) == 4
        row = next(r for r in summary["conditions"] if r["condition"] == cond["condition"])
        assert row["mean"] == pytest.approx(np.mean(kept))
    view = sharedviews.load_view(tracker, tracker.get_run(run_id).info.experiment_id,
                                 views.view_key(run_id))
    assert "metrics.`listen_mean`" in view["selectedColumns"]


def test_duplicates_and_restarts_change_nothing(built, listen_study, tmp_path):
    tracker, run_id, _ = listen_study
    state = ListeningTest(built, tracker)
    first = state.next_trial("dora")
    state.submit("dora", first["trial_id"], {k: {"score": v} for k, v in
                                             oracle(built.design, "dora", first["trial_id"]).items()})
    again = state.submit("dora", first["trial_id"], {k: {"score": 0} for k in
                                                     oracle(built.design, "dora", first["trial_id"])})
    n = len(state.journal.records())
    restarted = ListeningTest(built, tracker)           # a new server process on the same folder
    assert restarted.next_trial("dora")["trial_id"] == again["trial_id"] != first["trial_id"]
    assert len(restarted.journal.records()) == n
    dora = [r for r in restarted.journal.rows() if r["rater_id"] == "dora"]
    assert len(dora) == 6 and all(r["score"] != 0 or r["role"] != dz.HIDDEN_REFERENCE for r in dora)
    with pytest.raises(ValueError, match="letters"):
        restarted.submit("dora", again["trial_id"], {"A": {"score": 50}})
    restarted.close()
    metrics = {c: tracker.get_run(c).data.metrics["listen_mean"]
               for cond in built.design["conditions"] for c in cond["run_ids"]}
    restarted.close()                                     # analysing again changes nothing
    assert metrics == {c: tracker.get_run(c).data.metrics["listen_mean"] for c in metrics}


def test_show_prints_the_listening_table_and_analyse_runs_without_a_server(listen_study, built):
    tracker, run_id, _ = listen_study
    _rate_all(ListeningTest(built, tracker), "hal")
    runner = CliRunner()
    out = runner.invoke(main, ["listen", run_id, "--tracking-uri", tracker.uri, "--state-dir",
                               str(built.state_dir), "--analyse"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(main, ["show", run_id, "--tracking-uri", tracker.uri])
    assert out.exit_code == 0, out.output
    assert "listening test (mushra" in out.output
    table = out.output.split("listening test", 1)[1]
    assert all(name in table for name in ("hidden_reference", "interval=7", "anchor_3k5"))
    assert re.search(r"Friedman chi2\(2\) = [\d.]+, p = ", table)
    assert "interval=3 vs interval=7" in table


def test_unknown_design_is_one_clear_error(listen_study):
    tracker, run_id, _ = listen_study
    out = CliRunner().invoke(main, ["listen", run_id, "--tracking-uri", tracker.uri,
                                    "--design", "abx"])
    assert out.exit_code == 2 and "--design" in out.output


def test_other_host_needs_the_printed_token(listen_study, built):
    tracker, run_id, root = listen_study
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("vampstudy")
    proc = subprocess.Popen([str(exe), "listen", run_id, "--tracking-uri", tracker.uri,
                             "--state-dir", str(built.state_dir), "--host", "127.0.0.2",
                             "--port", str(port)], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url = None
        for line in proc.stdout:
            m = re.search(r"open (http://\S+)", line)
            if m:
                url = m.group(1)
                break
        assert url and "?token=" in url
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url.split("?")[0], timeout=30)
        assert err.value.code == 403
        assert urllib.request.urlopen(url, timeout=30).status == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def test_noref_and_ab_designs(listen_study, tmp_path):
    tracker, run_id, _ = listen_study
    noref = ListeningTest(build_test(tracker, run_id, "mushra-noref", tmp_path / "noref"), tracker)
    first = noref.next_trial("erin")
    assert first["reference"] is None and len(first["stimuli"]) == 6
    ab = ListeningTest(build_test(tracker, run_id, "ab", tmp_path / "ab"), tracker)
    trial = ab.next_trial("erin")
    assert trial["kind"] == "ab" and [s["label"] for s in trial["stimuli"]] == ["A", "B"]
    assert trial["reference"] is None
    # erin prefers the smaller interval in every pair: its preference share is highest
    nxt = trial
    while not nxt["done"]:
        mapping = dz.trial_letters(ab.design, "erin", dz.trial_by_id(ab.design, nxt["trial_id"]))
        best = min(mapping, key=lambda k: int(mapping[k].split("=")[1]))
        nxt = ab.submit("erin", nxt["trial_id"], {k: {"score": 100 if k == best else 0}
                                                  for k in mapping})
    from vampstudy.listen.results import analyse

    screening, summary = analyse(ab.journal.rows(), ab.design)
    shares = {c["condition"]: c["mean"] for c in summary["conditions"]}
    assert shares == {"interval=3": 100.0, "interval=7": 50.0, "interval=20": 0.0}
    assert screening["excluded"] == {} and summary["friedman"] is None


class _FlakyStore:
    """The real tracker, except that its batched writes fail while ``down`` (a store outage)."""

    def __init__(self, tracker):
        self.tracker, self.down = tracker, True

    def __getattr__(self, name):
        return getattr(self.tracker, name)

    def log_run_batch(self, *args, **kwargs):
        if self.down:
            raise ConnectionError("tracking store unreachable")
        return self.tracker.log_run_batch(*args, **kwargs)


def test_a_store_outage_loses_no_rating(built, listen_study, tmp_path):
    tracker, run_id, _ = listen_study
    store = _FlakyStore(tracker)
    state = ListeningTest(built, store)
    first = state.next_trial("fay")
    ratings = {k: {"score": v} for k, v in oracle(built.design, "fay", first["trial_id"]).items()}
    with pytest.raises(ConnectionError):
        state.submit("fay", first["trial_id"], ratings)
    assert state.journal.done("fay") == {first["trial_id"]}      # kept locally
    store.down = False
    nxt = state.submit("fay", first["trial_id"], ratings)         # the page retries
    assert nxt["trial_id"] != first["trial_id"]
    rows = list(csv.DictReader(_artifact(tracker, run_id, "listening/ratings.csv", tmp_path)
                               .splitlines()))
    assert len([r for r in rows if r["rater_id"] == "fay"]) == 6


def test_more_conditions_than_a_trial_holds_make_blocks(listen_study, tmp_path):
    tracker, run_id, _ = listen_study
    test = build_test(tracker, run_id, "mushra", tmp_path, max_conditions=2)
    design = test.design
    assert design["blocked"] and design["blocks"] == [["interval=3", "interval=7"], ["interval=20"]]
    assert len(design["trials"]) == 4 and all(len(t["stimuli"]) <= 5 for t in design["trials"])
    state = ListeningTest(test, tracker)
    _rate_all(state, "gil")
    rows = [r for r in state.journal.rows() if not r["training"]]
    refs = [r for r in rows if r["role"] == dz.HIDDEN_REFERENCE]
    assert len(refs) == 4 and len({r["item"] for r in refs}) == 2    # heard once per block
    from vampstudy.listen.results import analyse

    _, summary = analyse(state.journal.rows(), design)
    ref = next(c for c in summary["conditions"] if c["condition"] == dz.HIDDEN_REFERENCE)
    assert ref["n"] == 2                                               # one item score per item


def test_an_unfinished_study_is_refused(listen_study, tmp_path):
    tracker, run_id, _ = listen_study
    from vampstudy.errors import VampstudyError

    tracker.client.update_run(run_id, status="RUNNING")
    try:
        with pytest.raises(VampstudyError, match="not FINISHED"):
            build_test(tracker, run_id, "mushra", tmp_path)
    finally:
        tracker.client.update_run(run_id, status="FINISHED")


def test_a_control_run_with_one_seed_serves_every_item_of_its_clip(tracker):
    from vampstudy.layout import TAG_CONDITION, TAG_ORDER
    from vampstudy.listen.build import TAG_CONTROL, collect_sources, study_children

    exp = tracker.experiment_id("controls")
    parent = tracker.start_run(exp, "study", {"vampstudy.role": "study"})
    specs = [({"interval": 3}, 0, ""), ({"interval": 3}, 1, ""), ({"control": "codec"}, 0, "codec")]
    for order, (params, seed, control) in enumerate(specs):
        tags = {"vampstudy.role": "condition", TAG_CONDITION: json.dumps(params), TAG_ORDER: order}
        if control:
            tags[TAG_CONTROL] = control
        child = tracker.start_run(exp, f"c{order}", tags, parent_id=parent)
        tracker.log_params(child, {"clip": "song", "seed": seed})
        tracker.finish(child)
    children = study_children(tracker, tracker.get_run(parent))
    items, conditions, runs = collect_sources(children)
    assert [c["condition"] for c in conditions] == ["interval=3", "control=codec"]
    assert [c["kind"] for c in conditions] == ["condition", "control"]
    codec = conditions[1]["run_ids"][0]
    assert runs[("song/seed0", "control=codec")] == runs[("song/seed1", "control=codec")] == codec
    assert runs[("song/seed0", "interval=3")] != runs[("song/seed1", "interval=3")]
