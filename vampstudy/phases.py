"""Where a study's time goes: the phase figures recorded on its parent run.

Every figure is in seconds of this invocation (a resumed study counts only the trials it
ran), recorded as a metric of the parent run beside ``wall_seconds`` (the runner's clock,
from :func:`vampstudy.runner.run_study` being called to the parent being closed):

``phase_startup_s``
    From the start of the process (the operating system's start time of this process:
    interpreter start-up, imports, loading the backend, opening the store, preparing the
    clips and the parent run included) to the start of the first model call. Recorded
    where the start time is known (Linux ``/proc``) and a model call was made.
``phase_model_s``
    The sum over trials of the seconds in :meth:`~vampstudy.study.Study.model_stage`
    (seeding included): the model's work.
``phase_measure_s``
    The sum over trials of the seconds in :meth:`~vampstudy.study.Study.measure_stage`
    plus the level metrics: metrics, figures, embeddings.
``phase_record_s``
    The sum over trials of the seconds the runner spent recording each trial's child
    run (the executor's sink: params, metrics, artifacts; waiting for a store that is
    away included).
``phase_analysis_s``
    Reloading resumed outcomes, :meth:`~vampstudy.study.Study.analyze`, recording the
    summary and the comparison view.
``model_busy_fraction``
    ``phase_model_s / wall_seconds``: the share of the study's wall time during which
    the model worked. 1.0 would mean the model never waited for anything.

The phases overlap in time: trials are recorded in the recording thread
(:mod:`vampstudy.patience`) while the next trials run, and under the ``pipelined``
executor one trial is measured while the model works on the next. So the phases can add
up to more than the wall time; under ``sequential``, model + measure + analysis cannot,
nor can record + analysis.
Executors that report no stage times (``ray``: the stages run in its workers) leave
``phase_model_s``, ``phase_measure_s``, ``phase_startup_s`` and
``model_busy_fraction`` out.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

__all__ = ["PhaseClock", "process_start_time", "phase_summary", "PHASE_METRICS"]

#: The parent-run metrics this module defines, in the order ``vampstudy show`` prints them.
PHASE_METRICS = ("phase_startup_s", "phase_model_s", "phase_measure_s", "phase_record_s",
                 "phase_analysis_s", "model_busy_fraction")


def process_start_time(pid: int | None = None) -> float | None:
    """Wall-clock time (``time.time()`` scale) at which process ``pid`` (this one) started.

    From ``/proc/PID/stat`` (start time in clock ticks after boot) and ``/proc/uptime``:
    ``now - (uptime - start)``, good to about 10 ms. None where /proc is missing.
    """
    try:
        with open(f"/proc/{pid or os.getpid()}/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        now = time.time()
        return now - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class PhaseClock:
    """Adds up the phase times of one study invocation (see the module docstring)."""

    process_started: float | None = field(default_factory=process_start_time)
    first_model_call: float | None = None
    model_s: float = 0.0
    measure_s: float = 0.0
    record_s: float = 0.0
    analysis_s: float = 0.0
    trials: int = 0
    untimed: int = 0     # results that carried no stage times (e.g. from Ray workers)

    def add_trial(self, result, record_s: float) -> None:
        """Count one :class:`~vampstudy.execute.TrialResult` and the seconds spent recording it."""
        self.trials += 1
        self.record_s += record_s
        if result.model_started is None:
            self.untimed += 1
            return
        if self.first_model_call is None or result.model_started < self.first_model_call:
            self.first_model_call = result.model_started
        self.model_s += result.model_s or 0.0
        self.measure_s += result.measure_s or 0.0

    def metrics(self, wall_s: float) -> dict[str, float]:
        """The parent run's phase metrics for a study whose runner clock read ``wall_s``."""
        out = {"phase_record_s": self.record_s, "phase_analysis_s": self.analysis_s}
        if self.trials and not self.untimed:
            out.update(phase_model_s=self.model_s, phase_measure_s=self.measure_s)
            if wall_s > 0:
                out["model_busy_fraction"] = self.model_s / wall_s
        if self.first_model_call is not None and self.process_started is not None:
            out["phase_startup_s"] = self.first_model_call - self.process_started
        return out


def phase_summary(metrics: dict) -> str | None:
    """One line for ``vampstudy show``: the wall time, each recorded phase and the model's
    busy share, from a parent run's metrics; None when the run recorded no phases."""
    labels = (("phase_startup_s", "start-up"), ("phase_model_s", "model"),
              ("phase_measure_s", "measure"), ("phase_record_s", "record"),
              ("phase_analysis_s", "analysis"))
    parts = [f"{label} {metrics[key]:.1f} s" for key, label in labels if key in metrics]
    if not parts:
        return None
    if "wall_seconds" in metrics:
        parts.insert(0, f"wall {metrics['wall_seconds']:.1f} s")
    if "model_busy_fraction" in metrics:
        parts.append(f"model busy {100 * metrics['model_busy_fraction']:.0f} % of the wall")
    return "time: " + " · ".join(parts)
