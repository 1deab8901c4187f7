"""The printed URL in a real browser: headless Chromium (Debian package) driven by Playwright.

Starts ``vampstudy ui`` on a finished periodic study (all 11 intervals, a
short clip) in a temporary store, opens the URL it prints and checks —
without any clicks — that the runs table shows the key params and metrics
columns with every condition, and that the key chart plots every interval.
A second check opens ``report.html`` in the run's artifact pane at
Playwright's default window (1280 × 720) and finds nothing cut off.
Screenshots are saved under pytest's temporary folder.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

from tests.chromium import launch, sync_api as playwright  # skips the module without them

from studies.periodic import NOTEBOOK_INTERVALS, PeriodicIntervalStudy  # noqa: E402
from vampstudy import sharedviews, views  # noqa: E402
from vampstudy.audio import synthesize_demo  # noqa: E402
from vampstudy.runner import run_study  # noqa: E402
from vampstudy.tracking import Tracker  # noqa: E402

#: The UI is slow to render on a loaded machine; these are upper bounds, not targets.
LOAD_TIMEOUT_MS = 240_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def study(tmp_path_factory, backend):
    root = tmp_path_factory.mktemp("browser")
    clip = root / "clip.wav"
    sf.write(clip, synthesize_demo(1.0, seed=3), 44100)
    tracker = Tracker(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    study = PeriodicIntervalStudy()
    study.controls = False   # the view of the 11 conditions (controls: tests/test_views.py)
    result = run_study(study, backend, tracker, audio=[str(clip)], seeds=[0])  # saves the view
    assert sharedviews.latest_view(tracker, result.experiment_id) == views.view_key(result.parent_run_id)
    return tracker, result, root


@pytest.fixture(scope="module")
def ui_url(study):
    """``vampstudy ui`` on the study's store; yields the URL it prints."""
    tracker, _, root = study
    port = _free_port()
    exe = Path(sys.executable).with_name("vampstudy")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "vampstudy.cli"]
    proc = subprocess.Popen(cmd + ["ui", "--tracking-uri", tracker.uri, "--port", str(port)],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    url, seen = None, []
    try:
        deadline = time.time() + 180
        while time.time() < deadline and url is None:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            seen.append(line)
            m = re.search(r"open (http://\S+)", line)
            url = m.group(1) if m else None
        assert url, "vampstudy ui printed no URL:\n" + "".join(seen)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = launch(p, "--no-sandbox")
        yield b
        b.close()


def _save(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path))
    if os.environ.get("VAMPSTUDY_SCREENSHOTS"):   # a folder to copy them to (README images)
        shutil.copy(path, Path(os.environ["VAMPSTUDY_SCREENSHOTS"]) / name)
    return path


def test_printed_url_opens_the_configured_runs_table(study, ui_url, browser, tmp_path):
    _, result, _ = study
    assert "viewStateShareKey=" in ui_url
    # wide enough that the grid renders every column (it draws only the visible ones)
    page = browser.new_page(viewport={"width": 2400, "height": 1000})
    page.goto(ui_url)
    try:
        page.get_by_text("interval=100", exact=True).first.wait_for(timeout=LOAD_TIMEOUT_MS)
    finally:
        page.wait_for_timeout(1500)
        _save(page, tmp_path, "runs-table.png")
    headers = page.eval_on_selector_all(".ag-header-cell", "els => els.map(e => e.getAttribute('col-id') + '|' + e.innerText)")
    text = " ".join(headers)
    for name in ("interval", "interval_ms", "tokens_changed_pct", "mask_density", "mel_distance"):
        assert re.search(rf"\b{name}\b", text), f"no column {name!r} in {headers}"
    names = page.eval_on_selector_all("a", "els => els.map(e => e.textContent)")
    shown = [int(m.group(1)) for n in names
             if (m := re.fullmatch(r"interval=(\d+)(?: seed=0)?", n.strip()))]
    assert shown == sorted(NOTEBOOK_INTERVALS), f"conditions shown, in order: {shown}"


def test_printed_url_charts_every_interval(study, ui_url, browser, tmp_path):
    tracker, result, _ = study
    key = views.view_key(result.parent_run_id)
    url = sharedviews.ui_url(result.experiment_id, *ui_url.split("//")[1].split("/")[0].split(":"),
                             view_key=key, charts=True)
    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    page.goto(url)
    try:
        page.wait_for_selector(".js-plotly-plot", timeout=LOAD_TIMEOUT_MS)
    finally:
        page.wait_for_timeout(3000)
        _save(page, tmp_path, "runs-chart.png")
    # the first chart of the key section: one marker per condition run (11), none hidden
    points = page.evaluate("""() => {
        const plots = [...document.querySelectorAll('.js-plotly-plot')];
        return plots.map(p => (p.data || []).map(t => (t.x || []).length)
                                              .reduce((a, b) => a + b, 0));
    }""")
    assert points and points[0] == len(NOTEBOOK_INTERVALS), f"points per chart: {points}"
    xs = page.evaluate("""() => {
        const p = document.querySelector('.js-plotly-plot');
        return (p.data || []).flatMap(t => t.x || []).map(Number).sort((a, b) => a - b);
    }""")
    assert xs == sorted(NOTEBOOK_INTERVALS)


def test_report_html_fits_the_artifact_pane(study, ui_url, browser, tmp_path):
    _, result, _ = study
    base = ui_url.split("#")[0]
    page = browser.new_page()   # Playwright's default window: 1280 x 720
    page.goto(f"{base}#/experiments/{result.experiment_id}/runs/{result.parent_run_id}"
              "/artifacts/report.html")
    try:
        frame_el = page.wait_for_selector("iframe", timeout=LOAD_TIMEOUT_MS)
        frame = frame_el.content_frame()
        frame.wait_for_selector("h1", timeout=LOAD_TIMEOUT_MS)
    finally:
        page.wait_for_timeout(1500)
        _save(page, tmp_path, "report-pane.png")
    pane = frame_el.bounding_box()
    assert pane["width"] < 1000                     # it is the narrow pane, not the window
    widths = frame.evaluate("""() => ({scroll: document.documentElement.scrollWidth,
                                       client: document.documentElement.clientWidth})""")
    assert widths["scroll"] <= widths["client"], f"report cut off in the pane: {widths}"
    players = frame.eval_on_selector_all("audio", "els => els.length")
    assert players == 1 + len(NOTEBOOK_INTERVALS)
