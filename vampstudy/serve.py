"""Running a server command (``mlflow ui``) the way a server command should behave.

* The port is checked before anything starts: a busy port is an error, exit code 1.
* The server runs in its own process group (its own session), so that a signal to
  ``vampstudy ui`` can stop the server *and* everything it started (uvicorn workers,
  job consumers) with one ``killpg``.
* SIGTERM, SIGINT and SIGHUP to ``vampstudy ui`` stop the whole group: SIGTERM first,
  SIGKILL for whatever is left after ``grace`` seconds.
* Exit codes are honest: 128 + the signal when stopped by one (130 for Ctrl-C, 143 for
  SIGTERM), the server's own code when it exits by itself, 1 when it never served.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from typing import Callable

from .errors import VampstudyError

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _addresses(host: str, port: int) -> list[tuple]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise VampstudyError(f"cannot listen on --host {host}: {exc.strerror}; pass an address "
                             "of this machine, e.g. --host 127.0.0.1") from exc
    return [(family, addr) for family, _, _, _, addr in infos]


def check_port(host: str, port: int) -> None:
    """Raise a one-line :class:`VampstudyError` unless ``host:port`` can be listened on now."""
    for family, addr in _addresses(host, port):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # as servers do, so that a port in TIME_WAIT after a previous run is not "busy"
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                busy = exc.errno in (98, 48)  # EADDRINUSE on Linux, macOS
                why = "is already in use" if busy else f"cannot be used ({exc.strerror})"
                raise VampstudyError(f"port {port} on {host} {why}; pass another --port "
                                     f"(e.g. --port {port + 1 if port < 65535 else 5001}) or stop "
                                     "what is using it") from exc


def _connect_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def serving(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((_connect_host(host), port), timeout=timeout):
            return True
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    """True while any process of the group ``pgid`` exists."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group of ``proc``, then SIGKILL what is left after ``grace`` s."""
    pgid = proc.pid  # start_new_session=True: the leader's pid is the group id
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is None:
                try:
                    proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
            elif not group_alive(pgid):
                return
            else:
                time.sleep(0.1)
        if sig == signal.SIGTERM:
            logger.warning("the server did not stop within %.0f s; killing its process group", grace)
    proc.poll()


def log_tail(log_path, lines: int = 3) -> str:
    """The last ``lines`` non-empty lines of a server log, joined with `` | `` (for one line)."""
    try:
        with open(log_path, errors="replace") as f:
            kept = [line.strip() for line in f if line.strip()]
    except (OSError, TypeError):
        return ""
    return " | ".join(kept[-lines:])[-600:]


def run_server(cmd: list[str], host: str, port: int, on_ready: Callable[[], None],
               ready_timeout: float = 300.0, grace: float = 10.0, log_path=None) -> int:
    """Start ``cmd`` in its own process group, call ``on_ready`` once it serves, wait; return
    the exit code vampstudy should end with (see the module docstring). With ``log_path``
    the server's output goes to that file (appended) instead of the terminal."""
    received: list[int] = []

    def handler(signum, frame):
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    log = open(log_path, "ab") if log_path else None
    try:
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=log,
                                stderr=subprocess.STDOUT if log else None)
    finally:
        if log:
            log.close()   # the server holds its own descriptor
    try:
        ready = False
        deadline = time.monotonic() + ready_timeout
        while not received and proc.poll() is None:
            if not ready:
                if serving(host, port):
                    ready = True
                    on_ready()
                elif time.monotonic() > deadline:
                    raise VampstudyError(f"the MLflow UI did not start serving on {host}:{port} "
                                         f"within {ready_timeout:.0f} s; stopped it")
            try:
                proc.wait(timeout=0.3)
            except subprocess.TimeoutExpired:
                pass
        if received:
            return 128 + received[0]
        code = proc.returncode
        if not ready:
            where = (f"its log {log_path} ends: {log_tail(log_path)}" if log_path
                     else "its messages are above")
            raise VampstudyError(f"the MLflow UI exited with code {code} before serving on "
                                 f"{host}:{port} ({where})")
        return code
    finally:
        stop_group(proc, grace)
        for s, h in previous.items():
            signal.signal(s, h)
