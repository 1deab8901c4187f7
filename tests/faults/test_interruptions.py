"""Crash isolation and interruptions: nothing finished is lost, ``--resume`` completes.

A failing analysis, Ctrl-C (in process and as a real SIGINT), kill -9 between recorded
trials; each followed by ``--resume`` (a tracking server killed mid-study: test_outage.py). Signals to a
real study process land at a point of its progress (see ``harness.freeze_after_finished``),
never after a sleep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap

import pytest
from click.testing import CliRunner

from studies.periodic import PeriodicIntervalStudy
from vampstudy.cli import main
from vampstudy.runner import AnalysisFailed, StudyInterrupted, run_study
from vampstudy.studyruns import study_runs
from vampstudy.tracking import Tracker

from harness import (INTERVALS, census, freeze_after_finished, run_to_the_end, study_cmd,
                     wait_for_finished)


def _children(tracker, result_or_parent):
    parent = getattr(result_or_parent, "parent_run_id", result_or_parent)
    exp = tracker.get_run(parent).info.experiment_id
    return tracker.find_runs(exp, {"mlflow.parentRunId": parent})


class FailingAnalysis(PeriodicIntervalStudy):
    controls = False   # counts below are of conditions (controls: tests/test_evidence.py)
    name = "failing-analysis"
    broken = True

    def analyze(self, outcomes, session):
        if self.broken:
            raise ValueError("the plot went wrong")
        return super().analyze(outcomes, session)


class InterruptAt(PeriodicIntervalStudy):
    name = "interrupt-at"
    at = 9

    def generate(self, trial, backend):
        if trial.condition.params["interval"] == self.at:
            raise KeyboardInterrupt
        return super().generate(trial, backend)


def test_failed_analysis_keeps_children_and_resume_redoes_only_the_analysis(
        backend, tracker, music_3s):
    study = FailingAnalysis(intervals=INTERVALS[:3])
    with pytest.raises(AnalysisFailed, match="the analysis of study 'failing-analysis' failed "
                                             "after 3 conditions") as info:
        run_study(study, backend, tracker, audio=[str(music_3s)])
    parent = tracker.get_run(info.value.parent_run_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["vampstudy.failed_stage"] == "analyze"
    assert "traceback.txt" in tracker.list_artifacts(parent.info.run_id)
    children = _children(tracker, parent.info.run_id)
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 3
    first_ids = {c.info.run_id for c in children}

    study.broken = False
    result = run_study(study, backend, tracker, audio=[str(music_3s)], resume=True)
    assert result.parent_run_id == parent.info.run_id and result.skipped == 3
    assert tracker.get_run(result.parent_run_id).info.status == "FINISHED"
    assert {c.info.run_id for c in _children(tracker, result)} == first_ids  # nothing rerun
    assert tracker.load_table(result.parent_run_id, "summary")


def test_keyboard_interrupt_marks_runs_killed_and_resume_completes(backend, tracker, music_3s):
    study = InterruptAt(intervals=INTERVALS)
    with pytest.raises(StudyInterrupted, match="2 of 4 conditions finished") as info:
        run_study(study, backend, tracker, audio=[str(music_3s)], executor="sequential")
    parent = tracker.get_run(info.value.parent_run_id)
    assert parent.info.status == "KILLED"
    children = _children(tracker, parent.info.run_id)
    assert sorted(int(c.data.params["interval"]) for c in children) == [2, 5]
    assert {c.info.status for c in children} == {"FINISHED"}

    study.at = None
    result = run_study(study, backend, tracker, audio=[str(music_3s)], resume=True)
    assert result.parent_run_id == parent.info.run_id and result.skipped == 2
    children = _children(tracker, result)
    assert sorted(int(c.data.params["interval"]) for c in children) == list(INTERVALS)
    assert {c.info.status for c in children} == {"FINISHED"}


STUDY_FILE = textwrap.dedent('''
    from studies.periodic import PeriodicIntervalStudy

    class Broken(PeriodicIntervalStudy):
        """Periodic study whose analysis fails."""
        name = "broken"
        controls = False

        def analyze(self, outcomes, session):
            raise ValueError("the plot went wrong")

    class Interrupted(PeriodicIntervalStudy):
        """Periodic study interrupted at interval 9."""
        name = "interrupted"

        def generate(self, trial, backend):
            if trial.condition.params["interval"] == 9:
                raise KeyboardInterrupt
            return super().generate(trial, backend)
''')


@pytest.fixture()
def study_file(tmp_path):
    path = tmp_path / "my_studies.py"
    path.write_text(STUDY_FILE)
    return path


def test_cli_analysis_failure_is_one_line_and_show_says_how_to_continue(
        tmp_path, study_file, music_3s, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = CliRunner().invoke(main, ["run", f"{study_file}:Broken", "--backend", "reference",
                                    "--intervals", "2,5", "--audio", str(music_3s),
                                    "--tracking-uri", uri])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    error = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "analysis" in error[0] and "--resume" in error[0]
    shown = CliRunner().invoke(main, ["show", "--tracking-uri", uri])
    assert shown.exit_code == 0, shown.output
    assert "[FAILED]" in shown.output and "its analysis failed" in shown.output
    assert "2 of 2 conditions finished" in shown.output and "--resume" in shown.output


def test_cli_interrupt_exits_130_and_says_resume(tmp_path, study_file, music_3s, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = CliRunner().invoke(main, ["run", f"{study_file}:Interrupted", "--backend", "reference",
                                    "--intervals", "2,5,9,13", "--audio", str(music_3s),
                                    "--tracking-uri", uri])
    assert res.exit_code == 130, res.output
    assert "interrupted: 2 of 4 conditions finished" in res.output
    hint = next(line for line in res.output.splitlines() if line.startswith("Continue it with:"))
    assert hint.startswith(f"Continue it with:  vampstudy run {study_file}:Interrupted ")
    assert "--intervals 2,5,9,13" in hint and hint.endswith(" --resume")
    assert "Aborted" not in res.output
    tracker = Tracker(uri)
    parent = study_runs(tracker)[0]
    assert parent.info.status == "KILLED"
    running = [r for r in tracker.client.search_runs([parent.info.experiment_id])
               if r.info.status == "RUNNING"]
    assert running == []


# ------------------------------------------------------------------ real processes
@pytest.fixture(scope="module")
def reference_metrics(tmp_path_factory, music_3s):
    """Metrics of the uninterrupted study (a real process)."""
    tmp = tmp_path_factory.mktemp("reference")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    found = run_to_the_end(study_cmd(uri, str(music_3s)), tmp, uri)
    assert found.intact, found
    return found.metrics


def _assert_complete(uri, reference_metrics):
    found = census(uri, len(INTERVALS))
    assert found.intact, found
    assert found.metrics == reference_metrics


def test_sigint_marks_killed_exits_130_and_resume_completes(tmp_path, music_3s,
                                                           reference_metrics):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = study_cmd(uri, str(music_3s))
    # a test run from a background job inherits SIGINT ignored (and Python keeps it so)
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                        signal.SIG_DFL))
    try:
        n = freeze_after_finished(uri, proc, 1)
        assert 1 <= n < len(INTERVALS), "the study ended before it was interrupted"
        proc.send_signal(signal.SIGINT)   # pending while frozen: handled the moment it goes on
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err and "Traceback" not in err
    tracker = Tracker(uri)
    assert study_runs(tracker)[0].info.status == "KILLED"
    done = subprocess.run(cmd + ["--resume"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_complete(uri, reference_metrics)


@pytest.mark.parametrize("k", [1, 2])
def test_kill_9_between_recorded_trials_then_resume(tmp_path, music_3s, reference_metrics, k):
    """SIGKILL to the whole study (both of its processes, as when the machine dies) once ``k``
    conditions are recorded (the processes frozen while the store is read, so the kill lands
    at a known point of the study, whatever the machine's speed); ``show`` says its process
    is gone, and --resume completes it with one parent, one FINISHED child per condition
    and the uninterrupted run's metrics. (benchmarks/faults.py kills at 20 random moments;
    tests/faults/test_process_faults.py kills one of the two processes.)"""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = study_cmd(uri, str(music_3s))
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        n = freeze_after_finished(uri, proc, k)
        assert k <= n < len(INTERVALS), f"the study ended before {k} conditions were recorded"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    found = census(uri, len(INTERVALS))
    assert found.finished == n and found.parent_status == "RUNNING"
    parent = study_runs(Tracker(uri))[0]
    shown = CliRunner().invoke(main, ["show", "--tracking-uri", uri])
    assert f"interrupted: its process {parent.data.tags['vampstudy.pid']} is gone" in shown.output
    assert f"{n} of {len(INTERVALS)} conditions finished" in shown.output
    done = subprocess.run(cmd + ["--resume"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_complete(uri, reference_metrics)
