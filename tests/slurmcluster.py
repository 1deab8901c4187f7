"""A throwaway single-node Slurm cluster on localhost for tests (Debian's ``slurm-wlm`` and
``munge`` packages).

:func:`slurm_cluster` starts, as root, ``munged`` (as user ``munge``, a fresh key and socket
in a temp dir), ``slurmctld`` and ``slurmd`` (a throwaway ``slurm.conf``: proctrack/linuxproc,
task/none, select/cons_tres, free ports, state, spool and logs in the temp dir), each in the
foreground in its own process group, and waits until the node is idle. The handle runs
``sbatch``/``scancel``/``squeue`` against that config and, on :meth:`SlurmCluster.stop` (or
leaving the ``with`` block, also after a failure), cancels every job and stops the three
daemons (process groups SIGTERM, then SIGKILL) and removes the temp dir.

The test that uses it is skipped with the reason when the binaries are missing or the test
does not run as root (slurmd must start jobs as their user).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from servers import free_port

BINARIES = ("slurmctld", "slurmd", "sbatch", "scancel", "squeue", "scontrol", "sinfo", "srun",
            "munged", "mungekey")

__all__ = ["SlurmCluster", "slurm_cluster", "missing_slurm"]


def _which(name: str) -> str | None:
    return shutil.which(name) or next((f"{d}/{name}" for d in ("/usr/sbin", "/sbin")
                                       if os.access(f"{d}/{name}", os.X_OK)), None)


def missing_slurm() -> str | None:
    """Why a local Slurm cannot be started here (None when it can)."""
    absent = [b for b in BINARIES if _which(b) is None]
    if absent:
        return (f"Slurm/munge not installed (missing {', '.join(absent)}); `apt-get install "
                "slurm-wlm slurm-client munge` (CI does, see .ci/system-packages)")
    if os.geteuid() != 0:
        return "a local Slurm needs root (slurmd starts jobs as their user); run the test as root"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no user 'munge' (installed by Debian's munge package)"
    return None


@dataclass
class SlurmCluster:
    """A running single-node Slurm (see :func:`slurm_cluster`)."""

    root: Path
    conf: Path
    node: str
    processes: dict = field(default_factory=dict)

    @property
    def env(self) -> dict:
        """The environment for Slurm commands (and jobs) of this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def command(self, *args: str, check: bool = True, env: dict | None = None,
                timeout: float = 60) -> str:
        """Run a Slurm command (``sbatch``, ``squeue`` …) of this cluster; its stdout."""
        proc = subprocess.run([_which(args[0]) or args[0], *args[1:]], capture_output=True,
                              text=True, env={**self.env, **(env or {})}, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def sbatch(self, script: str | Path, *args: str, cwd: str | Path, env: dict | None = None,
               options: tuple = ()) -> int:
        """Submit ``script ARGS`` from ``cwd`` (output in ``cwd/slurm-<id>.out``); the job id."""
        proc = subprocess.run([_which("sbatch"), "--parsable", *options, str(script), *args],
                              capture_output=True, text=True, cwd=cwd,
                              env={**self.env, **(env or {})}, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch failed ({proc.returncode}): {proc.stderr.strip()}")
        return int(proc.stdout.strip().split(";")[0])

    def job_state(self, job_id: int) -> str | None:
        """The job's state (PENDING, RUNNING, COMPLETED, CANCELLED, FAILED …); None if unknown."""
        out = self.command("scontrol", "show", "job", str(job_id), check=False)
        for word in out.split():
            if word.startswith("JobState="):
                return word.split("=", 1)[1]
        return None

    def wait_job(self, job_id: int, timeout: float = 600) -> str:
        """Wait until the job has ended; its final state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            ended = state not in (None, "PENDING", "RUNNING", "CONFIGURING", "COMPLETING",
                                  "SUSPENDED")
            # squeue lists the job until its processes are gone (COMPLETING)
            if ended and not self.command("squeue", "-h", "-j", str(job_id), check=False).strip():
                return state
            time.sleep(1)
        raise TimeoutError(f"Slurm job {job_id} still {self.job_state(job_id)} after {timeout:.0f} s")

    def log(self) -> str:
        """The daemons' logs (for failure messages)."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.root / "log" / name
            if path.exists():
                parts.append(f"--- {name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job, stop slurmd, slurmctld and munged, delete the temp dir."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            subprocess.run([_which("scancel"), "--full", "-u", "root"], env=self.env,
                           capture_output=True, timeout=30)
            deadline = time.monotonic() + 40    # KillWait (30 s) for the jobs' processes
            while time.monotonic() < deadline and self.command("squeue", "-h", check=False).strip():
                time.sleep(1)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.processes.pop(name, None)
            if proc is not None:
                _stop_group(proc)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "SlurmCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _stop_group(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=timeout)
            if sig == signal.SIGTERM:
                os.killpg(proc.pid, signal.SIGKILL)   # stragglers of the group
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            pass
        break
    if proc.poll() is None:
        proc.wait(timeout=timeout)


def _node_line(name: str) -> str:
    """This machine as a Slurm node: ``slurmd -C``'s CPUs and layout, little memory."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True,
                         timeout=30).stdout.splitlines()[0]
    keep = [w for w in out.split() if w.split("=")[0] in
            ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")]
    return f"NodeName={name} NodeAddr=127.0.0.1 {' '.join(keep)} RealMemory=1000 State=UNKNOWN"


def _write_conf(root: Path, node: str) -> Path:
    run = root / "run"
    lines = [
        "ClusterName=vstest", f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
        "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", f"AuthInfo=socket={run / 'munge.socket'}", "CredType=cred/munge",
        f"StateSaveLocation={root / 'state'}", f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={run / 'slurmctld.pid'}", f"SlurmdPidFile={run / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none", "MpiDefault=none", "ReturnToService=2",
        "SchedulerType=sched/builtin", "KillWait=30",
        _node_line(node),
        f"PartitionName=test Nodes={node} Default=YES MaxTime=INFINITE State=UP",
    ]
    conf = root / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _start_munge(root: Path) -> subprocess.Popen:
    keydir, run = root / "munge", root / "run"
    for d, mode in ((keydir, 0o700), (run, 0o755)):   # munged insists on these modes
        d.mkdir()
        shutil.chown(d, "munge", "munge")
        os.chmod(d, mode)
    as_munge = ["runuser", "-u", "munge", "--"]
    subprocess.run(as_munge + [_which("mungekey"), "--create", f"--keyfile={keydir / 'munge.key'}"],
                   check=True, capture_output=True, timeout=30)
    return subprocess.Popen(
        as_munge + [_which("munged"), "--foreground", f"--socket={run / 'munge.socket'}",
                    f"--key-file={keydir / 'munge.key'}", f"--pid-file={run / 'munged.pid'}",
                    f"--log-file={keydir / 'munged.log'}", f"--seed-file={keydir / 'munged.seed'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)


def slurm_cluster(timeout: float = 60) -> SlurmCluster:
    """Start munged, slurmctld and slurmd for a one-node cluster; skip the test if impossible."""
    reason = missing_slurm()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="vs-slurm-", dir="/tmp"))
    os.chmod(root, 0o755)
    for d in ("state", "spool", "log"):
        (root / d).mkdir()
    node = socket.gethostname().split(".")[0]
    cluster = SlurmCluster(root, _write_conf(root, node), node)
    try:
        cluster.processes["munged"] = _start_munge(root)
        _wait(lambda: (root / "run" / "munge.socket").exists(), timeout, "munged", cluster)
        for daemon in ("slurmctld", "slurmd"):
            args = [_which(daemon), "-D", "-f", str(cluster.conf)] + (["-i"] if daemon == "slurmctld" else [])
            log = open(root / "log" / f"{daemon}.out", "wb")
            cluster.processes[daemon] = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=cluster.env,
                start_new_session=True)
            log.close()
        _wait(lambda: cluster.command("sinfo", "-h", "-o", "%T", check=False).strip() == "idle",
              timeout, "an idle Slurm node", cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait(ready, timeout: float, what: str, cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in cluster.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for "
                                   f"{what}:\n{cluster.log()}")
        if ready():
            return
        time.sleep(0.5)
    raise RuntimeError(f"no {what} after {timeout:.0f} s:\n{cluster.log()}")
