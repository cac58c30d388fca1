"""Several stores as one tracker: the best issue across all of them, claimed in its own store."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from jit_dispatch.domain.delivery import Delivery
from jit_dispatch.domain.issue import Issue
from jit_dispatch.domain.selection import Filters
from jit_dispatch.domain.staleness import Claim
from jit_dispatch.trackers.base import (
    ClaimTiming,
    GateRecord,
    Liveness,
    Settlement,
    Snapshot,
    StateCopy,
    Tracker,
    TrackerDefaults,
)


class MultiTracker(TrackerDefaults):
    """Issue ids are UUIDs, so one id names one store; every call is routed to that store.

    Gate registries are merged (the first store's definition of a key wins), so a manual precheck
    is honoured whichever store defines it.
    """

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = list(trackers)
        self.location = ", ".join(t.location for t in self.trackers)
        self._owner: dict[str, Tracker] = {}

    def snapshot(self, full_states: Iterable[str] = ("ready",), *, leads: bool = False) -> Snapshot:
        wanted = tuple(full_states)
        merged = Snapshot(issues=[], states={}, gates={}, all_ids=[])
        locked: set[str] = set()
        for tracker in self.trackers:
            part = tracker.snapshot(wanted, leads=leads)
            merged.issues.extend(part.issues)
            merged.states.update(part.states)
            for key, gate in part.gates.items():
                merged.gates.setdefault(key, gate)
            merged.all_ids.extend(part.all_ids)
            merged.warnings.extend(part.warnings)
            locked |= part.locked
            merged.leases.update(part.leases)
            merged.rule_holds.update(part.rule_holds)
            self._owner.update(dict.fromkeys(part.all_ids, tracker))
        merged.locked = frozenset(locked)
        return merged

    def issue_ids(self) -> list[str]:
        ids: list[str] = []
        for tracker in self.trackers:
            own = tracker.issue_ids()
            self._owner.update(dict.fromkeys(own, tracker))
            ids.extend(own)
        return ids

    def _store(self, issue_id: str) -> Tracker:
        if issue_id not in self._owner:
            self.issue_ids()
        return self._owner[issue_id]

    def claim(self, issue_id: str, assignee: str, run: str, filters: Filters) -> Issue | None:
        return self._store(issue_id).claim(issue_id, assignee, run, filters)

    def complete(self, issue_id: str, assignee: str, *, gate_runs: Sequence[GateRecord] = ()) -> Settlement:
        return self._store(issue_id).complete(issue_id, assignee, gate_runs=gate_runs)

    def release(
        self,
        issue_id: str,
        assignee: str,
        reason: str,
        max_attempts: int,
        *,
        seen: Liveness | None = None,
        gate_runs: Sequence[GateRecord] = (),
        count_attempt: bool = True,
    ) -> Settlement:
        return self._store(issue_id).release(
            issue_id, assignee, reason, max_attempts, seen=seen, gate_runs=gate_runs, count_attempt=count_attempt
        )

    def hold_for_merge(
        self, issue_id: str, assignee: str, delivery: Delivery, *, gate_runs: Sequence[GateRecord] = ()
    ) -> Settlement:
        return self._store(issue_id).hold_for_merge(issue_id, assignee, delivery, gate_runs=gate_runs)

    def awaiting_merge(self) -> list[tuple[str, Delivery]]:
        return [waiting for tracker in self.trackers for waiting in tracker.awaiting_merge()]

    def finish_merged(self, issue_id: str, note: str) -> Settlement:
        return self._store(issue_id).finish_merged(issue_id, note)

    def return_for_changes(self, issue_id: str, reason: str, max_review_rounds: int) -> Settlement:
        return self._store(issue_id).return_for_changes(issue_id, reason, max_review_rounds)

    def release_unmerged(self, issue_id: str, reason: str, max_attempts: int) -> Settlement:
        return self._store(issue_id).release_unmerged(issue_id, reason, max_attempts)

    def checker_root(self, issue_id: str) -> Path | None:
        return self._store(issue_id).checker_root(issue_id)

    def gate_history(self, issue_id: str, gate_key: str) -> list[dict[str, Any]]:
        return self._store(issue_id).gate_history(issue_id, gate_key)

    def heartbeat(
        self, issue_id: str, assignee: str, *, interval: float | None = None, deadline: float | None = None
    ) -> bool:
        return self._store(issue_id).heartbeat(issue_id, assignee, interval=interval, deadline=deadline)

    def claim_timing(self, issue_id: str) -> ClaimTiming | None:
        return self._store(issue_id).claim_timing(issue_id)

    def materialise(self, issue_id: str) -> StateCopy | None:
        return self._store(issue_id).materialise(issue_id)

    def taken_by(self, issue_id: str, assignee: str) -> str | None:
        return self._store(issue_id).taken_by(issue_id, assignee)

    def issue_now(self, issue_id: str) -> Issue | None:
        return self._store(issue_id).issue_now(issue_id)

    def unpark(self, issue_id: str) -> bool:
        return self._store(issue_id).unpark(issue_id)

    def repair(self) -> list[str]:
        return [note for tracker in self.trackers for note in tracker.repair()]

    def record_result(self, result: Any, render: Callable[[Any], str]) -> str | None:
        return self._store(result.issue.id).record_result(result, render) if result.issue else None

    def location_of(self, issue_id: str) -> str:
        return self._store(issue_id).location_of(issue_id)

    def confirm_dead(self, claims: Sequence[Claim], older_than: float) -> list[Claim]:
        dead: list[Claim] = []
        for tracker in self.trackers:
            dead += tracker.confirm_dead([c for c in claims if self._store(c.issue.id) is tracker], older_than)
        return dead

    def flush(self) -> None:
        for tracker in self.trackers:
            tracker.flush()

    def hurry(self, seconds: float) -> None:
        for tracker in self.trackers:
            tracker.hurry(seconds)

    def stats(self) -> dict[str, object]:
        merged: dict[str, object] = {}
        for tracker in self.trackers:
            for key, value in tracker.stats().items():
                if isinstance(value, list):
                    merged[key] = [*merged.get(key, []), *value]  # type: ignore[misc]
                elif isinstance(value, int):
                    merged[key] = int(merged.get(key, 0)) + value  # type: ignore[call-overload]
        return merged
