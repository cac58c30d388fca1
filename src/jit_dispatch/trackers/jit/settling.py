"""Claiming and settling in a jit store: the claim, its heartbeat, and every settle of it under
jit's locks (docs/jit-format.md#transitions), with the promotions a `done` brings (#promotion)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from jit_dispatch.domain import gates as gate_rules
from jit_dispatch.domain import transitions
from jit_dispatch.domain.issue import CTX_DELIVERED_AT, CTX_LAST_REASON, Issue, issue_from_raw
from jit_dispatch.domain.selection import Filters, blocking_dependencies, dispatch_reason, matches_filters
from jit_dispatch.domain.values import RESOLVED_STATES, Outcome, State
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.base import GateRecord, Liveness, Settlement
from jit_dispatch.trackers.jit.files import atomic_write, dumps_pretty, fingerprint, read_events, store_error
from jit_dispatch.trackers.jit.storefiles import GATE_RUNS, StoreFiles


class SettlingStore(StoreFiles):
    """Claims, their heartbeats and settles, each under jit's locks for the issue."""

    def claimable(self, issue_id: str, filters: Filters) -> Issue | None:
        """The issue as it is now, if it may be claimed now (its dependencies re-read too)."""
        issue = self.read_issue(issue_id)
        if issue is None:
            return None
        if dispatch_reason(issue, self._dependency_states(issue), self.gates()) or not matches_filters(issue, filters):
            return None
        if self.rules.enforced() and self.rules.blockers(issue.raw, State.IN_PROGRESS):
            return None  # jit would refuse this claim (held with the rule named in the plan)
        return issue

    def claim(
        self, issue_id: str, assignee: str, run: str, filters: Filters, *, now: str | None = None
    ) -> Issue | None:
        """`now`: the claim's time when it happened elsewhere first (remote mode: its lock's).

        The jit lease comes first (docs/jit-format.md#leases): `jit claim acquire` checks only
        leases, so whoever holds the lease holds the issue; one of another agent refuses the claim.
        """
        leases = self.leases()
        if leases is not None and leases.acquire(issue_id, assignee) is not None:
            return None
        claimed = False
        try:
            with self._locked(issue_id):
                issue = self.claimable(issue_id, filters)
                if issue is None:
                    return None
                now = now or transitions.format_timestamp()
                raw, events = transitions.claim(issue.raw, assignee, run, now)
                self._write_issue(raw)
            self._log_or_undo(issue.raw, raw, events)
            self._runs[issue_id] = run
            claimed = True
        finally:
            if leases is not None and not claimed:
                leases.release(issue_id, assignee)
        return issue_from_raw(raw)

    def complete(
        self,
        issue_id: str,
        assignee: str,
        *,
        gate_runs: Sequence[GateRecord] = (),
        now: str | None = None,
        given_up: bool = False,
    ) -> Settlement:
        settled = self._settle(issue_id, assignee, gate_runs, now, transitions.complete, given_up=given_up)
        if isinstance(settled, Settlement):
            return settled
        current, _, outcome, by_agent, note = settled
        promoted: list[str] = []
        if outcome == Outcome.DONE:
            try:
                self._promote_unblocked(issue_id, promoted)
            except TrackerError as exc:  # the issue is done; what it unblocks stays backlog
                error = f"{issue_id[:8]} is done, but promoting the issues it unblocks failed: {exc}"
                return Settlement(outcome, current.failed_attempts, tuple(promoted), error=error, by_agent=by_agent)
        return Settlement(outcome, current.failed_attempts, tuple(promoted), by_agent=by_agent, reason=note)

    def _promote_unblocked(self, completed: str, promoted: list[str]) -> None:
        """After a `done`, every backlog issue with all dependencies resolved becomes ready.

        As jit promotes (docs/jit-format.md#promotion).

        Candidates come from the last snapshot. The snapshot predates the command, so a
        dependency that looked blocking may have finished meanwhile (another runner, or another
        run thread of this pool). Every state change appends to events.jsonl (jit's writers and
        ours): when only this thread appended since the snapshot, the snapshot's states stand;
        otherwise a blocking dependency's file is re-read when its fingerprint changed. A candidate
        left with no blocker is re-read with its dependencies under jit's locks before it is
        promoted (into `promoted`).
        """
        if self._promotion_view is None:
            self.snapshot(full_states=(State.BACKLOG,))
        with self._view_lock:
            view, mark, appenders = self._promotion_view, self._events_mark, set(self._appenders)
        assert view is not None
        states, backlog, seen = view
        states = {**states, completed: State.DONE}
        current: dict[str, str | None] = {completed: State.DONE}
        directory = str(self.issues_dir)
        # Only our own appends since the snapshot: its states stand. Another thread's settle (the
        # pool's run threads share this store) is another writer, as is any other process.
        quiet = mark is not None and self._events_length() == mark and appenders <= {threading.get_ident()}

        def state_now(dep: str) -> str | None:
            if quiet:
                return states.get(dep)
            if dep not in current:
                try:
                    unchanged = seen.get(dep) == fingerprint(os.stat(f"{directory}/{dep}.json"))
                except (OSError, ValueError):
                    unchanged = False
                current[dep] = states.get(dep) if unchanged else self.state_of(dep)
            return current[dep]

        resolved = RESOLVED_STATES
        for candidate, dependencies in backlog:
            blockers = [dep for dep in dependencies if states.get(dep) not in resolved]
            if blockers and (quiet or any(state_now(dep) not in resolved for dep in blockers)):  # quiet: as seen
                continue
            with self._locked(candidate):
                fresh = self.read_issue(candidate, strict=True)
                if fresh is None or fresh.state != State.BACKLOG:
                    continue
                if blocking_dependencies(fresh, self._dependency_states(fresh)):
                    continue
                if self.rules.enforced() and (found := self.rules.blockers(fresh.raw, State.READY)):
                    now = transitions.format_timestamp()  # it stays backlog, as in jit
                    self._append_events(transitions.refused(fresh.raw, State.READY, found, now))
                    continue
                raw, events = transitions.promote(fresh.raw, transitions.format_timestamp())
                self._write_issue(raw)
            self._log_or_undo(fresh.raw, raw, events)
            promoted.append(candidate)

    def release(
        self,
        issue_id: str,
        assignee: str,
        reason: str,
        max_attempts: int,
        *,
        seen: Liveness | None = None,
        gate_runs: Sequence[GateRecord] = (),
        now: str | None = None,
        count_attempt: bool = True,
        given_up: bool = False,
    ) -> Settlement:
        def change(judged: dict[str, Any], at: str) -> tuple[dict[str, Any], list[dict[str, Any]], Outcome]:
            return transitions.release(judged, reason, max_attempts, at, count_attempt=count_attempt)

        settled = self._settle(issue_id, assignee, gate_runs, now, change, seen=seen, given_up=given_up)
        if isinstance(settled, Settlement):
            return settled
        _, raw, outcome, by_agent, note = settled
        return Settlement(outcome, issue_from_raw(raw).failed_attempts, by_agent=by_agent, reason=note)

    def taken_because(self, issue_id: str, assignee: str) -> str | None:
        """Why our claim was taken away: the reason of the release of it logged after our newest
        claim (a person's `release`, a reap). None when nobody released it (jit reassigned it)."""
        reason: str | None = None
        for event in read_events(self.root / "events.jsonl", ("issue_claimed", "issue_released")):
            if event.get("issue_id") != issue_id or event.get("assignee") != assignee:
                continue
            reason = str(event.get("reason") or "") or None if event.get("type") == "issue_released" else None
        return reason

    def _settle(
        self,
        issue_id: str,
        assignee: str,
        gate_runs: Sequence[GateRecord],
        now: str | None,
        change: Callable[[dict[str, Any], str], tuple[dict[str, Any], list[dict[str, Any]], Outcome]],
        *,
        seen: Liveness | None = None,
        given_up: bool = False,
    ) -> tuple[Issue, dict[str, Any], Outcome, bool, str | None] | Settlement:
        """Our claim settled under jit's locks: the gate runs recorded, `change` saved, its events logged.

        Returns the issue as it was, as it is now, the outcome, whether the command settled it
        itself with jit (docs/jit-format.md#agents-that-settle) and why a `done` became `gated`
        (docs/jit-format.md#graph-rules); or a `lost` Settlement when the claim is no longer ours,
        or (with `seen`, the reaper) it showed a sign of life meanwhile. `given_up`: the agent gave
        its lease back where this store cannot see it (remote mode: the runner clone's log).
        """
        run = None if seen is not None else self._runs.get(issue_id)  # the reaper judges others' claims
        leases = self.leases()
        with self._locked(issue_id):
            current = self.read_issue(issue_id, strict=True)
            holder = leases.holder(issue_id) if leases is not None else None
            mine = holder is not None and holder.agent == assignee
            given_up = given_up or (
                holder is None and seen is None and leases is not None and leases.given_up(issue_id, assignee)
            )
            by_agent = None
            if current is not None and seen is None:
                if not transitions.still_ours(current.raw, assignee, run):
                    by_agent = transitions.agent_outcome(current.raw, assignee, mine or given_up)
                elif given_up:  # `jit claim release` by the agent: it gave the issue back
                    by_agent = Outcome.RELEASED
            lost = (
                current is None
                or (holder is not None and not mine)  # another agent's lease: theirs now
                or (not transitions.still_ours(current.raw, assignee, run) and by_agent is None)
                or (seen is not None and transitions.liveness(current.raw) != seen)  # it showed a sign of life
            )
            if not lost:
                assert current is not None
                raw, events, outcome, note = self._settled(current.raw, gate_runs, now, change, by_agent)
        if lost:
            if seen is None:
                self._runs.pop(issue_id, None)
            if mine and seen is None and leases is not None:  # our lease outlived the claim: let it go
                leases.release(issue_id, assignee)
            why = self.taken_because(issue_id, assignee) if seen is None else None
            return Settlement(Outcome.LOST, current.failed_attempts if current else 0, taken_because=why)
        assert current is not None
        self._log_or_undo(current.raw, raw, events)
        self._runs.pop(issue_id, None)
        if leases is not None:  # the claim is settled: its lease goes (a reaper evicts it, as `jit claim release`)
            leases.release(
                issue_id, assignee, force_reason=f"reaped by jit-dispatch: {assignee} stopped" if seen else None
            )
        return current, raw, outcome, by_agent is not None, note

    def _settled(
        self,
        before: dict[str, Any],
        gate_runs: Sequence[GateRecord],
        now: str | None,
        change: Callable[[dict[str, Any], str], tuple[dict[str, Any], list[dict[str, Any]], Outcome]],
        by_agent: Outcome | None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]], Outcome, str | None]:
        """Under the locks: gate runs recorded, `change` (or the agent's own settle) applied, a `done`
        jit's rules refuse turned `gated`, the issue saved if it changed; its events, for logging."""
        now = now or transitions.format_timestamp()
        judged, gate_events = self._record_gate_runs(before, gate_runs, now)
        if by_agent is None:
            raw, events, outcome = change(judged, now)
        else:
            raw, events, outcome = transitions.after_agent(judged, by_agent, "released by the agent", now)
        note, refused = None, []
        if outcome == Outcome.DONE and judged["state"] != State.DONE and (found := self.rules.blockers(judged, "done")):
            raw, events, outcome = transitions.blocked(judged, "done", found, now)  # jit refuses: gated
            note, refused = raw["context"][CTX_LAST_REASON], [("done", found)]
        ours = by_agent is None and raw["state"] == State.GATED != judged["state"]  # not the agent's jit call
        if ours and (found := self.rules.blockers(judged, State.GATED)):  # refused too: parked (#refused-gated)
            kept = {k: v for k, v in raw["context"].items() if k != CTX_DELIVERED_AT}  # a delivery's branch stays
            base = {**raw, "state": judged["state"], "context": kept}
            raw, events, outcome = transitions.parked_by_rules(base, [*refused, (State.GATED, found)], now)
            note = raw["context"][CTX_LAST_REASON]
        if raw != before:
            self._write_issue(raw)
        return raw, gate_events + events, outcome, note

    def issue_now(self, issue_id: str) -> Issue | None:
        """The issue as stored now: the command may have changed it with jit."""
        return self.read_issue(issue_id)

    def _record_gate_runs(
        self, raw: dict[str, Any], records: Sequence[GateRecord], now: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """As jit's `check_gate`: each run's `result.json` (temp + rename), then `gates_status` and events."""
        runs_dir = self.root / GATE_RUNS
        if records and runs_dir.is_symlink():
            raise TrackerError(f"{runs_dir}: is a symbolic link; the dispatcher never writes through one")
        for record in records:
            path = runs_dir / record["run_id"] / "result.json"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise store_error(path.parent, "create", exc) from None
            atomic_write(path, dumps_pretty(dict(record)))
            self.changed.add(path)
        return gate_rules.apply_records(raw, records, now)

    def heartbeat(
        self, issue_id: str, assignee: str, *, interval: float | None = None, deadline: float | None = None
    ) -> bool:
        """Refresh the claim and renew its lease; False once another agent holds either.

        An issue the command itself settled with jit is still its run: only the lease is renewed
        (none, when the agent gave it up itself: the settle releases the issue).
        """
        with self._locked(issue_id):
            current = self.read_issue(issue_id)
            if current is None:
                return False
            ours = transitions.still_ours(current.raw, assignee, self._runs.get(issue_id))
            if ours:
                self._write_issue(transitions.heartbeat(current.raw, transitions.format_timestamp()))
        leases = self.leases()  # after the issue (never both locks at once, as jit): only a claim still ours
        if leases is None:
            return ours or transitions.agent_outcome(current.raw, assignee, False) is not None
        holder = leases.holder(issue_id)
        mine = holder is not None and holder.agent == assignee
        given_up = holder is None and leases.given_up(issue_id, assignee)
        if not ours and transitions.agent_outcome(current.raw, assignee, mine or given_up) is None:
            return False
        return given_up or leases.renew(issue_id, assignee) is None

    def unpark(self, issue_id: str) -> bool:
        with self._locked(issue_id):
            current = self.read_issue(issue_id)
            raw = transitions.unpark(current.raw, transitions.format_timestamp()) if current else None
            if raw is None:
                return False
            self._write_issue(raw)
        return True
