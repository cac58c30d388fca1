"""Signs of life while a command runs, and self-fencing by the runner's own clock.

Two threads, so that no I/O can delay the fence (docs/remote-mode.md#self-fencing):

* the **beater** calls `Tracker.heartbeat` every interval (a jit store refreshes
  `dispatch.heartbeat_at`; remote mode and GitHub re-point the lock ref), each call with a
  deadline: the moment the fence would fall anyway;
* the **watchdog** does nothing but read the monotonic clock. When no beat has been confirmed
  within `FENCE_FACTOR` intervals of the moment that beat was *sent* (the first "beat" is the claim
  itself, sent when the tracker says), it stops the command: SIGTERM, SIGKILL after the grace.

A reaper releases a lock only after watching it stay unchanged for two announced intervals plus
`staleness.STOP_MARGIN_SECONDS`, counted from a sighting that follows the beat's landing, which
follows its sending: the command has stopped before anyone could take the issue over.

Beats that take a large share of the interval are measured: the next beat announces a longer
interval (the reaper reads the announced value), and a warning says so.
"""

from __future__ import annotations

import math
import signal
import threading
import time

from jit_dispatch.domain.staleness import FENCE_FACTOR, MAX_ANNOUNCED_INTERVAL
from jit_dispatch.process.child import CancelToken
from jit_dispatch.trackers.base import Tracker

SLOW_FRACTION = 0.25  # a beat taking longer than this share of the interval makes the next one announce more
WATCH_POLL_SECONDS = 0.05


class EitherCancel(CancelToken):
    """What the command obeys: the run's cancellation, or its own (the claim was lost)."""

    def __init__(self, run: CancelToken) -> None:
        super().__init__()
        self.run = run

    @property
    def signum(self) -> int | None:
        return self.run.signum if self.run.signum is not None else self._signum


def fitting_interval(interval: float, took: float) -> float:
    """The interval to announce after a beat that took `took` seconds: `interval` while beats take at
    most `SLOW_FRACTION` of it, else long enough that they do (whole seconds, at most the longest a
    reaper still watches)."""
    if took <= SLOW_FRACTION * interval:
        return interval
    return min(max(interval, float(math.ceil(took / SLOW_FRACTION))), MAX_ANNOUNCED_INTERVAL)


class Heartbeat:
    """While the claim is held, show signs of life; when it is gone or cannot be renewed in time,
    stop the command, so that an issue's command never runs twice at once."""

    def __init__(
        self,
        tracker: Tracker,
        issue_id: str,
        agent: str,
        interval: float | None,
        cancel: CancelToken,
        *,
        origin: float | None = None,
        took: float = 0.0,
    ) -> None:
        """`origin`: when the claim was sent (monotonic), the fence's first reference; `took`: how
        long the claim's push took (a slow one makes the first beat come early, announcing more)."""
        self.tracker, self.issue_id, self.agent = tracker, issue_id, agent
        self.interval = interval  # the interval the latest confirmed beat (or the claim) announced
        self.command_cancel = EitherCancel(cancel)
        self.lost: str | None = None
        self.warnings: list[str] = []
        self.slowest = took  # the longest confirmed beat (or claim push), seconds
        self._origin = origin
        self._renewed = 0.0  # monotonic time the latest confirmed beat was sent
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self._threads = [
            threading.Thread(target=self._beat, name="heartbeat", daemon=True),
            threading.Thread(target=self._watch, name="heartbeat-watchdog", daemon=True),
        ]

    def __enter__(self) -> Heartbeat:
        if self.interval:
            self._renewed = self._origin if self._origin is not None else time.monotonic()
            for thread in self._threads:
                thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()  # not joined: settling must not wait for a beat in flight

    def expires(self) -> float:
        """The monotonic time at which the fence falls unless another beat is confirmed first."""
        assert self.interval is not None
        with self._mutex:
            return self._renewed + FENCE_FACTOR * self.interval

    def _watch(self) -> None:
        # Short sleeps rather than `Event.wait(timeout)`: a timed condition wait never returns under
        # libfaketime (how the clock-skew tests run a runner 20 minutes behind).
        while not self._stop.is_set() and self.lost is None:
            now = time.monotonic()
            if now >= self.expires():
                with self._mutex:
                    silent = now - self._renewed
                self._lose(f"the claim could not be renewed for {silent:.0f}s; command stopped")
                return
            time.sleep(WATCH_POLL_SECONDS)

    def _beat(self) -> None:
        assert self.interval is not None
        due = self._renewed + self.interval
        if fitting_interval(self.interval, self.slowest) > self.interval:
            due = self._renewed  # the claim's push was slow: announce a longer interval at once
        while not self._stop.is_set() and self.lost is None:
            if time.monotonic() < due:
                time.sleep(min(0.2, due - time.monotonic()))
                continue
            wanted = self._wanted()
            sent = time.monotonic()
            try:
                alive: bool | None = self.tracker.heartbeat(
                    self.issue_id, self.agent, interval=wanted, deadline=self.expires()
                )
            except Exception:
                alive = None  # could not tell: try again soon, well before the fence falls
            if self._stop.is_set():
                return
            if alive:
                with self._mutex:
                    self._renewed, self.interval = sent, wanted
                    self.slowest = max(self.slowest, time.monotonic() - sent)
                due = sent + wanted
            elif alive is False:
                self._lose("the claim was taken away while the command ran; command stopped")
            else:
                due = time.monotonic() + max(0.2, self.interval / 6)

    def _wanted(self) -> float:
        """The interval the next beat announces; a warning the first time it grows."""
        assert self.interval is not None
        wanted = fitting_interval(self.interval, self.slowest)
        if wanted > self.interval:
            self.warnings.append(
                f"heartbeats took up to {self.slowest:.1f}s, more than {SLOW_FRACTION:.0%} of the "
                f"{self.interval:g}s interval: announcing {wanted:g}s (raise --heartbeat for this remote)"
            )
        return wanted

    def _lose(self, reason: str) -> None:
        if self.lost is None:
            self.lost = reason
            self.command_cancel.cancel(signal.SIGTERM)
