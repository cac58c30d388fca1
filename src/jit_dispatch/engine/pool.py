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

import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

from jit_dispatch.domain.issue import Gate, Issue
from jit_dispatch.domain.result import Result
from jit_dispatch.domain.selection import Filters, queue_figures
from jit_dispatch.domain.values import Outcome, State
from jit_dispatch.engine.dispatch import CANCEL_SETTLE_SECONDS, Request, claim_first, plan_for, run_claimed
from jit_dispatch.engine.heartbeat import EitherCancel
from jit_dispatch.engine.merges import notice_merges_for
from jit_dispatch.engine.runs import LogHooks, Run, SettleKeeper, claim_gone
from jit_dispatch.errors import SettlementPending, TrackerError
from jit_dispatch.process import credentials, runlock
from jit_dispatch.process.child import CancelToken
from jit_dispatch.trackers.base import Settlement, Snapshot, Tracker

STATUS_EVERY_SECONDS = 60.0
RECENT_RESULTS = 50  # results kept in memory (the rest are counted, logged and in the store)
CANCEL_CHECK_SECONDS = 0.1  # how soon an idle pool notices a signal
COALESCE_SECONDS = 0.5  # webhook-started cycles come at most this often
SETTLE_RETRY_SECONDS = (1.0, 60.0)  # a failed settle is retried after 1 s, doubling up to 60 s
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
    running: dict[str, Run] = field(default_factory=dict)  # run token → the run (never keyed by issue)

    @property
    def free(self) -> int:
        return self.capacity - len(self.running)


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
        # Counters and the last RECENT_RESULTS results, never every result: a pool runs for months.
        self.recent: deque[Result] = deque(maxlen=RECENT_RESULTS)
        self.settled = 0
        self.failed = 0
        self.stall_after = max(STALL_SECONDS, 3 * poll_interval)
        self._lock = threading.Lock()  # guards `running`, the results and the sinks
        self._wake = threading.Event()
        self._wake_reason = "poll"
        self._last_status = 0.0
        self._tick = time.monotonic()  # the loop's last sign of life
        self._cycle_started = 0.0
        self._stopped = False
        self._ready: tuple[bool, str] = (False, "no cycle yet")
        self._warned: set[str] = set()  # the last snapshot's warnings (a corrupt file, an odd id)
        self._pending: dict[str, str] = {}  # run token → the settle being retried, for /readyz

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
        with self._lock:
            pending = list(self._pending.values())
        if pending:
            return False, "; ".join(pending)
        return self._ready

    # ------------------------------------------------------------------ the loop
    def run(self, *, once: bool = False) -> None:
        """Fill free slots every poll interval (or when woken) until cancelled; `once`: one cycle."""
        agents = [{"agent": s.agent_id, "assignee": s.request.agent, "capacity": s.capacity} for s in self.slots]
        self.emit("start", store=self.tracker.location, agents=agents, poll_interval_secs=self.poll_interval)
        for issue_id, pids in runlock.sweep():  # commands a killed dispatcher left running on this machine
            self.emit("sweep", issue_id=issue_id, short_id=issue_id[:8], killed=pids)
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

    def cycle(self, trigger: str, *, strict: bool = False) -> int:
        """One fill cycle, reported; a failure (store unreadable, remote unreachable) is counted and
        the pool carries on at the next poll, unless `strict` (`start --once`), where it propagates."""
        started = self._tick = self._cycle_started = time.monotonic()
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
        # A burst of webhooks costs one cycle per COALESCE_SECONDS, not one per request: the wakes
        # that come meanwhile are absorbed by the cycle that follows.
        hold = self._cycle_started + COALESCE_SECONDS if reason == "webhook" else 0.0
        while not self.cancel.cancelled and (left := hold - time.monotonic()) > 0:
            self._tick = time.monotonic()
            time.sleep(min(left, CANCEL_CHECK_SECONDS))
        self._wake.clear()
        return reason

    def fill(self) -> tuple[int, dict[str, Any]]:
        """Claim the next issue each free slot may take; returns how many were claimed and the queue.

        An issue this pool runs is never a candidate, whatever the store says of it (a stale write
        may show it `ready`); the runs whose claim the store no longer shows are stopped first.
        """
        with self._lock:
            runs = [(slot, run) for slot in self.slots for run in slot.running.values()]
        states = (State.READY, State.IN_PROGRESS) if runs else (State.READY,)
        snapshot = self.tracker.snapshot(full_states=states)
        noticed = notice_merges_for(self.tracker, self.slots[0].request) if self.slots else None
        for note in noticed.notes if noticed else ():
            self.emit("merge", note=note)
        if noticed and noticed.settled:  # what the merges promoted is dispatchable in this cycle
            snapshot = self.tracker.snapshot(full_states=states)
        for warning in set(snapshot.warnings) - self._warned:  # a corrupt file: said once while it stays so
            self.emit("warning", warning=warning)
        self._warned = set(snapshot.warnings)
        self._check_claims(snapshot, runs)
        overall = plan_for(snapshot, Filters())
        taken = {run.issue.id for _, run in runs}
        claimed_now = 0
        for slot in self.slots:
            if slot.free <= 0 or self.cancel.cancelled:
                continue
            plan = plan_for(snapshot, slot.request.filters, slot.request.gates == "run", slot.request.agent)
            candidates = [issue for issue in plan.dispatchable if issue.id not in taken]
            while slot.free > 0 and candidates and not self.cancel.cancelled:
                request = replace(slot.request, run_ref=f"{slot.request.run_ref}#{os.urandom(6).hex()}")
                claimed = claim_first(self.tracker, request, candidates, self.cancel)
                if claimed is None:
                    break
                taken.add(claimed.id)
                candidates = [issue for issue in candidates if issue.id != claimed.id]
                self._start(slot, request, claimed, snapshot.gates)
                claimed_now += 1
        left = [issue for issue in overall.dispatchable if issue.id not in taken]  # the queue after this cycle
        return claimed_now, queue_figures(left, datetime.now(UTC))

    def _check_claims(self, snapshot: Snapshot, runs: list[tuple[Slot, Run]]) -> None:
        """Stop each run whose claim the store no longer shows as its own (docs/service.md#one-issue-one-run).

        jit's `issue update` reads an issue before it locks it, so a write of it can put back the
        issue as it was before our claim: `ready`, unassigned. The command is then stopped (not the
        claim re-asserted) and its settle finds the claim lost and writes nothing; the issue is
        claimed afresh once the run has ended, never while it runs.
        """
        issues = {issue.id: issue for issue in snapshot.issues}
        for slot, run in runs:
            if run.exited or run.stopped:
                continue
            why = claim_gone(issues.get(run.issue.id), snapshot.states.get(run.issue.id), slot.request.agent, run.token)
            if why is not None:
                run.stopped = why
                run.cancel.cancel(signal.SIGTERM)
                self.emit("claim_lost", **self._issue_fields(slot, run.issue), reason=why)

    def _start(self, slot: Slot, request: Request, issue: Issue, registry: Mapping[str, Gate]) -> None:
        run = Run(issue, request.run_ref, EitherCancel(self.cancel))
        run.thread = threading.Thread(
            target=self._run_one, args=(slot, request, run, registry), name=f"run-{issue.short_id}", daemon=True
        )
        with self._lock:
            slot.running[run.token] = run
        self.emit("claim", **self._issue_fields(slot, issue))
        run.thread.start()

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

    def _run_one(self, slot: Slot, request: Request, run: Run, registry: Mapping[str, Gate]) -> None:
        issue = run.issue
        hooks = LogHooks(self.log_dir / f"{issue.short_id}-attempt{issue.failed_attempts + 1}.log", run)
        result = Result(Outcome.ERROR, request.agent, self.tracker.location)
        result.command = request.command
        tracker = SettleKeeper(self.tracker, self.cancel)
        try:
            run_claimed(cast(Tracker, tracker), request, issue, run.cancel, hooks, self.base_env, result, registry)
            if tracker.failed is not None:
                self._retry_settle(slot, run, tracker.failed, result)
        except Exception as exc:  # a tracker failure must not take the pool down
            result.outcome, result.reason = Outcome.ERROR, str(exc)
        finally:
            with self._lock:
                self._pending.pop(run.token, None)
            if run.stopped is not None and self.cancel.signum is None:  # we stopped it: not a cancellation
                result.cancelled_by = None
                if result.outcome == Outcome.LOST:
                    result.reason = f"{run.stopped}; command stopped"
            with self._lock:
                slot.running.pop(run.token, None)
                self.recent.append(result)
                self.settled += 1
                self.failed += result.outcome.failed
            self.wake("settle")
        self.emit("settle", **self._issue_fields(slot, issue), outcome=str(result.outcome), exit_code=result.exit_code,
                  duration_seconds=result.duration_seconds,
                  reason=result.reason and credentials.scrub(result.reason))  # fmt: skip

    def _retry_settle(
        self, slot: Slot, run: Run, failed: tuple[Callable[[], Settlement], str | None, str], result: Result
    ) -> None:
        """Retry a failed settle with backoff until it lands or finds the claim lost; the run keeps its
        slot meanwhile, so its issue is not claimed again. A stopping pool tries within the cancel budget."""
        call, reason, error = failed
        delay, retries = SETTLE_RETRY_SECONDS[0], 0
        while True:
            with self._lock:
                self._pending[run.token] = f"the settle of {run.issue.short_id} failed ({error}); retrying"
            self.emit("settle_retry", **self._issue_fields(slot, run.issue), error=error, retry_in_seconds=delay)
            until = time.monotonic() + delay
            while time.monotonic() < until and not self.cancel.cancelled:
                time.sleep(CANCEL_CHECK_SECONDS)
            if self.cancel.cancelled:
                self.tracker.hurry(CANCEL_SETTLE_SECONDS)
            retries += 1
            try:
                settlement = call()
            except SettlementPending as exc:
                result.reason = f"{reason or 'command succeeded'}; {exc}"
                return
            except TrackerError as exc:
                if self.cancel.cancelled:
                    return  # the claim stays for `reap`; the next pool's settle is not ours to make
                error, delay = str(exc), min(2 * delay, SETTLE_RETRY_SECONDS[1])
                continue
            result.outcome, result.promoted = settlement.outcome, settlement.promoted
            result.reason = settlement.error or reason
            if settlement.outcome == Outcome.LOST:
                result.reason = "the claim was lost while the settle was retried; nothing written"
            result.warnings.append(f"settled after {retries} retr{'y' if retries == 1 else 'ies'}")
            return

    def _status_line(self) -> None:
        now = time.monotonic()
        if now - self._last_status < STATUS_EVERY_SECONDS and self._last_status:
            return
        self._last_status = now
        agents = [{"agent": s.agent_id, "busy": s.capacity - s.free, "capacity": s.capacity} for s in self.slots]
        self.emit("status", agents=agents, settled=self.settled)

    def _wait_for_runs(self) -> None:
        while True:
            with self._lock:
                threads = [run.thread for slot in self.slots for run in slot.running.values() if run.thread]
            if not threads:
                return
            for thread in threads:
                thread.join()
