"""The agent pool (`jit-dispatch start`): keep every agent's slots busy with issues it may take.

Claims happen in the main thread, one after another, through the same tracker calls as `once`,
so one issue goes to one agent; each claimed issue then runs and settles in its own thread
(`dispatch.run_claimed`). A signal stops claiming, and the shared cancel token makes every running
command stop and release its issue, exactly as a cancelled `once` does.

A cycle runs every poll interval, or sooner when something calls `wake` (a run settled, a webhook,
a change to the store). Every event (start, claim, settle, cycle, status, webhook) goes to the
sinks — the log, and the metrics when the pool listens (jit_dispatch/service).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from jit_dispatch.domain.gates import GateRun, Step
from jit_dispatch.domain.issue import Gate, Issue
from jit_dispatch.domain.selection import Filters
from jit_dispatch.domain.values import Outcome
from jit_dispatch.engine.dispatch import Request, Result, claim_first, plan_for, run_claimed
from jit_dispatch.process import credentials
from jit_dispatch.process.child import CancelToken, RunResult
from jit_dispatch.report.status import queue_figures
from jit_dispatch.trackers.base import Tracker

STATUS_EVERY_SECONDS = 60.0
CANCEL_CHECK_SECONDS = 0.1  # how soon an idle pool notices a signal
STALL_SECONDS = 300.0  # /healthz fails when the loop has not come round for this long (or 3 polls)


class Sink(Protocol):
    """Where pool events go: the log (service/logs.py), the metrics (service/metrics.py)."""

    def emit(self, event: str, fields: Mapping[str, Any]) -> None: ...


@dataclass
class Slot:
    """One agent of the pool and what it is running now."""

    agent_id: str
    capacity: int
    request: Request
    running: dict[str, threading.Thread] = field(default_factory=dict)  # issue id → its run

    @property
    def free(self) -> int:
        return self.capacity - len(self.running)


class LogHooks:
    """A claim's output (gates and command) goes to one log file; the pool prints one line per event."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: BinaryIO | None = None

    def _open(self, header: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("ab")
        self._handle.write(header.encode("utf-8", errors="replace"))

    def _close(self, footer: str = "") -> None:
        if self._handle is not None:
            self._handle.write(footer.encode("utf-8", errors="replace"))
            self._handle.close()
            self._handle = None

    def command_starting(self, issue: Issue, attempt: int) -> None:
        self._open("")

    def output(self, chunk: bytes) -> None:
        if self._handle is not None:
            self._handle.write(chunk)

    def command_finished(self, run: RunResult) -> None:
        self._close()

    def gate_starting(self, step: Step) -> None:
        self._open(f"\n--- jit-dispatch: {step.label} ({step.stage})\n")

    def gate_finished(self, run: GateRun) -> None:
        self._close(f"\n--- jit-dispatch: {run.step.label}: {run.status}\n")


class Pool:
    def __init__(
        self,
        tracker: Tracker,
        slots: list[Slot],
        *,
        cancel: CancelToken,
        poll_interval: float,
        log_dir: Path,
        base_env: Mapping[str, str],
        sinks: Sequence[Sink],
    ) -> None:
        self.tracker = tracker
        self.slots = slots
        self.cancel = cancel
        self.poll_interval = poll_interval
        self.log_dir = log_dir
        self.base_env = base_env
        self.sinks = list(sinks)
        self.results: list[Result] = []
        self.stall_after = max(STALL_SECONDS, 3 * poll_interval)
        self._lock = threading.Lock()  # guards `running`, `results` and the sinks
        self._wake = threading.Event()
        self._wake_reason = "poll"
        self._last_status = 0.0
        self._tick = time.monotonic()  # the loop's last sign of life
        self._stopped = False
        self._ready: tuple[bool, str] = (False, "no cycle yet")

    # ------------------------------------------------------------------ what the service asks
    def emit(self, event: str, **fields: Any) -> None:
        with self._lock:
            for sink in self.sinks:
                sink.emit(event, fields)

    def wake(self, reason: str) -> None:
        """Start the next cycle now (a webhook, a change to the store, a finished run)."""
        self._wake_reason = reason
        self._wake.set()

    def alive(self) -> tuple[bool, str]:
        if self._stopped:
            return False, "the pool has stopped"
        silent = time.monotonic() - self._tick
        if silent > self.stall_after:
            return False, f"the pool loop has not come round for {silent:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self.cancel.cancelled or self._stopped:
            return False, "stopping"
        return self._ready

    # ------------------------------------------------------------------ the loop
    def run(self, *, once: bool = False) -> list[Result]:
        """Fill free slots every poll interval (or when woken) until cancelled; `once`: one cycle."""
        agents = [{"agent": s.agent_id, "assignee": s.request.agent, "capacity": s.capacity} for s in self.slots]
        self.emit("start", store=self.tracker.location, agents=agents, poll_interval_secs=self.poll_interval)
        trigger = "start"
        try:
            while not self.cancel.cancelled:
                self.cycle(trigger, strict=once)
                if once:
                    break
                self._status_line()
                trigger = self._idle()
            self._wait_for_runs()
        finally:
            self._stopped = True
        return self.results

    def cycle(self, trigger: str, *, strict: bool = False) -> int:
        """One fill cycle, reported; a failure (store unreadable, remote unreachable) is counted and
        the pool carries on at the next poll, unless `strict` (`start --once`), where it propagates."""
        started = self._tick = time.monotonic()
        try:
            claimed, queue = self.fill()
        except Exception as exc:
            self._ready = (False, f"last cycle failed: {exc}")
            error = f"{type(exc).__name__}: {exc}"
            self.emit("cycle", trigger=trigger, claimed=0, ready_issues=None, oldest_ready_age_seconds=None,
                      duration_seconds=round(time.monotonic() - started, 3), error=error)  # fmt: skip
            if strict:
                raise
            return 0
        self._tick = time.monotonic()
        self._ready = (True, "ok")
        self.emit("cycle", trigger=trigger, claimed=claimed, **queue,
                  duration_seconds=round(self._tick - started, 3), error=None)  # fmt: skip
        return claimed

    def _idle(self) -> str:
        """Until the next poll, a wake-up, or a signal (its handler only sets the token); returns why."""
        deadline = time.monotonic() + self.poll_interval
        reason = "poll"
        while not self.cancel.cancelled and (left := deadline - time.monotonic()) > 0:
            self._tick = time.monotonic()
            if self._wake.wait(min(left, CANCEL_CHECK_SECONDS)):
                reason = self._wake_reason
                break
        self._wake.clear()
        return reason

    def fill(self) -> tuple[int, dict[str, Any]]:
        """Claim the next issue each free slot may take; returns how many were claimed and the queue."""
        snapshot = self.tracker.snapshot()
        overall = plan_for(snapshot, Filters())
        taken: set[str] = set()
        claimed_now = 0
        for slot in self.slots:
            if slot.free <= 0 or self.cancel.cancelled:
                continue
            plan = plan_for(snapshot, slot.request.filters, slot.request.gates == "run")
            candidates = [issue for issue in plan.dispatchable if issue.id not in taken]
            while slot.free > 0 and candidates and not self.cancel.cancelled:
                claimed = claim_first(self.tracker, slot.request, candidates, self.cancel)
                if claimed is None:
                    break
                taken.add(claimed.id)
                candidates = [issue for issue in candidates if issue.id != claimed.id]
                self._start(slot, claimed, snapshot.gates)
                claimed_now += 1
        left = [issue for issue in overall.dispatchable if issue.id not in taken]  # the queue after this cycle
        return claimed_now, queue_figures(left, datetime.now(UTC))

    def _start(self, slot: Slot, issue: Issue, registry: Mapping[str, Gate]) -> None:
        thread = threading.Thread(
            target=self._run_one, args=(slot, issue, registry), name=f"run-{issue.short_id}", daemon=True
        )
        with self._lock:
            slot.running[issue.id] = thread
        self.emit("claim", **self._issue_fields(slot, issue))
        thread.start()

    def _issue_fields(self, slot: Slot, issue: Issue) -> dict[str, Any]:
        return {
            "agent": slot.agent_id,
            "assignee": slot.request.agent,
            "issue_id": issue.id,
            "short_id": issue.short_id,
            "priority": issue.priority,
            "attempt": issue.failed_attempts + 1,
            "busy": slot.capacity - slot.free,
            "capacity": slot.capacity,
        }

    def _run_one(self, slot: Slot, issue: Issue, registry: Mapping[str, Gate]) -> None:
        hooks = LogHooks(self.log_dir / f"{issue.short_id}-attempt{issue.failed_attempts + 1}.log")
        result = Result(Outcome.ERROR, slot.request.agent, self.tracker.location)
        result.command = slot.request.command
        try:
            run_claimed(self.tracker, slot.request, issue, self.cancel, hooks, self.base_env, result, registry)
        except Exception as exc:  # a tracker failure must not take the pool down
            result.outcome, result.reason = Outcome.ERROR, str(exc)
        finally:
            with self._lock:
                slot.running.pop(issue.id, None)
                self.results.append(result)
            self.wake("settle")
        self.emit("settle", **self._issue_fields(slot, issue), outcome=str(result.outcome), exit_code=result.exit_code,
                  duration_seconds=result.duration_seconds,
                  reason=result.reason and credentials.scrub(result.reason))  # fmt: skip

    def _status_line(self) -> None:
        now = time.monotonic()
        if now - self._last_status < STATUS_EVERY_SECONDS and self._last_status:
            return
        self._last_status = now
        agents = [{"agent": s.agent_id, "busy": s.capacity - s.free, "capacity": s.capacity} for s in self.slots]
        self.emit("status", agents=agents, settled=len(self.results))

    def _wait_for_runs(self) -> None:
        while True:
            with self._lock:
                threads = [t for slot in self.slots for t in slot.running.values()]
            if not threads:
                return
            for thread in threads:
                thread.join()
