"""Outage patience: keep a study going while its tracking store does not answer.

A tracking server restarts (a deploy, an OOM kill, a node reboot), a sqlite file is locked
by another program or vanishes from a network mount. MLflow's own HTTP client then sits in
urllib3's retry back-off inside one call (with its defaults, 7 retries spaced 2, 4, … 120 s:
about four minutes per call) and says nothing. :class:`PatientSink` stands between an
executor and the recorder so that a study instead

* **says so within seconds**: a watchdog thread notices a store call outstanding for more
  than ``notice_after`` seconds and asks the store directly, with its own short timeout
  (:func:`vampstudy.stores.probe_store`: ``GET /health`` of a server, a write transaction
  on a sqlite file that must still be the file the store opened); when that fails it
  prints one line — since when, and how many finished trials wait — and another when the
  store answers again;
* **keeps the model busy**: finished trials wait in a queue of at most ``max_waiting``
  (the memory bound; the model loop waits only when it is full) while one recording thread
  records them in order;
* **retries with back-off**: a call that fails while the store does not answer is retried
  (1, 2, 4, … 30 s apart; MLflow's own retries inside a call still apply), and a recording
  half-written by a failed attempt is cleaned up by the recorder before the retry;
* **gives up only after ``patience`` seconds** without an answer: :class:`StoreOutage`,
  which the runner turns into one error line with the ``--resume`` command.

MLflow's settings (``MLFLOW_HTTP_REQUEST_*``) are left as the user has them: the store is
judged by the probe, not by making MLflow's calls fail fast. A failure while the store
answers is a real error (a full disk, a bad value) and propagates at once, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

from .errors import TrackingError

logger = logging.getLogger(__name__)

DEFAULT_PATIENCE = 300.0
DEFAULT_MAX_WAITING = 16
NOTICE_AFTER = 3.0
MAX_BACKOFF = 30.0
PROBE_EVERY = 2.0
SETTLING = 30.0   # after an outage, failures count as part of it this long

Probe = Callable[[], "str | None"]


class StoreOutage(TrackingError):
    """The tracking store did not answer for ``patience`` seconds."""

    def __init__(self, since: float, patience: float, reason: str):
        self.since, self.patience, self.reason = since, patience, reason
        super().__init__(f"the tracking store has not answered since {_clock(since)} "
                         f"({patience:.0f} s, --tracking-patience): {reason}")

    def __reduce__(self):   # crosses from the measuring process (vampstudy.executors.process)
        return (StoreOutage, (self.since, self.patience, self.reason))


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


class PatientSink:
    """A sink (``sink(result)``) that records through ``record`` patiently; see the module.

    Parameters
    ----------
    record : callable
        The real sink (records one result in the store); called in order, from one thread.
    probe : callable
        ``probe() -> None`` when the store answers, else why not (never raises).
    patience : float
        Seconds without an answer before giving up.
    max_waiting : int
        Finished results held while they wait to be recorded (the memory bound).
    notify : callable, optional
        Receives the outage lines (default: ``logger.warning``).
    notice_after : float
        A store call outstanding this long makes the watchdog probe the store.
    """

    def __init__(self, record: Callable, probe: Probe, patience: float = DEFAULT_PATIENCE,
                 max_waiting: int = DEFAULT_MAX_WAITING,
                 notify: Callable[[str], None] | None = None,
                 notice_after: float = NOTICE_AFTER, what: str = "finished trials"):
        self.record, self.probe = record, probe
        self.patience, self.max_waiting = float(patience), max(1, int(max_waiting))
        self.notify = notify or logger.warning
        self.notice_after, self.what = notice_after, what
        self.waiting: deque = deque()
        self.most_waiting = 0            # the largest backlog seen (for benchmarks)
        self.outages: list[tuple[float, float]] = []   # (since, answered again) of past outages
        self._cv = threading.Condition()
        self._busy = False
        self._call_started: float | None = None
        self._outage: tuple[float, str] | None = None   # (since, reason) while the store is away
        self._noticed = False
        self._back_at = float("-inf")
        self._error: BaseException | None = None
        self._closed = False
        self._recorder: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None   # started by the first store call

    def _start_watchdog(self) -> None:
        with self._cv:
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                                  name="vampstudy-store-watch")
                self._watchdog.start()

    @property
    def error(self) -> BaseException | None:
        """The recording's error (or :class:`StoreOutage`) once there is one, else None."""
        with self._cv:
            return self._error

    # ------------------------------------------------------------ producer side
    def __call__(self, result) -> None:
        """Queue ``result``; waits while ``max_waiting`` results wait already. Raises the
        recording's error (or :class:`StoreOutage`) once there is one."""
        with self._cv:
            while self._error is None and len(self.waiting) >= self.max_waiting:
                self._cv.wait(0.5)
            if self._error is not None:
                raise self._error
            self.waiting.append(result)
            self.most_waiting = max(self.most_waiting, len(self.waiting))
            if self._recorder is None:   # a daemon: a call stuck in MLflow's retries never
                # keeps the process from exiting
                self._recorder = threading.Thread(target=self._record_loop, daemon=True,
                                                  name="vampstudy-record")
                self._recorder.start()
            self._cv.notify_all()

    def drain(self) -> None:
        """Wait until every queued result is recorded; raise the recording's error if any."""
        with self._cv:
            while self._error is None and (self.waiting or self._busy):
                self._cv.wait(0.5)
            if self._error is not None:
                raise self._error

    def drain_unless_away(self) -> None:
        """After an interrupt: record what waits, unless the store is away (then drop it)."""
        with self._cv:
            while self._error is None and (self.waiting or self._busy) and self._outage is None:
                self._cv.wait(0.5)
        self.abandon()

    def abandon(self) -> int:
        """Stop recording (a call in progress is left to finish or fail on its own); returns
        the number of results that were waiting and are dropped."""
        with self._cv:
            dropped = len(self.waiting)
            self.waiting.clear()
            self._closed = True
            self._cv.notify_all()
        return dropped

    def close(self, wait: float = 10.0) -> None:
        """Stop the threads (after :meth:`drain`), waiting up to ``wait`` s for each; a call
        stuck in MLflow's own retries is left behind (its thread is a daemon)."""
        self.abandon()
        for thread in (self._recorder, self._watchdog):
            if thread is not None and thread is not threading.current_thread():
                thread.join(wait)

    # ------------------------------------------------------------ calls
    def call(self, fn: Callable, *args, **kwargs):
        """Run one store call patiently (watched, retried with back-off) and return its value.

        From any thread but the recording one the call runs in a helper thread, so that the
        caller is let go with :class:`StoreOutage` once patience is exhausted even while the
        call still sits in MLflow's own retries.
        """
        if threading.current_thread() is self._recorder:
            return self._call(fn, *args, **kwargs)
        box: dict = {}

        def run():
            try:
                box["value"] = self._call(fn, *args, **kwargs)
            except BaseException as exc:   # handed to the caller below
                box["error"] = exc
        helper = threading.Thread(target=run, daemon=True, name="vampstudy-store-call")
        helper.start()
        while helper.is_alive():
            helper.join(0.5)
            with self._cv:
                if isinstance(self._error, StoreOutage) and helper.is_alive():
                    raise self._error
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def _call(self, fn: Callable, *args, **kwargs):
        self._start_watchdog()
        delay = 1.0
        while True:
            with self._cv:
                if self._error is not None:
                    raise self._error
                started = self._call_started = time.time()
            try:
                value = fn(*args, **kwargs)
            except Exception as exc:
                if self._closed:
                    raise
                wait = self._retry_after(exc, started, delay)
                logger.info("a store call failed while the store was away (%s); retrying in "
                            "%.0f s", exc, wait)
                time.sleep(wait)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            finally:
                with self._cv:
                    self._call_started = None
            self._mark_back()
            return value

    def _retry_after(self, exc: Exception, started: float, delay: float) -> float:
        """Seconds to wait before trying a failed call again; raises ``exc`` when the store
        answers (a real error) and :class:`StoreOutage` when patience is exhausted."""
        reason = self.probe()
        if reason is None:
            with self._cv:
                recent = (self._outage is not None
                          or time.time() - self._back_at < SETTLING)
            if not recent:
                raise exc   # the store answers and did all along: a real error, not an outage
            self._mark_back()   # it failed while the store was away or just back: again
            return delay
        since = self._mark_away(reason, started)
        left = since + self.patience - time.time()
        if left <= 0:
            raise self._give_up() from exc
        return min(delay, left)

    def _record_loop(self) -> None:
        while True:
            with self._cv:
                while not self.waiting and not self._closed:
                    self._cv.wait(0.5)
                if self._closed or self._error is not None:
                    return
                result = self.waiting[0]
                self._busy = True
            try:
                self._call(self.record, result)
            except BaseException as exc:   # recorded for the producer, which raises it
                with self._cv:
                    self._error = self._error or exc
                    self._busy = False
                    self._cv.notify_all()
                return
            with self._cv:
                if self.waiting and self.waiting[0] is result:
                    self.waiting.popleft()
                self._busy = False
                self._cv.notify_all()

    # ------------------------------------------------------------ watchdog
    def _watch(self) -> None:
        probed = 0.0
        while True:
            time.sleep(0.5)
            with self._cv:
                if self._closed and self._call_started is None:
                    return
                started = self._call_started
            now = time.time()
            if started is None or now - started < self.notice_after or now - probed < PROBE_EVERY:
                continue
            probed = now
            reason = self.probe()
            if reason is None:
                self._mark_back()
                continue
            since = self._mark_away(reason, started)
            if time.time() - since >= self.patience:
                self._give_up()
                return

    def _mark_away(self, reason: str, since: float) -> float:
        with self._cv:
            if self._outage is None:
                self._outage = (since, reason)
                self._noticed = False
            since = self._outage[0]
            say = not self._noticed
            self._noticed = True
            n = len(self.waiting)
        if say:
            self.notify(f"the tracking store does not answer since {_clock(since)} ({reason}); "
                        f"{n} {self.what} wait to be recorded (at most {self.max_waiting} are "
                        f"kept, model calls go on); giving up after {self.patience:.0f} s "
                        "(--tracking-patience)")
        return since

    def _mark_back(self) -> None:
        with self._cv:
            outage, self._outage = self._outage, None
            n = len(self.waiting)
        if outage is not None:
            now = self._back_at = time.time()
            self.outages.append((outage[0], now))
            self.notify(f"the tracking store answers again after {now - outage[0]:.0f} s; "
                        f"recording the {n} waiting {self.what}")

    def _give_up(self) -> StoreOutage:
        with self._cv:
            since, reason = self._outage or (time.time(), "no answer")
            if not isinstance(self._error, StoreOutage):
                self._error = StoreOutage(since, self.patience, reason)
            self._cv.notify_all()
            return self._error
