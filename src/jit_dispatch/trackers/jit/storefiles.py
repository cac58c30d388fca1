"""The jit store's files, read and written natively in `.jit/` (docs/jit-format.md: #layout to #locks).

Writes follow jit's protocol: `.index.lock` then `issues/<id>.lock` (flock, exclusive), re-read
inside the locks, temp file + rename, then events appended under `.events.lock`. Reads take no
lock: every writer renames whole files into place, so a reader never sees a torn file.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from jit_dispatch.domain import boundedjson
from jit_dispatch.domain.issue import Gate, Issue, parse_issue
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.base import Snapshot
from jit_dispatch.trackers.jit.files import (
    Fingerprint,
    append_lines,
    atomic_write,
    dumps_event,
    dumps_pretty,
    ordered_issue,
    read_regular,
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
def lock_timeout_as_error(hint: str = "") -> Iterator[None]:
    """A jit lock not acquired in time, as the one-line TrackerError a command reports (exit 3)."""
    try:
        yield
    except LockTimeout as exc:
        raise TrackerError(f"{exc.path}: lock timeout ({exc}){hint}") from None


class StoreFiles:
    """Reading, snapshots and the locked writes every change of the store is made of."""

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
    def open(cls, root: Path) -> Self:
        if not root.is_dir():
            raise TrackerError(f"{root}: no jit store here (run from the repository root or pass --jit-dir)")
        if not (root / "index.json").is_file():
            raise TrackerError(f"{root / 'index.json'}: missing; the jit store is not initialized")
        return cls(root)

    @classmethod
    def init(cls, root: Path) -> Self:
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
            lock_timeout_as_error("; is another jit process stuck?"),
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
        with lock_timeout_as_error(), flock(self.root / ".events.lock", timeout=self._lock_timeout()):
            start, end = append_lines(self.root / "events.jsonl", lines)
        with self._view_lock:
            self._appenders.add(threading.get_ident())
            self._events_mark = end if start == self._events_mark else None
        self.changed.add(self.root / "events.jsonl")

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
