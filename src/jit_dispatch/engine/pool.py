"""The agent pool (`jit-dispatch start`): keep every agent's slots busy with issues it may take.

Claims happen in the main thread, one after another, through the same tracker calls as `once`,
so one issue goes to one agent; each claimed issue then runs and settles in its own thread
(`dispatch.run_claimed`). A signal stops claiming, and the shared cancel token makes every running
command stop and release its issue, exactly as a cancelled `once` does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

from jit_dispatch.domain import selection
from jit_dispatch.domain.gates import GateRun, Step
from jit_dispatch.domain.issue import Gate, Issue
from jit_dispatch.domain.values import Outcome
from jit_dispatch.engine.dispatch import Request, Result, claim_first, run_claimed
from jit_dispatch.process.child import CancelToken, RunResult
from jit_dispatch.trackers.base import Tracker

STATUS_EVERY_SECONDS = 60.0
CANCEL_CHECK_SECONDS = 0.1  # how soon an idle pool notices a signal


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
        out: TextIO,
        base_env: Mapping[str, str],
    ) -> None:
        self.tracker = tracker
        self.slots = slots
        self.cancel = cancel
        self.poll_interval = poll_interval
        self.log_dir = log_dir
        self.out = out
        self.base_env = base_env
        self.results: list[Result] = []
        self._lock = threading.Lock()  # guards `running`, `results` and the output stream
        self._wake = threading.Event()
        self._last_status = 0.0

    def say(self, line: str) -> None:
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()

    def run(self, *, once: bool = False) -> list[Result]:
        """Fill free slots every poll interval (or when a run ends) until cancelled."""
        self.say(f"jit-dispatch: pool of {len(self.slots)} agent(s) on {self.tracker.location}")
        while not self.cancel.cancelled:
            self.fill()
            if once:
                break
            self._status_line()
            self._idle()
        self._wait_for_runs()
        return self.results

    def _idle(self) -> None:
        """Until the next poll, the end of a run, or a signal (its handler only sets the token)."""
        deadline = time.monotonic() + self.poll_interval
        while not self.cancel.cancelled and (left := deadline - time.monotonic()) > 0:
            if self._wake.wait(min(left, CANCEL_CHECK_SECONDS)):
                break
        self._wake.clear()

    def fill(self) -> int:
        """One cycle: claim the next issue each free slot may take; returns how many were claimed."""
        if all(slot.free <= 0 for slot in self.slots):
            return 0
        snapshot = self.tracker.snapshot()
        taken: set[str] = set()
        claimed_now = 0
        for slot in self.slots:
            if slot.free <= 0 or self.cancel.cancelled:
                continue
            plan = selection.plan(
                snapshot.issues,
                snapshot.states,
                snapshot.gates,
                slot.request.filters,
                snapshot.locked,
                slot.request.gates == "run",
            )
            candidates = [issue for issue in plan.dispatchable if issue.id not in taken]
            while slot.free > 0 and candidates and not self.cancel.cancelled:
                claimed = claim_first(self.tracker, slot.request, candidates, self.cancel)
                if claimed is None:
                    break
                taken.add(claimed.id)
                candidates = [issue for issue in candidates if issue.id != claimed.id]
                self._start(slot, claimed, snapshot.gates)
                claimed_now += 1
        return claimed_now

    def _start(self, slot: Slot, issue: Issue, registry: Mapping[str, Gate]) -> None:
        thread = threading.Thread(
            target=self._run_one, args=(slot, issue, registry), name=f"run-{issue.short_id}", daemon=True
        )
        with self._lock:
            slot.running[issue.id] = thread
        busy = slot.capacity - slot.free
        self.say(f"claim   {issue.short_id} → {slot.request.agent} ({busy}/{slot.capacity} busy)  {issue.priority}")
        thread.start()

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
            self._wake.set()
        code = "–" if result.exit_code is None else result.exit_code
        reason = f"  {result.reason}" if result.reason else ""
        self.say(f"settle  {issue.short_id} {result.outcome} ({slot.request.agent}, exit {code}){reason}")

    def _status_line(self) -> None:
        now = time.monotonic()
        if now - self._last_status < STATUS_EVERY_SECONDS and self._last_status:
            return
        self._last_status = now
        busy = " · ".join(f"{s.agent_id} {s.capacity - s.free}/{s.capacity}" for s in self.slots)
        self.say(f"pool    {busy} · settled {len(self.results)}")

    def _wait_for_runs(self) -> None:
        while True:
            with self._lock:
                threads = [t for slot in self.slots for t in slot.running.values()]
            if not threads:
                return
            for thread in threads:
                thread.join()
