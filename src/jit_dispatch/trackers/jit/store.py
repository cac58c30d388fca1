"""The jit tracker, read and written natively in `.jit/` (docs/jit-format.md: #layout to #locks).

Writes follow jit's protocol: `.index.lock` then `issues/<id>.lock` (flock, exclusive), re-read
inside the locks, temp file + rename, then events appended under `.events.lock`. Reads take no
lock: every writer renames whole files into place, so a reader never sees a torn file.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jit_dispatch.domain import boundedjson, transitions
from jit_dispatch.domain import gates as gate_rules
from jit_dispatch.domain.delivery import Delivery, delivery_context, delivery_from_context
from jit_dispatch.domain.issue import (
    CTX_LAST_REASON,
    Gate,
    Issue,
    IssueFormatError,
    issue_from_raw,
    parse_issue,
)
from jit_dispatch.domain.selection import Filters, blocking_dependencies, dispatch_reason, matches_filters
from jit_dispatch.domain.values import RESOLVED_STATES, Outcome, State
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.base import GateRecord, Liveness, Settlement, Snapshot, TrackerDefaults
from jit_dispatch.trackers.jit.files import (
    Fingerprint,
    append_lines,
    atomic_write,
    dumps_event,
    dumps_pretty,
    fingerprint,
    ordered_issue,
    read_events,
    read_regular,
    store_error,
)
from jit_dispatch.trackers.jit.leases import DEFAULT_TTL_SECONDS, Leases
from jit_dispatch.trackers.jit.locks import LockTimeout, flock, lock_timeout_from_env
from jit_dispatch.trackers.jit.rules import StoreRules
from jit_dispatch.trackers.jit.scan import Scan, Waiting, check_ids, scan_issues

GATE_RUNS = "gate-runs"  # jit's run records: gate-runs/<run_id>/result.json


def _gate(key: str, entry: dict[str, Any]) -> Gate:
    """A registry entry as jit reads it: seed era without `priority` (100); the entry kept for planning."""
    priority = entry.get("priority", 100)
    if not isinstance(priority, int) or isinstance(priority, bool):
        priority = 100
    return Gate(key, str(entry.get("stage", "")), str(entry.get("mode", "")), priority, entry)


@contextmanager
def _lock_timeout_as_error(hint: str = "") -> Iterator[None]:
    """A jit lock not acquired in time, as the one-line TrackerError a command reports (exit 3)."""
    try:
        yield
    except LockTimeout as exc:
        raise TrackerError(f"{exc.path}: lock timeout ({exc}){hint}") from None


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


class JitStore(TrackerDefaults):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)
        self.issues_dir = root / "issues"
        self._gates: dict[str, Gate] | None = None
        self._gates_seen: tuple[int, int, int] | None = None  # gates.json's (inode, size, mtime) when read
        self.changed: set[Path] = set()  # files written since the last `changed.clear()`
        # From the last snapshot: every state, each backlog issue's dependencies, and the fingerprint
        # of each unresolved issue's file, so promotion re-reads only files changed since.
        self._promotion_view: tuple[dict[str, str], list[Waiting], dict[str, Fingerprint]] | None = None
        self._delivered: dict[str, bytes] = {}  # the last scan's `gated` files holding a delivery
        self._index_warnings: list[str] = []
        # The length of events.jsonl as far as this store knows it: taken before the snapshot reads
        # the issues, advanced by our own appends; None once anyone else appended (see promotion).
        self._events_mark: int | None = None
        # Threads whose appends advanced the mark since the snapshot: the pool's run threads share
        # this store, so one settle's promotion may trust the mark only for its own appends.
        self._appenders: set[int] = set()
        self._view_lock = threading.Lock()  # the view, the mark and the appenders change together
        self._deadline: float | None = None  # set by `hurry` after a cancellation
        self.lease_ttl = DEFAULT_TTL_SECONDS  # seconds; the factory sets it from the heartbeat (`lease_ttl`)
        self._leases: Leases | bool | None = False  # jit's leases of the store's repository; False: not looked for
        self.rules = StoreRules(root, self.all_issues)  # jit's enforced graph rules (docs/jit-format.md#graph-rules)
        # issue id → the `dispatch.run` of the claim this store made and has not settled yet: every
        # later check compares it, not only the assignee (docs/service.md#one-issue-one-run).
        self._runs: dict[str, str] = {}

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(cls, root: Path) -> JitStore:
        if not root.is_dir():
            raise TrackerError(f"{root}: no jit store here (run from the repository root or pass --jit-dir)")
        if not (root / "index.json").is_file():
            raise TrackerError(f"{root / 'index.json'}: missing; the jit store is not initialized")
        return cls(root)

    @classmethod
    def init(cls, root: Path) -> JitStore:
        """An empty store, as `jit init` lays it out (minus jit's config.toml)."""
        (root / "issues").mkdir(parents=True, exist_ok=True)
        if not (root / "index.json").exists():
            atomic_write(root / "index.json", dumps_pretty({"schema_version": 2, "all_ids": [], "deleted_ids": []}))
        if not (root / "gates.json").exists():
            atomic_write(root / "gates.json", dumps_pretty({"gates": {}}))
        (root / "events.jsonl").touch()
        return cls(root)

    # ----------------------------------------------------------------- reading
    def _load_json(self, path: Path) -> Any:
        try:
            data = read_regular(path)
        except FileNotFoundError:
            raise TrackerError(f"{path}: missing") from None
        except OSError as exc:
            raise TrackerError(f"{path}: cannot be read ({exc.strerror})") from None
        try:
            return boundedjson.loads(data)
        except ValueError as exc:  # invalid JSON or UTF-8, or nested deeper than jit reads
            raise TrackerError(f"{path}: cannot be read as JSON ({exc})") from None

    def issue_ids(self) -> list[str]:
        """jit's enumeration: `all_ids` minus `deleted_ids`, in creation order; ids not shaped like one skipped."""
        path = self.root / "index.json"
        index = self._load_json(path)
        all_ids = index.get("all_ids") if isinstance(index, dict) else None
        if not isinstance(all_ids, list) or not all(map(str.__instancecheck__, all_ids)):
            raise TrackerError(f"{path}: field 'all_ids' must be a list of issue ids")
        deleted = index.get("deleted_ids") or ()
        deleted = set(deleted) if isinstance(deleted, list) and all(isinstance(i, str) for i in deleted) else set()
        ids = [i for i in dict.fromkeys(all_ids) if i not in deleted] if deleted else list(dict.fromkeys(all_ids))
        bad = check_ids(ids)
        self._index_warnings = [f"{path}: {i[:80]!r} is not an issue id (jit's ids are UUIDs); skipped" for i in bad]
        skip = set(bad)
        return [i for i in ids if i not in skip] if skip else ids

    def gates(self) -> dict[str, Gate]:
        """The gate registry, read again whenever gates.json changed (one `stat()` when it did not),
        so a long-running pool applies a gate defined or changed meanwhile to its next claim."""
        path = self.root / "gates.json"
        try:
            st = os.stat(path)
            signature: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            signature = None
        except OSError as exc:
            raise TrackerError(f"{path}: cannot be read ({exc.strerror})") from None
        if self._gates is not None and signature == self._gates_seen:
            return self._gates
        if signature is None:
            self._gates, self._gates_seen = {}, None
            return self._gates
        registry = self._load_json(path)
        gates = registry.get("gates") if isinstance(registry, dict) else None
        if not isinstance(gates, dict):
            raise TrackerError(f"{path}: field 'gates' must be an object")
        self._gates = {key: _gate(key, g) for key, g in gates.items() if isinstance(g, dict)}
        self._gates_seen = signature
        return self._gates

    def snapshot(self, full_states: Iterable[str] = ("ready",), *, leads: bool = False) -> Snapshot:
        """Every issue's state; issues in `full_states` parsed in full. Corrupt files: warned.

        This is the hot path (one file read per issue): plain string paths, no parse of the
        files whose state a substring search finds. Each backlog issue's dependencies are kept
        (read the same way unless backlog issues are wanted in full) for the promotions after a
        `done`, so settling needs no second scan. `leads`: ready issues in jit's layout are read only
        as far as selection needs (trackers/jit/leads.py); `Snapshot.full` reads the ones it takes.
        """
        ids = self.issue_ids()
        found = Scan(warnings=list(self._index_warnings))
        mark = self._events_length()  # before the issues are read: a later append shows as a longer file
        collecting = gc.isenabled()
        gc.disable()  # thousands of parsed issues hold no cycle: do not let the collector walk them
        try:
            unreadable = scan_issues(ids, str(self.issues_dir), frozenset(full_states), found, leads)
        finally:
            if collecting:
                gc.enable()
        if ids and len(unreadable) == len(ids):  # not one file: the directory is unreadable, not each file
            raise TrackerError(f"{self.issues_dir}: cannot be read ({next(iter(unreadable.values()))})")
        with self._view_lock:  # a promotion meanwhile must not pair this mark with the previous view
            self._promotion_view = (found.states, found.backlog, found.seen)
            self._delivered = found.delivered
            self._events_mark, self._appenders = mark, set()
        snapshot = Snapshot(found.issues, found.states, self.gates(), ids, found.warnings)
        if (leases := self.leases()) is not None:
            snapshot.leases = {i: (h.agent, h.words()) for i, h in leases.holders().items()}
        if self.rules.enforced():
            snapshot.rule_holds = self.rules.holds(snapshot)
        return snapshot

    def leases(self) -> Leases | None:
        """jit's leases when the store sits in a git worktree (docs/jit-format.md#leases); else None."""
        if self._leases is False:
            self._leases = Leases.of_store(self.root, self.lease_ttl, self._lock_timeout)
        return self._leases if isinstance(self._leases, Leases) else None

    def taken_by(self, issue_id: str, assignee: str) -> str | None:
        """Who took our claim: another agent's lease, or another assignee; None while it is ours."""
        leases = self.leases()
        if leases is not None:
            holder = leases.holder(issue_id)
            if holder is None:  # the agent's own release is settled as the agent's, not taken
                return None if leases.given_up(issue_id, assignee) else leases.gone(issue_id, assignee)
            if holder.agent != assignee:
                return holder.words()
        current = self.read_issue(issue_id)
        if current is not None and current.assignee not in (None, assignee):
            return f"assigned to {current.assignee}"
        return None

    def _events_length(self) -> int | None:
        try:
            return os.stat(self.root / "events.jsonl").st_size
        except OSError:
            return None

    def read_issue(self, issue_id: str, *, strict: bool = False) -> Issue | None:
        """The issue as it is on disk; None when absent or unreadable as an issue.

        `strict` (the issue being written): an I/O error is a TrackerError, not "absent".
        """
        path = self.issue_file(issue_id)
        try:
            return parse_issue(read_regular(path), issue_id)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if strict:
                raise TrackerError(f"{path}: cannot be read ({exc.strerror})") from None
            return None
        except ValueError:
            return None

    def all_issues(self) -> dict[str, dict[str, Any]]:
        """Every readable issue by id, as on disk now (a rule's neighbourhood needs the whole graph)."""
        return {i: issue.raw for i in self.issue_ids() if (issue := self.read_issue(i)) is not None}

    def state_of(self, issue_id: str) -> str | None:
        issue = self.read_issue(issue_id)
        return issue.state if issue else None

    def _dependency_states(self, issue: Issue) -> dict[str, str]:
        """The states of the issue's dependencies as they are on disk now (absent ones left out)."""
        return {dep: s for dep in issue.dependencies if (s := self.state_of(dep))}

    def issue_file(self, issue_id: str) -> Path:
        return self.issues_dir / f"{issue_id}.json"

    # ----------------------------------------------------------------- writing
    @contextmanager
    def _locked(self, issue_id: str) -> Iterator[None]:
        """`.index.lock` then `issues/<id>.lock`, both exclusive: jit's order for a save."""
        timeout = self._lock_timeout()
        if self.issues_dir.is_symlink():  # `.jit` itself may be a link; nothing inside it is followed
            raise TrackerError(f"{self.issues_dir}: is a symbolic link; the dispatcher never writes through one")
        with (
            _lock_timeout_as_error("; is another jit process stuck?"),
            flock(self.root / ".index.lock", timeout=timeout),
            flock(self.issues_dir / f"{issue_id}.lock", timeout=timeout),
        ):
            yield

    def hurry(self, seconds: float) -> None:
        """After a cancellation, jit's locks are waited for only as long as the runner still gives us."""
        self._deadline = time.monotonic() + seconds

    def _lock_timeout(self) -> float:
        if self._deadline is None:
            return lock_timeout_from_env()
        return max(0.0, min(lock_timeout_from_env(), self._deadline - time.monotonic()))

    def _write_issue(self, raw: dict[str, Any]) -> None:
        path = self.issue_file(raw["id"])
        atomic_write(path, dumps_pretty(ordered_issue(raw)))
        self.changed.add(path)

    def _append_events(self, events: list[dict[str, Any]]) -> None:
        self.append_event_lines([dumps_event(e) for e in events])

    def forget_view(self) -> None:
        """Issues were written from outside (an agent's, carried in remote mode): the next promotion
        scans again instead of trusting the last snapshot's backlog."""
        self._promotion_view = None

    def append_event_lines(self, lines: list[str]) -> None:
        """Append events as written lines (remote mode carries an agent's own, as jit wrote them)."""
        if not lines:
            return
        with _lock_timeout_as_error(), flock(self.root / ".events.lock", timeout=self._lock_timeout()):
            start, end = append_lines(self.root / "events.jsonl", lines)
        with self._view_lock:
            self._appenders.add(threading.get_ident())
            self._events_mark = end if start == self._events_mark else None
        self.changed.add(self.root / "events.jsonl")

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

    def _log_or_undo(self, before: dict[str, Any], after: dict[str, Any], events: list[dict[str, Any]]) -> None:
        """Append the events of a save just made; when they cannot be, put the issue back as it was.

        The issue and its events then stay consistent, and a claim whose events failed is undone
        rather than left behind with no runner. The TrackerError says which happened.
        """
        try:
            self._append_events(events)
        except TrackerError as exc:
            raise TrackerError(f"{exc}; {self._put_back(before, after)}") from None

    def _put_back(self, before: dict[str, Any], after: dict[str, Any]) -> str:
        issue_id = str(after["id"])
        try:
            with self._locked(issue_id):
                current = self.read_issue(issue_id, strict=True)
                if current is None or current.raw != ordered_issue(after):
                    return f"issue {issue_id[:8]} changed meanwhile and is left as it is"
                self._write_issue(before)
        except TrackerError as exc:
            return f"issue {issue_id[:8]} could not be put back ({exc}) and stays {after['state']}"
        return f"issue {issue_id[:8]} was put back as it was ({before['state']})"

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
        self, issue_id: str, assignee: str, *, gate_runs: Sequence[GateRecord] = (), now: str | None = None
    ) -> Settlement:
        settled = self._settle(issue_id, assignee, gate_runs, now, transitions.complete)
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
    ) -> Settlement:
        def change(judged: dict[str, Any], at: str) -> tuple[dict[str, Any], list[dict[str, Any]], Outcome]:
            return transitions.release(judged, reason, max_attempts, at, count_attempt=count_attempt)

        settled = self._settle(issue_id, assignee, gate_runs, now, change, seen=seen)
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
    ) -> tuple[Issue, dict[str, Any], Outcome, bool, str | None] | Settlement:
        """Our claim settled under jit's locks: the gate runs recorded, `change` saved, its events logged.

        Returns the issue as it was, as it is now, the outcome, whether the command settled it
        itself with jit (docs/jit-format.md#agents-that-settle) and why a `done` became `gated`
        (docs/jit-format.md#graph-rules); or a `lost` Settlement when the claim is no longer ours,
        or (with `seen`, the reaper) it showed a sign of life meanwhile.
        """
        run = None if seen is not None else self._runs.get(issue_id)  # the reaper judges others' claims
        leases = self.leases()
        with self._locked(issue_id):
            current = self.read_issue(issue_id, strict=True)
            holder = leases.holder(issue_id) if leases is not None else None
            mine = holder is not None and holder.agent == assignee
            given_up = holder is None and seen is None and leases is not None and leases.given_up(issue_id, assignee)
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
        note = None
        if outcome == Outcome.DONE and judged["state"] != State.DONE and (found := self.rules.blockers(judged, "done")):
            raw, events, outcome = transitions.blocked(judged, "done", found, now)  # jit refuses: gated
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

    # ----------------------------------------------------------------- delivery (docs/delivery.md)
    def hold_for_merge(
        self,
        issue_id: str,
        assignee: str,
        delivery: Delivery,
        *,
        gate_runs: Sequence[GateRecord] = (),
        now: str | None = None,
    ) -> Settlement:
        def change(judged: dict[str, Any], at: str) -> tuple[dict[str, Any], list[dict[str, Any]], Outcome]:
            return transitions.hold(judged, delivery_context(delivery), at)

        settled = self._settle(issue_id, assignee, gate_runs, now, change)
        return settled if isinstance(settled, Settlement) else Settlement(settled[2], settled[0].failed_attempts)

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

    def create_issues(self, specs: Iterable[NewIssue]) -> list[str]:
        """Create issues as `jit issue create` does (+ `dep add`: unresolved deps → backlog)."""
        created: list[tuple[dict[str, Any], dict[str, Any]]] = []
        with _lock_timeout_as_error(), flock(self.root / ".index.lock"):
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
