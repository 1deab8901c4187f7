"""Throughput of a study against the bare model loop, as whole processes (issue 11).

Every figure is measured on a child process started from here — interpreter
start-up and imports included — with its wall clock, its CPU time (user +
system) and its peak RSS (from ``os.wait4``'s resource usage of that child).
Prints a table of figure, goal and verdict; no asserts. The goals are about
wall time; CPU time is shown beside it because it is far less disturbed by
other processes on a shared machine.

Rows
----
* ``study / bare wall`` — ``vampstudy run periodic --backend reference`` on the
  built-in demo clip (the 11 notebook intervals, seed 0) against the *bare
  loop*: the same model work as a plain script (:func:`bare_loop` below: load
  the backend, preprocess, encode once, then per interval build_mask + vamp +
  decode). Goal <= 1.3. The study logs to a sqlite store that exists already, as a
  researcher's ``mlruns/mlflow.db`` does after their first study: creating a new
  store (MLflow's schema migrations, once per store) is timed on its own row.
* ``study / bare peak RSS`` — the same two processes. Goal <= 1.3.
  The study runs with ``--no-controls`` (the bare loop's model work: the 11 intervals);
  the study with its default control runs is shown in a row of its own.
* ``... 3 seeds`` — the same pair with ``--seeds 0,1,2`` (33 trials): how the
  fixed costs (imports, opening the store, the analysis) amortise over a larger
  study. Shown, no goal.
* ``latency-bound model`` — the same pair, 3 seeds, with the ``sleepy-test`` backend
  (:class:`vampstudy.testing.SleepyBackend`: each vamp sleeps 0.5 s and releases the
  GIL, as a GPU model's call waits on the device; NOT a model), the study (without
  control runs: the same 33 calls as the bare loop) under the process (default),
  pipelined and sequential executors: what moving the measurement off the model's
  path gives. Goal for ``process``: <= 1.15x the bare loop (issue 19).
* ``cost per audio second`` for 10, 60, 120 and 600 s clips — the study with 3
  intervals on a synthesised clip of that length (written as a WAV). The
  figure is the study's own wall time (the parent run's ``wall_seconds``
  metric: loading, encoding, every condition, analysis, logging; without
  interpreter start-up and imports, which do not depend on the clip length)
  divided by the clip length; the whole-process wall is shown beside it.
  Goal: 600 s within 1.5x of 10 s.
* ``peak RSS, 120 s clip`` — the 120 s run above. Goal <= 2 GB.
* ``vampstudy --help`` — median wall of 5 runs. Goal <= 1 s.

Usage::

    python benchmarks/bench_throughput.py                 # everything (600 s may take minutes)
    python benchmarks/bench_throughput.py --quick         # without the 600 s clip
    python benchmarks/bench_throughput.py --only help,ratio
    python benchmarks/bench_throughput.py --only lengths --lengths 10,60

* ``growth`` — memory growth with trials (issue 19): the study with a near-free test
  backend (``instant-test``, :class:`vampstudy.testing.InstantBackend`; NOT a model) on a
  real 10 s clip (fuel_2.wav, mono, repeated to 10 s), 11 intervals × 2 seeds against
  × 20 seeds: the growth of the peak **tree PSS** (goal <= 100 MB). In the same runs, the
  time from starting the process to its first model call, study against the bare loop
  (goal <= bare + 0.5 s), and the study's own phase figures (``phase_*_s``).
  ``--executor process,pipelined`` gives one growth row per executor. Beside the tree PSS
  it prints the tree's anonymous + shared-memory PSS (``Pss_Anon + Pss_Shmem``): the heap
  without the libraries' file pages, whose share in PSS moves with how many other
  processes on the machine map the same torch libraries.

Memory is measured two ways: the child's own peak RSS (``os.wait4``) and the peak of its
whole process tree's PSS, the sum of ``Pss`` in /proc/PID/smaps_rollup over the child
and all its descendants, sampled every 0.15 s (pages shared between processes count once).

``--only`` takes any of ``help``, ``ratio``, ``seeds``, ``latency``, ``lengths``, ``growth``. Run it on an idle
machine: other processes on the same cores change every figure.
"""

from __future__ import annotations

# Only the standard library at module level: this file is also the bare loop's
# child process, whose imports are part of what is measured.
import argparse
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NOTEBOOK_INTERVALS = (2, 3, 5, 7, 10, 13, 20, 30, 50, 70, 100)
LENGTH_INTERVALS = (3, 7, 30)
LENGTHS_S = (10, 60, 120, 600)
GB = 1024 ** 3


# --------------------------------------------------------------- bare loop
def bare_loop(audio: str | None, intervals: tuple[int, ...], seeds: tuple[int, ...] = (0,),
              backend_name: str = "reference") -> None:
    """The model's work in a study, and nothing else (run in a child process)."""
    import torch

    from vampstudy.audio import demo_clip, load_clip
    from vampstudy.backends import load_backend

    backend = load_backend(backend_name, device="cpu")
    clip = load_clip(audio) if audio else demo_clip()
    signal = backend.preprocess(clip.signal)
    codes = backend.encode(signal)
    for p, seed in ((p, s) for p in intervals for s in seeds):
        torch.manual_seed(seed)
        mask = backend.build_mask(codes, signal, periodic_prompt=p, upper_codebook_mask=3,
                                  _dropout=0.0)
        out = backend.vamp(codes, mask, seed=seed, temperature=1.0, typical_filtering=True,
                           _sampling_steps=12, batch_size=1)
        backend.decode(out)


# ------------------------------------------------------------ measuring
@dataclass
class Measured:
    wall_s: float
    cpu_s: float           # user + system CPU seconds of the child and its children
    peak_rss: int          # bytes
    rc: int
    out: str
    peak_pss: int = 0      # bytes: the largest sampled PSS of the child's whole process tree
    first_vamp_s: float | None = None   # start of the child → its first model call
    peak_pss_anon: int = 0  # bytes: the same for Pss_Anon + Pss_Shmem (no library pages)


#: Seconds between two samples of a child's process-tree PSS.
PSS_INTERVAL_S = 0.15


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from each process' parent in /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def tree_pss(pid: int, fields: tuple[str, ...] = ("Pss:",)) -> int:
    """Proportional set size of ``pid``'s process tree in bytes: the sum of ``Pss`` in each
    process' /proc/PID/smaps_rollup (a page shared by n processes counts 1/n in each, so
    the sum counts it once). 0 where /proc has no smaps_rollup (not Linux).

    ``fields=ANON_FIELDS`` sums the anonymous and shared-memory part only: the heap, not
    the libraries' file pages, whose share depends on how many *other* processes on the
    machine map the same torch libraries (noise on a shared machine)."""
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith(fields):
                        total += int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):   # gone meanwhile, or not readable
            continue
    return total


#: smaps_rollup fields of a process' own heap and shared memory (Linux >= 5.x).
ANON_FIELDS = ("Pss_Anon:", "Pss_Shmem:")


#: Extra environment of every child (``--threads`` sets the math libraries' thread counts).
CHILD_ENV: dict[str, str] = {}


def measure(cmd: list[str], cwd: str | None = None, timeout: float | None = None) -> Measured:
    """Run ``cmd`` as a child; its wall clock, its own peak RSS (``os.wait4``), the peak of
    its process tree's PSS (sampled every :data:`PSS_INTERVAL_S`) and, for the test
    backends, the time from starting it to its first model call
    (:data:`vampstudy.testing.FIRST_VAMP_ENV`)."""
    stamp = tempfile.NamedTemporaryFile(prefix="first-vamp-", delete=False)
    stamp.close()
    os.unlink(stamp.name)
    env = dict(os.environ, PYTHONWARNINGS="ignore", VAMPSTUDY_TEST_FIRST_VAMP_FILE=stamp.name,
               **CHILD_ENV)
    started_at = time.time()
    start = time.perf_counter()
    peak_pss, peak_anon, next_sample = 0, 0, start
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = None if timeout is None else start + timeout
        timed_out = False
        while True:
            if time.perf_counter() >= next_sample:
                peak_pss = max(peak_pss, tree_pss(proc.pid))
                peak_anon = max(peak_anon, tree_pss(proc.pid, ANON_FIELDS))
                next_sample = time.perf_counter() + PSS_INTERVAL_S
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                timed_out = True
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        out = log.read()
    first = None
    if os.path.exists(stamp.name):
        with open(stamp.name) as f:
            first = float(f.read()) - started_at
        os.unlink(stamp.name)
    return Measured(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024,
                    124 if timed_out else proc.returncode, out, peak_pss, first, peak_anon)


def vampstudy_cmd() -> list[str]:
    script = Path(sys.executable).with_name("vampstudy")
    return [str(script)] if script.exists() else [sys.executable, "-m", "vampstudy.cli"]


def run_study(workdir: Path, extra: list[str], timeout: float | None,
              backend: str = "reference") -> tuple[Measured, float | None]:
    """``vampstudy run periodic --backend reference`` in ``workdir``; (process, study seconds)."""
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "mlflow.db"
    cmd = vampstudy_cmd() + ["run", "periodic", "--backend", backend, "--device", "cpu",
                             "--tracking-uri", f"sqlite:///{db}", *extra]
    m = measure(cmd, cwd=str(workdir), timeout=timeout)
    if m.rc != 0:
        tail = "\n".join(m.out.strip().splitlines()[-5:])
        print(f"  ! {' '.join(cmd[1:])} exited {m.rc}:\n{tail}", file=sys.stderr)
    return m, study_seconds(db)


def create_store(workdir: Path) -> Measured:
    """Create the sqlite store a study in ``workdir`` logs to (what a first study pays)."""
    workdir.mkdir(parents=True, exist_ok=True)
    code = ("from vampstudy.tracking import Tracker; "
            f"Tracker({'sqlite:///' + str(workdir / 'mlflow.db')!r})")
    return measure([sys.executable, "-c", code], cwd=str(workdir))


def parent_metrics(db: Path, prefixes=("phase_", "model_busy", "wall_seconds")) -> dict:
    """The study run's own figures (its latest values of the metrics named by ``prefixes``)."""
    if not db.exists():
        return {}
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT key, value FROM latest_metrics").fetchall()
    return {k: float(v) for k, v in rows if k.startswith(prefixes)}


def phases_line(metrics: dict) -> str:
    """``model 1.2 s, measure 3.4 s, ...`` from :func:`parent_metrics`."""
    names = ("startup", "model", "measure", "record", "analysis")
    parts = [f"{n} {metrics['phase_' + n + '_s']:.1f} s" for n in names
             if f"phase_{n}_s" in metrics]
    if "model_busy_fraction" in metrics:
        parts.append(f"model busy {metrics['model_busy_fraction']:.2f}")
    return ", ".join(parts) or "no phase metrics (older vampstudy)"


def study_seconds(db: Path) -> float | None:
    """The parent run's ``wall_seconds`` metric (the runner's own clock)."""
    if not db.exists():
        return None
    with sqlite3.connect(db) as con:
        row = con.execute("SELECT value FROM metrics WHERE key = 'wall_seconds' "
                          "ORDER BY timestamp DESC LIMIT 1").fetchone()
    return float(row[0]) if row else None


def write_clip(path: Path, seconds: float) -> None:
    """The demo music synthesised to ``seconds`` and written as 16-bit PCM WAV."""
    import wave

    import numpy as np

    from vampstudy.audio import synthesize_demo

    x = synthesize_demo(duration=seconds, sample_rate=44100)
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(pcm.tobytes())


def write_real_clip(path: Path, seconds: float = 10.0) -> None:
    """A real recording of ``seconds``: /work/shared/audio/fuel_2.wav (or the shipped
    excerpt's source, 6.15 s), mixed to mono and repeated to the length, as 16-bit WAV."""
    import wave

    import numpy as np

    with wave.open(str(REAL_CLIP), "rb") as r:
        rate, channels = r.getframerate(), r.getnchannels()
        x = np.frombuffer(r.readframes(r.getnframes()), dtype="<i2").reshape(-1, channels)
    mono = x.astype(np.float64).mean(axis=1)
    n = int(round(seconds * rate))
    pcm = np.tile(mono, -(-n // len(mono)))[:n].round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


#: The real recording the growth and start-up rows use (see tests/data/README.md).
REAL_CLIP = Path("/work/shared/audio/fuel_2.wav")


# ------------------------------------------------------------------ rows
class Table:
    def __init__(self):
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, what: str, figure: str, goal: str = "", ok: bool | None = None) -> None:
        verdict = "" if ok is None else ("MET" if ok else "NOT MET")
        self.rows.append((what, figure, goal, verdict))
        print(f"  {what}: {figure}" + (f"  (goal {goal}: {verdict})" if goal else ""), flush=True)

    def render(self) -> str:
        head = ("figure", "value", "goal", "verdict")
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(4)]
        line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
        return "\n".join([line(head), line(tuple("-" * w for w in widths))]
                         + [line(r) for r in self.rows])


def mb(n: int) -> str:
    return f"{n / 1024 ** 2:,.0f} MB"


def bench_help(table: Table, repeats: int = 5) -> None:
    runs = [measure(vampstudy_cmd() + ["--help"]) for _ in range(repeats)]
    walls = [m.wall_s for m in runs]
    med = statistics.median(walls)
    table.add("vampstudy --help wall (median of 5)",
              f"{med:.2f} s (min {min(walls):.2f}; "
              f"CPU {statistics.median(m.cpu_s for m in runs):.2f} s, "
              f"peak RSS {mb(max(m.peak_rss for m in runs))})", "<= 1 s", med <= 1.0)


def bench_ratio(table: Table, tmp: Path, repeats: int, timeout: float,
                seeds: tuple[int, ...] = (0,)) -> None:
    bare_cmd = [sys.executable, str(Path(__file__).resolve()), "--bare",
                "--intervals", ",".join(map(str, NOTEBOOK_INTERVALS)),
                "--seeds", ",".join(map(str, seeds))]
    # the same model work as the bare loop: the intervals' calls, no control runs (the
    # default controls are measured beside, in their own row)
    extra = ["--no-controls"] + ([] if seeds == (0,) else ["--seeds", ",".join(map(str, seeds))])
    bares, studies, stores, controlled = [], [], [], []
    for i in range(repeats):  # interleaved, so that drifting load hits both alike
        bares.append(measure(bare_cmd, cwd=str(tmp), timeout=timeout))
        work = tmp / f"ratio{len(seeds)}-{i}"
        stores.append(create_store(work))
        studies.append(run_study(work, extra, timeout)[0])
        if seeds == (0,):
            controlled.append(run_study(work, [], timeout)[0])
    if seeds != (0,):
        if any(m.rc for m in bares + studies + stores):
            table.add(f"study / bare, {len(seeds)} seeds", "a process failed (see above)")
            return
        bw, sw = (statistics.median(m.wall_s for m in ms) for ms in (bares, studies))
        br, sr = (max(m.peak_rss for m in ms) for ms in (bares, studies))
        table.add(f"bare loop / study wall, {len(NOTEBOOK_INTERVALS) * len(seeds)} trials "
                  f"({len(seeds)} seeds)", f"{bw:.1f} s / {sw:.1f} s")
        table.add(f"study / bare, {len(seeds)} seeds: wall; peak RSS",
                  f"{sw / bw:.2f}x; {sr / br:.2f}x ({mb(sr)} vs {mb(br)})")
        return
    if any(m.rc for m in bares + studies + stores):
        table.add("study / bare loop", "a process failed (see above)", "<= 1.3", False)
        return
    bare_wall = statistics.median(m.wall_s for m in bares)
    study_wall = statistics.median(m.wall_s for m in studies)
    bare_cpu = statistics.median(m.cpu_s for m in bares)
    study_cpu = statistics.median(m.cpu_s for m in studies)
    bare_rss = max(m.peak_rss for m in bares)
    study_rss = max(m.peak_rss for m in studies)
    n = f" (median of {repeats})" if repeats > 1 else ""
    table.add("bare loop wall, demo clip, 11 intervals" + n,
              f"{bare_wall:.1f} s (CPU {bare_cpu:.1f} s)")
    table.add("study wall, demo clip, 11 intervals, --no-controls" + n,
              f"{study_wall:.1f} s (CPU {study_cpu:.1f} s)")
    if controlled and not any(m.rc for m in controlled):
        wall = statistics.median(m.wall_s for m in controlled)
        table.add("  with its default 12 control runs (not in the bare loop)" + n,
                  f"{wall:.1f} s ({wall / bare_wall:.2f}x bare)")
    table.add("creating the sqlite store (once per store; not in the study wall)",
              f"{statistics.median(m.wall_s for m in stores):.1f} s (whole process)")
    table.add("study / bare wall", f"{study_wall / bare_wall:.2f}x", "<= 1.3",
              study_wall / bare_wall <= 1.3)
    table.add("study / bare CPU time", f"{study_cpu / bare_cpu:.2f}x")
    table.add("bare loop peak RSS", mb(bare_rss))
    table.add("study peak RSS", mb(study_rss))
    table.add("study / bare peak RSS", f"{study_rss / bare_rss:.2f}x", "<= 1.3",
              study_rss / bare_rss <= 1.3)
    bare_pss = max(m.peak_pss for m in bares)
    study_pss = max(m.peak_pss for m in studies)
    table.add("study / bare peak tree PSS", f"{study_pss / bare_pss:.2f}x ({mb(study_pss)} vs "
              f"{mb(bare_pss)})", "<= 1.5", study_pss / bare_pss <= 1.5)


SLEEPY = "vampstudy.testing:SleepyBackend"
INSTANT = "vampstudy.testing:InstantBackend"


def bench_growth(table: Table, tmp: Path, timeout: float, few: int = 2, many: int = 20,
                 executor: str | None = None) -> None:
    """Peak tree PSS of a study with a near-free model, ``few`` vs ``many`` seeds × 11
    intervals on a real 10 s clip (``--executor executor``; None: the CLI's default);
    and start to first model call, study vs bare loop."""
    wav = tmp / "real10s.wav"
    write_real_clip(wav, 10.0)
    intervals = ",".join(map(str, NOTEBOOK_INTERVALS))
    bare = measure([sys.executable, str(Path(__file__).resolve()), "--bare", "--backend", INSTANT,
                    "--audio", str(wav), "--intervals", intervals,
                    "--seeds", ",".join(map(str, range(few)))], cwd=str(tmp), timeout=timeout)
    runs = {}
    for n in (few, many):
        work = tmp / f"growth{n}-{executor or 'default'}"
        create_store(work)
        m, _ = run_study(work, ["--audio", str(wav), "--no-controls",
                                "--seeds", ",".join(map(str, range(n))),
                                *(["--executor", executor] if executor else [])],
                         timeout, backend=INSTANT)
        if m.rc:
            table.add(f"growth, {n} seeds", "failed (see above)")
            return
        runs[n] = (m, parent_metrics(work / "mlflow.db"))
    (m_few, p_few), (m_many, p_many) = runs[few], runs[many]
    k = len(NOTEBOOK_INTERVALS)
    table.add(f"instant-test, real 10 s clip, --executor {executor or '(default)'}: "
              f"peak tree PSS, {k * few} / {k * many} trials",
              f"{mb(m_few.peak_pss)} / {mb(m_many.peak_pss)} (peak RSS {mb(m_few.peak_rss)} / "
              f"{mb(m_many.peak_rss)}; wall {m_few.wall_s:.1f} s / {m_many.wall_s:.1f} s)")
    grow = m_many.peak_pss - m_few.peak_pss
    table.add(f"  tree PSS growth, {k * many} vs {k * few} trials",
              f"{grow / 1024 ** 2:+,.0f} MB ({grow / (k * (many - few)) / 1024 ** 2:.2f} MB a trial)",
              "<= 100 MB", grow <= 100 * 1024 ** 2)
    anon = m_many.peak_pss_anon - m_few.peak_pss_anon
    table.add("  the same, anonymous + shared memory only (Pss_Anon + Pss_Shmem)",
              f"{mb(m_few.peak_pss_anon)} / {mb(m_many.peak_pss_anon)}: {anon / 1024 ** 2:+,.0f} MB "
              f"({anon / (k * (many - few)) / 1024 ** 2:.2f} MB a trial)")
    table.add(f"  phases, {k * many} trials", phases_line(p_many))
    if bare.first_vamp_s is None or m_few.first_vamp_s is None:
        table.add("start to first model call", "not measured (no first-call stamp)")
        return
    extra = m_few.first_vamp_s - bare.first_vamp_s
    table.add("start to first model call: bare loop / study",
              f"{bare.first_vamp_s:.2f} s / {m_few.first_vamp_s:.2f} s ({extra:+.2f} s; "
              f"study's own phase_startup_s {p_few.get('phase_startup_s', float('nan')):.2f} s)",
              "<= bare + 0.5 s", extra <= 0.5)


def bench_latency(table: Table, tmp: Path, timeout: float, seeds=(0, 1, 2)) -> None:
    bare_cmd = [sys.executable, str(Path(__file__).resolve()), "--bare", "--backend", SLEEPY,
                "--intervals", ",".join(map(str, NOTEBOOK_INTERVALS)),
                "--seeds", ",".join(map(str, seeds))]
    bare = measure(bare_cmd, cwd=str(tmp), timeout=timeout)
    walls = {}
    for executor in ("process", "pipelined", "sequential"):
        work = tmp / f"latency-{executor}"
        create_store(work)
        m, _ = run_study(work, ["--seeds", ",".join(map(str, seeds)), "--executor", executor,
                                "--no-controls"], timeout, backend=SLEEPY)
        if m.rc:
            table.add(f"latency-bound, {executor}", "failed (see above)")
            return
        walls[executor] = m.wall_s
    n = len(NOTEBOOK_INTERVALS) * len(seeds)
    table.add(f"latency-bound model (sleepy-test, 0.5 s/vamp), {n} trials: bare loop wall",
              f"{bare.wall_s:.1f} s")
    for executor, wall in walls.items():
        ratio = wall / bare.wall_s
        table.add(f"  study wall, {executor} executor", f"{wall:.1f} s ({ratio:.2f}x bare)",
                  *(("<= 1.15", ratio <= 1.15) if executor == "process" else ()))


def bench_lengths(table: Table, tmp: Path, lengths: list[float], timeout: float) -> None:
    per_s: dict[float, float] = {}
    for seconds in lengths:
        wav = tmp / f"clip{seconds:g}s.wav"
        write_clip(wav, seconds)
        m, inner = run_study(tmp / f"len{seconds:g}", ["--audio", str(wav), "--intervals",
                                                       ",".join(map(str, LENGTH_INTERVALS))],
                             timeout)
        if m.rc == 124:
            table.add(f"{seconds:g} s clip, 3 intervals", f"timed out after {timeout:.0f} s "
                      f"(> {timeout / seconds:.2f} s per audio s)")
            per_s[seconds] = float("inf")
            continue
        if m.rc or inner is None:
            table.add(f"{seconds:g} s clip, 3 intervals", f"failed (exit {m.rc})")
            continue
        per_s[seconds] = inner / seconds
        table.add(f"{seconds:g} s clip, 3 intervals: study s per audio s",
                  f"{inner / seconds:.3f} (study {inner:.1f} s; process {m.wall_s:.1f} s, "
                  f"CPU {m.cpu_s:.1f} s, peak RSS {mb(m.peak_rss)})")
        if seconds == 120:
            table.add("peak RSS, 120 s clip", mb(m.peak_rss), "<= 2 GB", m.peak_rss <= 2 * GB)
    short, long_ = min(lengths), max(lengths)
    if short != long_ and short in per_s and long_ in per_s:
        ratio = per_s[long_] / per_s[short]
        table.add(f"cost per audio s, {long_:g} s / {short:g} s", f"{ratio:.2f}x",
                  "<= 1.5" if long_ == 600 and short == 10 else "(<= 1.5 for 600 s / 10 s)",
                  ratio <= 1.5 if long_ == 600 and short == 10 else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Skip the 600 s clip.")
    parser.add_argument("--only", default="help,ratio,seeds,latency,lengths,growth",
                        help="Comma-separated subset of: help, ratio, seeds, latency, lengths, "
                             "growth.")
    parser.add_argument("--lengths", default=None, metavar="S,S,...",
                        help="Clip lengths in seconds (default 10,60,120,600).")
    parser.add_argument("--repeats", type=int, default=1,
                        help="Runs of the bare loop and the study for the ratio (median).")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="Seconds after which a child process is killed.")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="Math-library threads of every child (OMP/MKL_NUM_THREADS; the same "
                             "for the bare loop and the study). Default: the libraries' own "
                             "choice. 1 keeps figures sane on a machine shared with other jobs.")
    parser.add_argument("--executor", default=None, metavar="NAME[,NAME]",
                        help="growth: the study's --executor, one growth row each (e.g. "
                             "process,pipelined). Default: the CLI's default executor.")
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--audio", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--intervals", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seeds", default="0", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="reference", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.bare:  # child process: the bare model loop
        bare_loop(args.audio, tuple(int(p) for p in args.intervals.split(",")),
                  tuple(int(s) for s in args.seeds.split(",")), args.backend)
        return

    if args.threads:
        CHILD_ENV.update({k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                          "OPENBLAS_NUM_THREADS")})
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    parts = ("help", "ratio", "seeds", "latency", "lengths", "growth")
    unknown = only - set(parts)
    if unknown:
        parser.error(f"--only: unknown part(s) {sorted(unknown)}; use {', '.join(parts)}")
    lengths = ([float(s) for s in args.lengths.split(",")] if args.lengths
               else [s for s in LENGTHS_S if not (args.quick and s == 600)])
    print(f"bench_throughput: python {platform.python_version()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}; load average {os.getloadavg()[0]:.2f}"
          + (f"; {args.threads} math thread(s) per process" if args.threads else ""), flush=True)
    table = Table()
    with tempfile.TemporaryDirectory(prefix="vampstudy-bench-") as tmp:
        if "help" in only:
            bench_help(table)
        if "ratio" in only:
            bench_ratio(table, Path(tmp), args.repeats, args.timeout)
        if "seeds" in only:
            bench_ratio(table, Path(tmp), 1, args.timeout, seeds=(0, 1, 2))
        if "latency" in only:
            bench_latency(table, Path(tmp), args.timeout)
        if "lengths" in only:
            bench_lengths(table, Path(tmp), lengths, args.timeout)
        if "growth" in only:
            for executor in (args.executor.split(",") if args.executor else [None]):
                bench_growth(table, Path(tmp), args.timeout, executor=executor)
    print()
    print(table.render())
    print(f"(load average at the end {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
