"""The listening test in a real browser: headless Chromium (Debian package) driven by Playwright,
with simulated raters, against ``vampstudy listen`` on a finished tiny study.

Checks: the AudioContext runs; blinding (no condition name in the DOM or any response); the
gating of "Next"; switching keeps the playhead (same sources, no restart) and loops < 0.5 s are
refused; a rater resumes after the server is killed and restarted; two raters at once are
attributed correctly; ratings, screening and metrics land on the study's runs.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.chromium import launch, sync_api as playwright  # skips the module without them

from tests.listen_raters import ratings as oracle  # noqa: E402
from vampstudy.listen import design as dz  # noqa: E402

#: Upper bounds for a loaded machine, not targets.
TIMEOUT_MS = 60_000
SECRETS = ("interval", "hidden_reference", "anchor", "3k5", "7k", "condition")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ListenServer:
    """``vampstudy listen`` as a subprocess in its own process group (killable, restartable)."""

    def __init__(self, tracker, run_id: str, state_dir: Path, cwd: Path, design: str = "mushra"):
        self.tracker, self.run_id, self.state_dir, self.cwd = tracker, run_id, state_dir, cwd
        self.design_name = design
        self.port, self.proc, self.url = _free_port(), None, None

    def start(self) -> str:
        exe = Path(sys.executable).with_name("vampstudy")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "vampstudy.cli"]
        self.proc = subprocess.Popen(
            cmd + ["listen", self.run_id, "--tracking-uri", self.tracker.uri, "--port",
                   str(self.port), "--state-dir", str(self.state_dir), "--design", self.design_name],
            cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        seen = []
        for line in self.proc.stdout:
            seen.append(line)
            m = re.search(r"open (http://\S+)", line)
            if m:
                self.url = m.group(1)
                return self.url
        raise AssertionError("vampstudy listen printed no URL:\n" + "".join(seen))

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=60)

    @property
    def design(self) -> dict:
        return json.loads((self.state_dir / "design.json").read_text())


@pytest.fixture(scope="module")
def server(listen_study, tmp_path_factory):
    tracker, run_id, root = listen_study
    srv = ListenServer(tracker, run_id, tmp_path_factory.mktemp("listen-state"), root)
    srv.start()
    yield srv
    srv.kill(signal.SIGTERM)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = launch(p, "--autoplay-policy=no-user-gesture-required")
        yield b
        b.close()


def _open(browser, server, rater: str):
    page = browser.new_context().new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url)
    page.get_by_role("textbox", name="Rater ID").fill(rater)
    page.get_by_role("button", name="Start").click()
    page.wait_for_function("vampListen.ready === true")
    return page


def _trial_id(page) -> str:
    return page.evaluate("vampListen.trial.trial_id")


def _rate_trial(page, design: dict, rater: str) -> None:
    """Play every stimulus, set the oracle's scores, press Next; wait for the next page."""
    trial_id = _trial_id(page)
    for letter, score in oracle(design, rater, trial_id).items():
        page.get_by_role("button", name=f"Play {letter}", exact=True).click()
        page.get_by_role("slider", name=f"Rating for {letter}").fill(str(score))
    page.get_by_role("button", name="Next").click()
    _wait_next(page, trial_id)


def _wait_next(page, trial_id: str) -> None:
    """Wait until the page shows the trial after ``trial_id`` (or the last page), fully built."""
    page.wait_for_function("id => vampListen.ready && (vampListen.trial.done || "
                           "vampListen.trial.trial_id !== id)", arg=trial_id)


def _rate_all(page, design: dict, rater: str) -> None:
    while page.get_by_text("Thank you").count() == 0 or not page.get_by_text("Thank you").is_visible():
        _rate_trial(page, design, rater)


def _ratings(server, tmp_path) -> list[dict]:
    local = server.tracker.download(server.run_id, "listening/ratings.csv", str(tmp_path))
    return list(csv.DictReader(Path(local).read_text().splitlines()))


def test_audio_runs_and_nothing_names_a_condition(browser, server):
    page = browser.new_context().new_page()
    page.set_default_timeout(TIMEOUT_MS)
    seen = []

    def keep(response):
        kind = response.headers.get("content-type", "")
        seen.append(response.url + ("" if "audio" in kind else response.text()))
    page.on("response", keep)
    page.goto(server.url)
    page.get_by_role("textbox", name="Rater ID").fill("blind")
    page.get_by_role("button", name="Start").click()
    page.wait_for_function("vampListen.ready === true")
    assert page.evaluate("vampListen.ctx.state") == "running"
    t0 = page.evaluate("vampListen.ctx.currentTime")
    page.wait_for_function("t => vampListen.ctx.currentTime > t + 0.05", arg=t0)
    dom = [page.content()]
    design = server.design
    while not page.get_by_text("Thank you").is_visible():
        _rate_trial(page, design, "blind")
        dom.append(page.content())
    run_ids = [r for c in design["conditions"] for r in c["run_ids"]]
    everything = "\n".join(seen + dom)
    assert any("/audio/" in s for s in seen) and any("/api/submit" in s for s in seen)
    for secret in (*SECRETS, *run_ids, *(c["condition"] for c in design["conditions"])):
        assert secret not in everything, secret
    page.context.close()


def test_next_is_gated_and_the_page_is_keyboard_operable(browser, server):
    page = _open(browser, server, "gate")
    letters = [s["label"] for s in page.evaluate("vampListen.trial.stimuli")]
    nxt = page.get_by_role("button", name="Next")
    assert nxt.is_disabled()
    assert page.get_by_role("slider", name="Rating for A").is_disabled()
    for letter in letters:                      # keyboard: a letter key plays that stimulus
        page.keyboard.press(letter.lower())
    assert page.get_by_role("slider", name="Rating for A").is_enabled()
    assert nxt.is_disabled()                    # played, not yet rated
    for letter in letters[:-1]:
        page.get_by_role("slider", name=f"Rating for {letter}").focus()
        page.keyboard.press("ArrowUp")
    assert nxt.is_disabled()                    # one slider not moved
    page.get_by_role("slider", name=f"Rating for {letters[-1]}").focus()
    page.keyboard.press("ArrowDown")
    assert nxt.is_enabled()
    nxt.focus()
    page.keyboard.press("Enter")
    page.wait_for_function("vampListen.ready && !vampListen.trial.training")
    page.context.close()


def test_switching_keeps_the_playhead_and_loops_are_at_least_half_a_second(browser, server):
    page = _open(browser, server, "sync")
    page.get_by_role("button", name="Play A", exact=True).click()
    page.wait_for_function("vampListen.startedAt !== null && "
                           "vampListen.ctx.currentTime > vampListen.startedAt + 0.1")
    before = page.evaluate("""() => { const s = vampListen;
        window.__sources = Object.assign({}, s.sources);
        return {ph: s.playhead(), t: s.ctx.currentTime, start: s.startedAt}; }""")
    page.get_by_role("button", name="Play B", exact=True).click()
    after = page.evaluate("""() => { const s = vampListen;
        const same = Object.keys(window.__sources).every(k => window.__sources[k] === s.sources[k]);
        return {ph: s.playhead(), t: s.ctx.currentTime, start: s.startedAt, same,
                active: s.active}; }""")
    assert after["same"] and after["start"] == before["start"] and after["active"] == "B"
    length = page.evaluate("vampListen.loop[1] - vampListen.loop[0]")
    drift = ((after["ph"] - before["ph"]) - (after["t"] - before["t"])) % length
    assert min(drift, length - drift) < 0.020
    page.wait_for_function("vampListen.gains.B.gain.value > 0.999 && "
                           "vampListen.gains.A.gain.value < 0.001")
    page.get_by_label("to (s)").fill("0.3")
    page.get_by_label("to (s)").dispatch_event("change")
    assert "at least 0.5 s" in page.locator("#loop-message").inner_text()
    assert page.evaluate("vampListen.loop[1]") > 0.9
    page.get_by_label("to (s)").fill("0.8")
    page.get_by_label("to (s)").dispatch_event("change")
    assert page.evaluate("vampListen.loop") == [0, 0.8]
    page.wait_for_function("vampListen.startedAt !== null && vampListen.playhead() < 0.8 && "
                           "vampListen.ctx.currentTime > vampListen.startedAt + 0.9")
    assert page.evaluate("vampListen.playhead()") < 0.8
    page.context.close()


def test_a_rater_resumes_after_the_server_is_killed(browser, server, tmp_path):
    design = server.design
    page = _open(browser, server, "resume")
    _rate_trial(page, design, "resume")                  # training
    _rate_trial(page, design, "resume")                  # first real trial
    second = _trial_id(page)
    page.get_by_role("button", name="Play A", exact=True).click()
    page.get_by_role("slider", name="Rating for A").fill("42")
    server.kill()                                         # SIGKILL: no shutdown code runs
    server.start()
    page.reload()
    page.wait_for_function("vampListen.ready === true")
    assert _trial_id(page) == second
    assert page.get_by_role("slider", name="Rating for A").input_value() == "42"
    _rate_all(page, design, "resume")
    rows = [r for r in _ratings(server, tmp_path) if r["rater_id"] == "resume"]
    assert len(rows) == 3 * 6
    assert len({(r["trial_id"], r["letter"]) for r in rows}) == len(rows)
    again = page.request.post(server.url.rstrip("/") + "/api/submit", data=json.dumps(
        {"rater_id": "resume", "trial_id": second, "ratings": {
            k: {"score": 1} for k in oracle(design, "resume", second)}}),
        headers={"Content-Type": "application/json"})
    assert again.ok and again.json()["done"]
    assert len([r for r in _ratings(server, tmp_path) if r["rater_id"] == "resume"]) == 18
    page.context.close()


def test_two_raters_at_once_are_attributed_and_screened(browser, server, tmp_path):
    design = server.design
    pages = {r: _open(browser, server, r) for r in ("duo-ann", "careless-duo")}
    while any(not p.get_by_text("Thank you").is_visible() for p in pages.values()):
        for rater, page in pages.items():              # interleaved, trial by trial
            if not page.get_by_text("Thank you").is_visible():
                _rate_trial(page, design, rater)
    rows = _ratings(server, tmp_path)
    for rater in pages:
        mine = [r for r in rows if r["rater_id"] == rater]
        assert len(mine) == 18
        for r in mine:
            assert float(r["score"]) == oracle(design, rater, r["trial_id"])[r["letter"]]
    screening = json.loads(Path(server.tracker.download(
        server.run_id, "listening/screening.json", str(tmp_path))).read_text())
    assert "careless-duo" in screening["excluded"] and "duo-ann" in screening["retained"]
    kept = [r for r in rows if r["rater_id"] in screening["retained"] and r["training"] == "False"]
    for cond in design["conditions"]:
        mean = np.mean([float(r["score"]) for r in kept if r["condition"] == cond["condition"]])
        for run_id in cond["run_ids"]:
            assert server.tracker.get_run(run_id).data.metrics["listen_mean"] == pytest.approx(mean)
    for page in pages.values():
        page.context.close()


def test_ab_preference_page(browser, listen_study, tmp_path):
    tracker, run_id, root = listen_study
    srv = ListenServer(tracker, run_id, tmp_path / "ab", root, design="ab")
    srv.start()
    try:
        page = _open(browser, srv, "abby")
        assert page.get_by_role("button", name="Play reference").is_hidden()
        assert page.get_by_role("slider").count() == 0
        nxt = page.get_by_role("button", name="Next")
        while not page.get_by_text("Thank you").is_visible():
            trial_id = _trial_id(page)
            assert page.get_by_role("radio", name="Prefer A").is_disabled()
            page.get_by_role("button", name="Play A", exact=True).click()
            page.get_by_role("button", name="Play B", exact=True).click()
            page.get_by_role("radio", name="Prefer B").check()
            assert nxt.is_enabled()
            nxt.click()
            _wait_next(page, trial_id)
        rows = [r for r in _ratings(srv, tmp_path) if r["rater_id"] == "abby"]
        assert len(rows) == 5 * 2               # training + 2 items x 2 neighbouring pairs
        assert [float(r["score"]) for r in rows if r["letter"] == "B"] == [100.0] * 5
        assert [float(r["score"]) for r in rows if r["letter"] == "A"] == [0.0] * 5
        page.context.close()
    finally:
        srv.kill(signal.SIGTERM)
