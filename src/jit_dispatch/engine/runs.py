"""One claim of the pool being worked on: its token, how it is stopped, its settle and its log.

engine/pool.py runs each claim in a thread of its own; what that thread needs besides the
dispatch itself lives here (docs/service.md#one-issue-one-run, docs/service.md#health-and-readiness).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from jit_dispatch.domain.gates import GateRun, Step
from jit_dispatch.domain.issue import CTX_RUN, Issue
from jit_dispatch.domain.secrets import StreamScrub
from jit_dispatch.domain.values import State
from jit_dispatch.engine.heartbeat import EitherCancel
from jit_dispatch.errors import SettlementPending, TrackerError
from jit_dispatch.process import credentials
from jit_dispatch.process.child import CancelToken, RunResult
from jit_dispatch.trackers.base import Settlement, Tracker


@dataclass
class Run:
    """One claim being worked on: its own token (`dispatch.run`) and its own way to be stopped."""

    issue: Issue
    token: str
    cancel: EitherCancel
    thread: threading.Thread | None = None
    exited: bool = False  # the command has ended: nothing left to stop
    stopped: str | None = None  # why the pool stopped it (the claim was taken back)


class SettleKeeper:
    """The tracker as one run sees it: the first settle that fails (a lock held too long, a disk
    error) is kept, so the pool can retry it after `run_claimed` has reported the failure; `hurry`
    passes only while the pool itself stops."""

    def __init__(self, tracker: Tracker, pool_cancel: CancelToken) -> None:
        self._tracker = tracker
        self._pool_cancel = pool_cancel
        self.failed: tuple[Callable[[], Settlement], str | None, str] | None = None  # call, its reason, error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tracker, name)

    def hurry(self, seconds: float) -> None:
        """Only when the pool stops: a run the pool stopped itself must not shorten the lock waits of
        the store every other run and the next claims share."""
        if self._pool_cancel.cancelled:
            self._tracker.hurry(seconds)

    def complete(self, issue_id: str, assignee: str, **kw: Any) -> Settlement:
        return self._keep(lambda: self._tracker.complete(issue_id, assignee, **kw), None)

    def release(self, issue_id: str, assignee: str, reason: str, max_attempts: int, **kw: Any) -> Settlement:
        return self._keep(lambda: self._tracker.release(issue_id, assignee, reason, max_attempts, **kw), reason)

    def _keep(self, call: Callable[[], Settlement], reason: str | None) -> Settlement:
        try:
            return call()
        except SettlementPending:
            raise  # recorded already; a later run finishes it
        except TrackerError as exc:
            if self.failed is None:
                self.failed = (call, reason, str(exc))
            raise


def claim_gone(issue: Issue | None, state: str | None, assignee: str, token: str) -> str | None:
    """Why the store no longer shows this run's claim as its own, or None (unknown counts as ours)."""
    if state is None:
        return None  # unreadable or gone for a moment: the settle's own check decides
    if state != State.IN_PROGRESS:
        return f"the store shows the issue {state} (a write from before the claim took it back)"
    if issue is None:
        return None
    if issue.assignee is not None and issue.assignee != assignee:  # None: a backend that did not say
        return f"the issue was reassigned to {issue.assignee}"
    run = issue.context.get(CTX_RUN)
    if run is not None and run != token:
        return "the issue was claimed again by another run"
    return None


class LogHooks:
    """A claim's output (gates and command) goes to one log file; the pool prints one line per event."""

    def __init__(self, path: Path, run: Run | None = None) -> None:
        """Every known secret, in every form (`process.credentials`), is cut out of the file too."""
        self.path = path
        self.run = run
        self._handle: BinaryIO | None = None
        self._scrub = StreamScrub(credentials.scrubber())

    def _open(self, header: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("ab")
        self._handle.write(header.encode("utf-8", errors="replace"))

    def _close(self, footer: str = "") -> None:
        if self._handle is not None:
            self._handle.write(self._scrub.end() + footer.encode("utf-8", errors="replace"))
            self._handle.close()
            self._handle = None

    def command_starting(self, issue: Issue, attempt: int) -> None:
        self._open("")

    def output(self, chunk: bytes) -> None:
        if self._handle is not None:
            self._handle.write(self._scrub.feed(chunk))

    def command_finished(self, run: RunResult) -> None:
        if self.run is not None:
            self.run.exited = True
        self._close()

    def gate_starting(self, step: Step) -> None:
        self._open(f"\n--- jit-dispatch: {step.label} ({step.stage})\n")

    def gate_finished(self, run: GateRun) -> None:
        self._close(f"\n--- jit-dispatch: {run.step.label}: {run.status}\n")
