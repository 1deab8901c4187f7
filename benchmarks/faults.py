"""The long fault suite: inject faults into real study processes and count what survives.

Prints one row per fault: trials, survived (the study ends intact: one FINISHED parent,
one FINISHED child per condition, nothing RUNNING, the uninterrupted run's metrics), lost
runs and duplicated runs over all trials.

    python benchmarks/faults.py                  # everything (~15 min on 2 cores)
    python benchmarks/faults.py --kills 5        # fewer kill -9 moments

Faults:
  kill -9        SIGKILL at seeded random moments (0–T s into the study), then --resume
  Ctrl-C         SIGINT after the first finished condition (exit 130), then --resume
  server killed  `mlflow server` SIGKILLed mid-study, restarted, then --resume
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "faults")]

import soundfile as sf  # noqa: E402

from harness import INTERVALS, census, study_cmd, wait_for_finished  # noqa: E402
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


def _outcome(uri, reference, experiment="periodic"):
    found = census(uri, N, experiment)
    return {"intact": found.intact and found.metrics == reference, "lost": found.lost,
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


def server_killed(tmp: Path, audio: str, reference: dict, n: int) -> list[dict]:
    from servers import start_mlflow_server

    env = dict(os.environ, MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_TIMEOUT="10",
               MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1")
    out = []
    for i in range(n):
        d = tmp / f"server{i}"
        d.mkdir()
        store, artifacts = f"sqlite:///{d / 'server.db'}", d / "artifacts"
        server = start_mlflow_server(store, artifacts)
        try:
            proc = subprocess.Popen(study_cmd(server.url, audio), cwd=d, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            wait_for_finished(server.url, proc, 1 + i % (N - 1))
            server.kill()
            _, err = proc.communicate()
        finally:
            server.stop()
        one_line = proc.returncode == 1 and "Traceback" not in err
        server = start_mlflow_server(store, artifacts)
        try:
            done = _run(study_cmd(server.url, audio, "--resume"), d, env=env)
            r = _outcome(server.url, reference)
        finally:
            server.stop()
        r["intact"] &= one_line and done.returncode == 0
        out.append(r)
    return out


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="3 kills, 1 of each other fault")
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
        started = time.time()
        done = _run(study_cmd(uri, str(audio)), ref)
        span = time.time() - started
        if done.returncode != 0:
            sys.exit(f"the uninterrupted study failed:\n{done.stderr[-3000:]}")
        reference = census(uri, N).metrics
        print(f"uninterrupted study: {N} conditions in {span:.1f} s", file=sys.stderr)
        rows = [_row("kill -9 at a random moment, then --resume",
                     kill9(tmp, str(audio), reference, kills, span)),
                _row("Ctrl-C (SIGINT), then --resume", ctrl_c(tmp, str(audio), reference, other)),
                _row("mlflow server killed mid-study, restarted, --resume",
                     server_killed(tmp, str(audio), reference, other)),
                _row("two studies at once on one sqlite store",
                     concurrent(tmp, str(audio), reference, other))]
        rows.append(_row("odd or bad audio input (bad: one line, no run; odd: FINISHED)",
                         bad_inputs(tmp)))
    width = max(len(r[0]) for r in rows)
    print(f"{'fault':<{width}}  trials  survived  lost runs  duplicated runs")
    print(f"{'-' * width}  ------  --------  ---------  ---------------")
    for name, trials, survived, lost, dup in rows:
        print(f"{name:<{width}}  {trials:>6}  {survived:>8}  {lost:>9}  {dup:>15}")
    print(f"\n(each study: periodic, reference backend, {N} intervals on a 3 s clip; "
          f"'lost' and 'duplicated' count condition runs over all trials)")


if __name__ == "__main__":
    main()
