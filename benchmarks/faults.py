"""The long fault suite: inject faults into real study processes and count what survives.

Prints one row per fault: trials, survived (the study ends intact: one FINISHED parent,
one FINISHED child per condition, nothing RUNNING, the uninterrupted run's metrics), lost
runs and duplicated runs over all trials.

    python benchmarks/faults.py                  # everything (~15 min on 2 cores)
    python benchmarks/faults.py --kills 5        # fewer kill -9 moments

Faults:
  kill -9        SIGKILL at seeded random moments (0–T s into the study), then --resume
  Ctrl-C         SIGINT after the first finished condition (exit 130), then --resume
  server killed  `mlflow server` SIGKILLed mid-study with MLflow's default settings: back
                 after 20 s (the study finishes by itself) or gone (one Error line after
                 --tracking-patience 10, then --resume); also prints the time from the kill
                 to the study's outage line and the bound on trials waiting to be recorded
  vanished       (--vanished-and-ray) the sqlite database file moved away once a condition
                 is recorded and back 20 s after the study said so: time to the outage line,
                 whether an empty database appeared, time from its return to the study's end
  ray outage     (--vanished-and-ray) the same server outage under --executor ray --workers 2
  concurrent     two studies at once on one sqlite store (different experiments)
  inputs         the generated audio files of tests/faults/test_inputs.py: each bad one
                 refused in one line with no run left, each odd-but-legitimate one FINISHED
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "faults")]

import soundfile as sf  # noqa: E402

from harness import (INTERVALS, census, freeze_after_finished, study_cmd,  # noqa: E402
                     wait_for_finished)
from vampstudy.audio import synthesize_demo  # noqa: E402

N = len(INTERVALS)


def _run(cmd, cwd, env=None, timeout=900):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _row(name, results):
    trials = len(results)
    survived = sum(r["intact"] for r in results)
    lost = sum(r["lost"] for r in results)
    dup = sum(r["duplicated"] for r in results)
    return name, trials, survived, lost, dup


def _same_metrics(found: dict, reference: dict, rel: float = 0.0) -> bool:
    """Equal metrics per interval; with ``rel``, audio metrics within that relative error
    (a Ray worker sums float32 with one thread) while token metrics stay exact."""
    if rel == 0.0 or found.keys() != reference.keys():
        return found == reference
    for interval, ref in reference.items():
        got = found[interval]
        if got.keys() != ref.keys() or any(
                got[k] != v if "changed_pct" in k else abs(got[k] - v) > rel * abs(v) + 1e-6
                for k, v in ref.items()):
            return False
    return True


def _outcome(uri, reference, experiment="periodic", rel: float = 0.0):
    found = census(uri, N, experiment)
    return {"intact": found.intact and _same_metrics(found.metrics, reference, rel),
            "lost": found.lost,
            "duplicated": found.duplicated}


def kill9(tmp: Path, audio: str, reference: dict, n: int, span: float) -> list[dict]:
    out = []
    rng = random.Random(0)
    for i in range(n):
        d = tmp / f"kill{i}"
        d.mkdir()
        uri = f"sqlite:///{d / 'mlflow.db'}"
        delay = rng.uniform(0.0, span)
        proc = subprocess.Popen(study_cmd(uri, audio), cwd=d, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = _run(study_cmd(uri, audio, "--resume"), d)
        r = _outcome(uri, reference)
        r["intact"] &= done.returncode == 0
        print(f"  kill -9 at {delay:5.2f} s: resume exit {done.returncode}, "
              f"{'intact' if r['intact'] else 'BROKEN'}", file=sys.stderr)
        out.append(r)
    return out


def ctrl_c(tmp: Path, audio: str, reference: dict, n: int) -> list[dict]:
    out = []
    for i in range(n):
        d = tmp / f"sigint{i}"
        d.mkdir()
        uri = f"sqlite:///{d / 'mlflow.db'}"
        proc = subprocess.Popen(study_cmd(uri, audio), cwd=d, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        wait_for_finished(uri, proc, 1 + i % (N - 1))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate()
        done = _run(study_cmd(uri, audio, "--resume"), d)
        r = _outcome(uri, reference)
        r["intact"] &= proc.returncode in (130, 0) and "Traceback" not in err and done.returncode == 0
        out.append(r)
    return out


def _user_env() -> dict:
    """The environment a user has: none of MLflow's HTTP tuning variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}


class _Watched:
    """A study process whose output lines are kept with their time, and its peak RSS."""

    def __init__(self, cmd, cwd):
        self.proc = subprocess.Popen(cmd, cwd=cwd, env={**_user_env(), "PYTHONUNBUFFERED": "1"},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[tuple[float, str]] = []
        self.peak_rss_mb = 0.0
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._read, self._rss)]
        for t in self._threads:
            t.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def _rss(self):
        while self.proc.poll() is None:
            try:
                for row in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                    if row.startswith("VmRSS:"):
                        self.peak_rss_mb = max(self.peak_rss_mb, int(row.split()[1]) / 1024)
            except OSError:
                pass
            time.sleep(0.1)

    def first(self, needle: str, timeout: float = 900) -> float | None:
        """The time of the first line holding ``needle`` (None if the process ended first)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for t, line in list(self.lines):
                if needle in line:
                    return t
            if self.proc.poll() is not None and not self._threads[0].is_alive():
                return None
            time.sleep(0.05)
        return None

    def wait(self, timeout: float | None = None) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._threads[0].join(30)
        return code


OUTAGE = "the tracking store does not answer since"


def server_killed(tmp: Path, audio: str, reference: dict, n: int,
                  figures: dict | None = None) -> list[dict]:
    """`mlflow server` SIGKILLed mid-study, with MLflow's default settings. Even rounds: it
    is back 20 s after the study said so, and the study must finish by itself (no --resume).
    Odd rounds: it stays away; the study must stop with one line after --tracking-patience
    10, and --resume after a restart completes it."""
    from servers import free_port, start_mlflow_server

    figures = figures if figures is not None else {}
    out = []
    for i in range(n):
        d = tmp / f"server{i}"
        d.mkdir()
        store, artifacts, port = f"sqlite:///{d / 'server.db'}", d / "artifacts", free_port()
        back = i % 2 == 0
        server = start_mlflow_server(store, artifacts, port=port)
        extra = () if back else ("--tracking-patience", "10")
        try:
            study = _Watched(study_cmd(server.url, audio, *extra), d)
            wait_for_finished(server.url, study.proc, 1)
            server.kill()
            killed = time.time()
            said = study.first(OUTAGE)
            if said is not None:
                figures.setdefault("kill → outage line (s)", []).append(said - killed)
            if back and said is not None:
                time.sleep(20)
                server = start_mlflow_server(store, artifacts, port=port)
            code = study.wait()
            ended = time.time()
        finally:
            server.stop()
        text = "\n".join(line for _, line in study.lines)
        errors = [line for _, line in study.lines if line.startswith("Error:")]
        if back:
            figures.setdefault("server back after 20 s: kill → study FINISHED (s)", []).append(
                ended - killed)
            ok = code == 0 and said is not None
            server = start_mlflow_server(store, artifacts, port=port)
        else:
            figures.setdefault("server gone, patience 10 s: kill → Error line (s)", []).append(
                ended - killed)
            ok = code == 1 and len(errors) == 1 and "--resume" in errors[0]
            server = start_mlflow_server(store, artifacts, port=port)
            done = _run(study_cmd(server.url, audio, *extra, "--resume"), d, env=_user_env())
            ok &= done.returncode == 0
        try:
            r = _outcome(server.url, reference)
        finally:
            server.stop()
        r["intact"] &= ok and "Traceback" not in text and "View run" not in text
        if not r["intact"]:
            print(f"  server round {i}: exit {code}\n{text[-2000:]}", file=sys.stderr)
        out.append(r)
    return out


def _freeze_fault_resume(uri: str, study: "_Watched", fault) -> float | None:
    """Once one condition is recorded (the study frozen meanwhile), ``fault()``; the time of
    the fault, or None if the study ended first."""
    if freeze_after_finished(uri, study.proc, 1) < 1:
        return None
    try:
        fault()
        return time.time()
    finally:
        os.kill(study.proc.pid, signal.SIGCONT)


def vanished_sqlite(tmp: Path, audio: str, reference: dict, figures: dict,
                    outage: float = 20.0) -> list[dict]:
    """The sqlite database file moved away (``os.rename``) once one condition is recorded,
    and moved back ``outage`` s after the study said so (or after ``outage`` s if it said
    nothing): the study must say so, create no empty database, and finish by itself."""
    d = tmp / "vanished"
    d.mkdir()
    path, away = d / "mlflow.db", d / "moved-away.db"
    uri = f"sqlite:///{path}"
    study = _Watched(study_cmd(uri, audio), d)
    gone = _freeze_fault_resume(uri, study, lambda: os.rename(path, away))
    said = study.first(OUTAGE, timeout=120) if gone else None
    key = "sqlite file moved away → outage line (s)"
    figures[key] = [said - gone] if said else ["no line within 120 s"]
    created = path.exists()
    figures["sqlite file moved away: empty database created meanwhile"] = [str(created)]
    if gone:
        time.sleep(outage)
        os.rename(away, path)   # back (over an empty database, if one was created)
    back = time.time()
    code = study.wait(timeout=900)
    figures[f"sqlite file back after {outage:.0f} s: back → study ended (s), exit code"] = [
        time.time() - back, code]
    text = "\n".join(line for _, line in study.lines)
    figures["sqlite file moved away: tracebacks on the terminal"] = [text.count("Traceback")]
    r = _outcome(uri, reference)
    r["intact"] &= code == 0 and said is not None and not created and "Traceback" not in text
    if not r["intact"]:
        print(f"  vanished sqlite: exit {code}\n{text[-2000:]}", file=sys.stderr)
    return [r]


def ray_server_killed(tmp: Path, audio: str, reference: dict, figures: dict,
                      outage: float = 20.0) -> list[dict]:
    """``--executor ray --workers 2`` on an `mlflow server` SIGKILLed once one condition is
    recorded, restarted (same port, same store) ``outage`` s after the study said so (or
    after 300 s if it said nothing): the study must say so and finish by itself."""
    from servers import free_port, start_mlflow_server

    d = tmp / "ray"
    d.mkdir()
    store, artifacts, port = f"sqlite:///{d / 'server.db'}", d / "artifacts", free_port()
    server = start_mlflow_server(store, artifacts, port=port)
    try:
        study = _Watched(study_cmd(server.url, audio, "--executor", "ray", "--workers", "2"), d)
        killed = _freeze_fault_resume(store, study, server.kill)
        said = study.first(OUTAGE, timeout=300) if killed else None
        figures["ray workers, server killed → outage line (s)"] = (
            [said - killed] if said else ["no line within 300 s"])
        time.sleep(outage if said else 0)
        server = start_mlflow_server(store, artifacts, port=port)
        back = time.time()
        code = study.wait(timeout=900)
        figures[f"ray workers, server back after {outage:.0f} s: back → study ended (s), "
                "exit code"] = [time.time() - back, code]
        text = "\n".join(line for _, line in study.lines)
        r = _outcome(server.url, reference, rel=1e-4)
    finally:
        server.stop()
    r["intact"] &= code == 0 and said is not None and "Traceback" not in text
    if not r["intact"]:
        print(f"  ray, server killed: exit {code}\n{text[-2000:]}", file=sys.stderr)
    return [r]


def waiting_bound(tmp: Path, audio: str, figures: dict) -> None:
    """24 conditions, the server killed after the first: how many finished trials wait when it
    is back (at most 16, the bound) and the study's peak RSS, against the same study with no
    outage."""
    from servers import free_port, start_mlflow_server

    intervals = tuple(range(2, 26))
    for outage in (False, True):
        d = tmp / f"bound{int(outage)}"
        d.mkdir()
        store, artifacts, port = f"sqlite:///{d / 'server.db'}", d / "artifacts", free_port()
        server = start_mlflow_server(store, artifacts, port=port)
        try:
            study = _Watched(study_cmd(server.url, audio, intervals=intervals), d)
            if outage:
                wait_for_finished(server.url, study.proc, 1)
                server.kill()
                study.first(OUTAGE)
                time.sleep(20)
                server = start_mlflow_server(store, artifacts, port=port)
            code = study.wait()
        finally:
            server.stop()
        label = "with a 20 s outage" if outage else "no outage"
        figures[f"24 conditions, {label}: exit code"] = [code]
        figures[f"24 conditions, {label}: peak RSS (MB)"] = [study.peak_rss_mb]
        for _, line in study.lines:
            if "answers again" in line:
                waiting = int(line.split("recording the ")[1].split()[0])
                key = "24 conditions, 20 s outage: trials waiting when back (bound 16)"
                figures[key] = [waiting]


def concurrent(tmp: Path, audio: str, reference: dict, n: int) -> list[dict]:
    out = []
    for i in range(n):
        d = tmp / f"concurrent{i}"
        d.mkdir()
        uri = f"sqlite:///{d / 'mlflow.db'}"
        procs = [subprocess.Popen(study_cmd(uri, audio, experiment=f"periodic-{k}"), cwd=d,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for k in range(2)]
        codes = [p.wait() for p in procs]
        for k in range(2):
            r = _outcome(uri, reference, f"periodic-{k}")
            r["intact"] &= codes[k] == 0
            out.append(r)
    return out


def bad_inputs(tmp: Path) -> list[dict]:
    """Every generated input of tests/faults/test_inputs.py through `vampstudy run` (a real
    process each): a bad one is refused with one line and no run; a legitimate one finishes."""
    from test_inputs import BAD, LEGIT

    d = tmp / "inputs"
    files = d / "files ✗"
    files.mkdir(parents=True)
    cases = []
    for name, (content, _) in BAD.items():
        path = files / name
        content(path) if callable(content) else path.write_bytes(content)
        cases.append((path, False))
    for name, make in LEGIT.items():
        make(files / name)
        cases.append((files / name, True))
    out = []
    for i, (path, legit) in enumerate(cases):
        uri = f"sqlite:///{d / f'store{i}' / 'mlflow.db'}"
        res = _run(study_cmd(uri, str(path), intervals=(3,), experiment="inputs"), d, timeout=600)
        errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
        clean = "Traceback" not in res.stderr and res.returncode >= 0 and (
            res.returncode == 0 if legit else (res.returncode != 0 and len(errors) == 1))
        found = census(uri, 1, "inputs") if Path(uri[len("sqlite:///"):]).exists() else None
        running = found.running if found else 0
        ok = clean and running == 0 and (found.intact if legit else found is None or found.parents == 0)
        if not ok:
            print(f"  input {path.name}: exit {res.returncode}: {res.stderr[-300:]}", file=sys.stderr)
        out.append({"intact": ok, "lost": 0 if ok or not legit else 1, "duplicated": 0})
    return out


def _all_faults(tmp: Path, audio: str, reference: dict, kills: int, other: int,
                span: float, figures: dict, quick: bool) -> list:
    rows = [_row("kill -9 at a random moment, then --resume",
                 kill9(tmp, audio, reference, kills, span)),
            _row("Ctrl-C (SIGINT), then --resume", ctrl_c(tmp, audio, reference, other)),
            _row("mlflow server killed mid-study: back after 20 s (finishes by itself) "
                 "or gone (one line after the patience, then --resume)",
                 server_killed(tmp, audio, reference, max(other, 2), figures)),
            _row("two studies at once on one sqlite store",
                 concurrent(tmp, audio, reference, other))]
    rows.append(_row("odd or bad audio input (bad: one line, no run; odd: FINISHED)",
                     bad_inputs(tmp)))
    if not quick:
        waiting_bound(tmp, audio, figures)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="3 kills, 1 of each other fault")
    ap.add_argument("--outages", action="store_true",
                    help="only the tracking-server outages and their figures")
    ap.add_argument("--vanished-and-ray", action="store_true",
                    help="only a vanished sqlite file and a server outage under --executor ray")
    args = ap.parse_args()
    kills = 3 if args.quick else args.kills
    other = 1 if args.quick else 3
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        audio = tmp / "clip.wav"
        sf.write(audio, synthesize_demo(duration=3.0, seed=1), 44100, subtype="PCM_16")
        ref = tmp / "reference"
        ref.mkdir()
        uri = f"sqlite:///{ref / 'mlflow.db'}"
        figures: dict = {}
        started = time.time()
        done = _run(study_cmd(uri, str(audio)), ref)
        span = time.time() - started
        if done.returncode != 0:
            sys.exit(f"the uninterrupted study failed:\n{done.stderr[-3000:]}")
        reference = census(uri, N).metrics
        print(f"uninterrupted study: {N} conditions in {span:.1f} s", file=sys.stderr)
        if args.vanished_and_ray:
            rows = [_row("sqlite database file moved away, back after 20 s",
                         vanished_sqlite(tmp, str(audio), reference, figures)),
                    _row("--executor ray: mlflow server killed, back after 20 s",
                         ray_server_killed(tmp, str(audio), reference, figures))]
        elif args.outages:
            rows = [_row("mlflow server killed mid-study: back after 20 s, then gone",
                         server_killed(tmp, str(audio), reference, 2, figures))]
            waiting_bound(tmp, str(audio), figures)
        else:
            rows = _all_faults(tmp, str(audio), reference, kills, other, span, figures,
                               args.quick)
    width = max(len(r[0]) for r in rows)
    print(f"{'fault':<{width}}  trials  survived  lost runs  duplicated runs")
    print(f"{'-' * width}  ------  --------  ---------  ---------------")
    for name, trials, survived, lost, dup in rows:
        print(f"{name:<{width}}  {trials:>6}  {survived:>8}  {lost:>9}  {dup:>15}")
    print(f"\n(each study: periodic, reference backend, {N} intervals on a 3 s clip; "
          f"'lost' and 'duplicated' count condition runs over all trials)")
    print("\ntracking-store outages (MLflow's default HTTP settings):")
    for name, values in figures.items():
        print(f"  {name}: " + ", ".join(f"{v:.1f}" if isinstance(v, float) else str(v)
                                         for v in values))


if __name__ == "__main__":
    main()
