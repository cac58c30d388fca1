"""Signs of life while a command runs, and self-fencing when the claim is gone.

A runner refreshes its claim every interval (local store: `dispatch.heartbeat_at`; remote mode and
GitHub: it re-points its own lock ref). A reaper judges a claim dead only after watching it stay
unchanged for two intervals, so a runner that cannot renew for 1.5 intervals stops its command
before anyone could take the issue over: an issue's command never runs twice at once.
"""

from __future__ import annotations

import signal
import threading
import time

from jit_dispatch.process.child import CancelToken
from jit_dispatch.trackers.base import Tracker


class EitherCancel(CancelToken):
    """What the command obeys: the run's cancellation, or its own (the claim was lost)."""

    def __init__(self, run: CancelToken) -> None:
        super().__init__()
        self.run = run

    @property
    def signum(self) -> int | None:
        return self.run.signum if self.run.signum is not None else self._signum


class Heartbeat:
    """While the command runs, show signs of life every `interval` seconds. When the claim is no
    longer ours (taken away, or not renewed for 1.5 intervals: a reaper may soon judge us dead),
    stop the command, so that an issue's command never runs twice at once."""

    def __init__(
        self, tracker: Tracker, issue_id: str, agent: str, interval: float | None, cancel: CancelToken
    ) -> None:
        self.tracker, self.issue_id, self.agent, self.interval = tracker, issue_id, agent, interval
        self.command_cancel = EitherCancel(cancel)
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        if self.interval:
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()  # not joined: settling must not wait for a beat in flight

    def _beat(self) -> None:
        # Short sleeps rather than `Event.wait(interval)`: a timed condition wait never returns under
        # libfaketime (how the clock-skew tests run a runner 20 minutes behind).
        assert self.interval is not None
        renewed = time.monotonic()
        due = renewed + self.interval
        while not self._stop.is_set() and self.lost is None:
            time.sleep(min(0.2, max(0.0, due - time.monotonic())))
            if time.monotonic() < due or self._stop.is_set():
                continue
            due, started = time.monotonic() + self.interval, time.monotonic()
            try:
                alive = self.tracker.heartbeat(self.issue_id, self.agent)
            except Exception:
                alive = None  # could not tell: try again soon, well before 1.5 intervals have passed
                due = time.monotonic() + max(0.2, self.interval / 6)
            if alive:
                renewed = started
            elif alive is False and not self._stop.is_set():
                self._lose(f"the claim was taken away while the command ran{self._by_whom()}; command stopped")
            if time.monotonic() - renewed > 1.5 * self.interval and not self._stop.is_set():
                self._lose(f"the claim could not be renewed for {time.monotonic() - renewed:.0f}s; command stopped")

    def _by_whom(self) -> str:
        try:
            taker = self.tracker.taken_by(self.issue_id, self.agent)
        except Exception:  # the words are a courtesy: the command stops all the same
            taker = None
        return f" ({taker})" if taker else ""

    def _lose(self, reason: str) -> None:
        self.lost = reason
        self.command_cancel.cancel(signal.SIGTERM)
