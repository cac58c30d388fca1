"""The jit tracker, read and written natively in `.jit/` (docs/jit-format.md: #layout to #locks).

`JitStore` is the files (`storefiles.py`), claims and settles (`settling.py`), and here what
waits for a merge (docs/delivery.md), the gate history checkers read, and issue creation.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jit_dispatch.domain import boundedjson, transitions
from jit_dispatch.domain.delivery import Delivery, delivery_context, delivery_from_context
from jit_dispatch.domain.issue import Issue, IssueFormatError, issue_from_raw, parse_issue
from jit_dispatch.domain.values import RESOLVED_STATES, Outcome, State
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.base import GateRecord, Settlement, TrackerDefaults
from jit_dispatch.trackers.jit.files import atomic_write, dumps_pretty
from jit_dispatch.trackers.jit.locks import flock
from jit_dispatch.trackers.jit.settling import SettlingStore
from jit_dispatch.trackers.jit.storefiles import GATE_RUNS, lock_timeout_as_error


@dataclass(frozen=True)
class NewIssue:
    """An issue to create (demo, tests, benchmarks): what `jit issue create` + `dep add` make."""

    title: str
    priority: str = "normal"
    description: str = ""
    labels: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()
    gates_required: tuple[str, ...] = ()
    created_at: str | None = None


class JitStore(SettlingStore, TrackerDefaults):
    # ----------------------------------------------------------------- delivery (docs/delivery.md)
    def hold_for_merge(
        self,
        issue_id: str,
        assignee: str,
        delivery: Delivery,
        *,
        gate_runs: Sequence[GateRecord] = (),
        now: str | None = None,
        given_up: bool = False,
    ) -> Settlement:
        def change(judged: dict[str, Any], at: str) -> tuple[dict[str, Any], list[dict[str, Any]], Outcome]:
            return transitions.hold(judged, delivery_context(delivery), at)

        settled = self._settle(issue_id, assignee, gate_runs, now, change, given_up=given_up)
        if isinstance(settled, Settlement):
            return settled
        return Settlement(settled[2], settled[0].failed_attempts, reason=settled[4])

    def awaiting_merge(self) -> list[tuple[str, Delivery]]:
        """The `gated` issues of the last snapshot (one is taken if there was none) that wait for a
        merge, from the bytes that scan read: a file without the delivery key is not parsed at all."""
        if self._promotion_view is None:
            self.snapshot(full_states=())
        waiting = []
        for issue_id, data in self._delivered.items():
            try:
                issue = parse_issue(data, issue_id)
            except ValueError:
                continue
            found = delivery_from_context(issue.context) if transitions.waiting_for_merge(issue.raw) else None
            if found is not None:
                waiting.append((issue_id, found))
        return waiting

    def finish_merged(self, issue_id: str, note: str, *, now: str | None = None) -> Settlement:
        settled = self._change_waiting(issue_id, now, transitions.merged)
        if isinstance(settled, Settlement):
            return settled
        promoted: list[str] = []
        if settled[2] == Outcome.DONE:
            try:
                self._promote_unblocked(issue_id, promoted)
            except TrackerError as exc:
                error = f"{issue_id[:8]} is done ({note}), but promoting the issues it unblocks failed: {exc}"
                return Settlement(Outcome.DONE, settled[0].failed_attempts, tuple(promoted), error=error)
        return Settlement(settled[2], settled[0].failed_attempts, tuple(promoted))

    def return_for_changes(
        self, issue_id: str, reason: str, max_review_rounds: int, *, now: str | None = None
    ) -> Settlement:
        settled = self._change_waiting(
            issue_id, now, lambda raw, at: transitions.returned(raw, reason, max_review_rounds, at)
        )
        return settled if isinstance(settled, Settlement) else Settlement(settled[2], settled[0].failed_attempts)

    def release_unmerged(self, issue_id: str, reason: str, max_attempts: int, *, now: str | None = None) -> Settlement:
        settled = self._change_waiting(
            issue_id, now, lambda raw, at: transitions.unmerged(raw, reason, max_attempts, at)
        )
        return (
            settled
            if isinstance(settled, Settlement)
            else Settlement(settled[2], int(settled[1]["context"]["dispatch.attempts"]))
        )

    def _change_waiting(
        self,
        issue_id: str,
        now: str | None,
        change: Callable[[dict[str, Any], str], tuple[dict[str, Any], list[dict[str, Any]], Outcome]],
    ) -> tuple[Issue, dict[str, Any], Outcome] | Settlement:
        """`change` applied under jit's locks to an issue still waiting for its merge; `lost` when it is
        not (someone else finished, returned or released it meanwhile)."""
        with self._locked(issue_id):
            current = self.read_issue(issue_id, strict=True)
            if current is None or not transitions.waiting_for_merge(current.raw):
                return Settlement(Outcome.LOST, current.failed_attempts if current else 0)
            raw, events, outcome = change(current.raw, now or transitions.format_timestamp())
            self._write_issue(raw)
        self._log_or_undo(current.raw, raw, events)
        return current, raw, outcome

    def checker_root(self, issue_id: str) -> Path | None:
        """jit runs checkers in the store's parent directory (the repository root)."""
        return self.root.absolute().parent

    def gate_history(self, issue_id: str, gate_key: str) -> list[dict[str, Any]]:
        """This gate's earlier runs for the issue, oldest first; unreadable records are skipped."""
        runs = []
        for path in (self.root / GATE_RUNS).glob("*/result.json"):
            try:
                record = boundedjson.loads(path.read_bytes())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and record.get("issue_id") == issue_id and record.get("gate_key") == gate_key:
                runs.append(record)
        return sorted(runs, key=lambda r: str(r.get("started_at", "")))

    def create_issues(self, specs: Iterable[NewIssue]) -> list[str]:
        """Create issues as `jit issue create` does (+ `dep add`: unresolved deps → backlog)."""
        created: list[tuple[dict[str, Any], dict[str, Any]]] = []
        with lock_timeout_as_error(), flock(self.root / ".index.lock"):
            index_path = self.root / "index.json"
            index = self._load_json(index_path)
            states = {i: s for i in index["all_ids"] if (s := self.state_of(i))}
            for spec in specs:
                raw = self._new_issue_raw(spec, states)
                states[raw["id"]] = raw["state"]
                with flock(self.issues_dir / f"{raw['id']}.lock"):
                    self._write_issue(raw)
                event = transitions.make_event(
                    "issue_created", raw["id"], raw["created_at"], title=raw["title"], priority=raw["priority"]
                )
                created.append((raw, event))
            index["all_ids"] = [*index["all_ids"], *(raw["id"] for raw, _ in created)]
            atomic_write(index_path, dumps_pretty(index))
            self.changed.add(index_path)
        self._append_events([event for _, event in created])
        return [raw["id"] for raw, _ in created]

    @staticmethod
    def _new_issue_raw(spec: NewIssue, states: dict[str, str]) -> dict[str, Any]:
        now = spec.created_at or transitions.format_timestamp()
        blocked = any(states.get(dep) not in RESOLVED_STATES for dep in spec.dependencies)
        raw: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "title": spec.title,
            "description": spec.description,
            "state": str(State.BACKLOG if blocked else State.READY),
            "priority": spec.priority,
            "assignee": None,
            "dependencies": list(spec.dependencies),
            "gates_required": list(spec.gates_required),
            "gates_status": {},
            "context": {},
            "documents": [],
            "labels": list(spec.labels),
            "created_at": now,
            "updated_at": now,
        }
        try:
            issue_from_raw(raw)
        except IssueFormatError as exc:  # e.g. an unknown priority
            raise ValueError(f"issue {spec.title!r}: {exc}") from None
        return raw
