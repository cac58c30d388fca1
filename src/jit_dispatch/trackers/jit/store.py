"""The jit tracker, read and written natively in `.jit/` (jit-format.md §2-§6, §13).

Writes follow jit's protocol: `.index.lock` then `issues/<id>.lock` (flock, exclusive), re-read
inside the locks, temp file + rename, then events appended under `.events.lock`. Reads take no
lock: every writer renames whole files into place, so a reader never sees a torn file.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jit_dispatch.domain import gates as gate_rules
from jit_dispatch.domain import transitions
from jit_dispatch.domain.issue import Gate, Issue, IssueFormatError, issue_from_raw
from jit_dispatch.domain.selection import Filters, blocking_dependencies, dispatch_reason, matches_filters
from jit_dispatch.domain.values import RESOLVED_STATES, Outcome, State
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.base import GateRecord, Liveness, Settlement, Snapshot, TrackerDefaults
from jit_dispatch.trackers.jit.files import append_lines, atomic_write, dumps_event, dumps_pretty, ordered_issue
from jit_dispatch.trackers.jit.locks import LockTimeout, flock, lock_timeout_from_env

# In a pretty-printed issue only top-level keys sit at a two-space indent, and a raw newline
# never occurs inside a JSON string, so this finds the issue's own state without parsing.
_STATES = frozenset(State)
GATE_RUNS = "gate-runs"  # jit's run records: gate-runs/<run_id>/result.json
_STATE_LINE = re.compile(rb'\n  "state": "([a-z_]{1,16})"')


def _quick_state(data: bytes) -> str | None:
    """The state of a well-formed pretty file, or None when the file needs a full parse."""
    match = _STATE_LINE.search(data)
    if match is None or not data.rstrip().endswith(b"\n}"):  # only the top-level brace sits at column 0
        return None
    state = match.group(1).decode()
    return state if state in _STATES else None


def _gate(key: str, entry: dict[str, Any]) -> Gate:
    """A registry entry as jit reads it: seed era without `priority` (100); the entry kept for planning."""
    priority = entry.get("priority", 100)
    if not isinstance(priority, int) or isinstance(priority, bool):
        priority = 100
    return Gate(key, str(entry.get("stage", "")), str(entry.get("mode", "")), priority, entry)


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
        self.changed: set[Path] = set()  # files written since the last `changed.clear()`
        self._promotion_view: tuple[dict[str, str], list[Issue]] | None = None  # from the last snapshot
        self._deadline: float | None = None  # set by `hurry` after a cancellation

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
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            raise TrackerError(f"{path}: missing") from None
        except (OSError, ValueError) as exc:
            raise TrackerError(f"{path}: cannot be read as JSON ({exc})") from None
        except RecursionError:
            raise TrackerError(f"{path}: cannot be read as JSON (nested too deep)") from None

    def issue_ids(self) -> list[str]:
        """jit's enumeration: `all_ids` minus `deleted_ids`, in creation order."""
        path = self.root / "index.json"
        index = self._load_json(path)
        all_ids = index.get("all_ids") if isinstance(index, dict) else None
        if not isinstance(all_ids, list) or not all(isinstance(i, str) for i in all_ids):
            raise TrackerError(f"{path}: field 'all_ids' must be a list of issue ids")
        deleted = set(index.get("deleted_ids") or ())
        return [i for i in dict.fromkeys(all_ids) if i not in deleted]

    def gates(self) -> dict[str, Gate]:
        if self._gates is None:
            path = self.root / "gates.json"
            if not path.exists():
                self._gates = {}
                return self._gates
            registry = self._load_json(path)
            gates = registry.get("gates") if isinstance(registry, dict) else None
            if not isinstance(gates, dict):
                raise TrackerError(f"{path}: field 'gates' must be an object")
            self._gates = {key: _gate(key, g) for key, g in gates.items() if isinstance(g, dict)}
        return self._gates

    def snapshot(self, full_states: Iterable[str] = ("ready",)) -> Snapshot:
        """Every issue's state; issues in `full_states` parsed in full. Corrupt files: warned.

        This is the hot path (one file read per issue): plain string paths, no parse of the
        files a regex can classify. Backlog issues are parsed as well and kept for the
        promotions after a `done`, so settling needs no second scan.
        """
        requested = frozenset(full_states)
        wanted = requested | {"backlog"}
        ids = self.issue_ids()
        states: dict[str, str] = {}
        issues: list[Issue] = []
        backlog: list[Issue] = []
        warnings: list[str] = []
        directory = str(self.issues_dir)
        for issue_id in ids:
            path = f"{directory}/{issue_id}.json"
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError as exc:
                warnings.append(f"{path}: listed in index.json but unreadable ({exc.strerror}); skipped")
                continue
            state = _quick_state(data)
            if state is not None and state not in wanted:
                states[issue_id] = state
                continue
            try:
                issue = issue_from_raw(json.loads(data), issue_id)
            except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, IssueFormatError, depth
                warnings.append(f"{path}: {exc}; skipped (left untouched)")
                continue
            states[issue_id] = issue.state
            if issue.state in requested:
                issues.append(issue)
            if issue.state == "backlog":
                backlog.append(issue)
        self._promotion_view = (states, backlog)
        return Snapshot(issues, states, self.gates(), ids, warnings)

    def _read_issue(self, issue_id: str) -> Issue | None:
        try:
            return issue_from_raw(json.loads((self.issues_dir / f"{issue_id}.json").read_bytes()), issue_id)
        except (OSError, ValueError, RecursionError):
            return None

    def _state_of(self, issue_id: str) -> str | None:
        issue = self._read_issue(issue_id)
        return issue.state if issue else None

    def issue_file(self, issue_id: str) -> Path:
        return self.issues_dir / f"{issue_id}.json"

    # ----------------------------------------------------------------- writing
    @contextmanager
    def _locked(self, issue_id: str) -> Iterator[None]:
        """`.index.lock` then `issues/<id>.lock`, both exclusive: jit's order for a save."""
        timeout = self._lock_timeout()
        try:
            with (
                flock(self.root / ".index.lock", timeout=timeout),
                flock(self.issues_dir / f"{issue_id}.lock", timeout=timeout),
            ):
                yield
        except LockTimeout as exc:
            raise TrackerError(f"{exc.path}: lock timeout ({exc}); is another jit process stuck?") from None

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
        if not events:
            return
        try:
            with flock(self.root / ".events.lock", timeout=self._lock_timeout()):
                append_lines(self.root / "events.jsonl", [dumps_event(e) for e in events])
            self.changed.add(self.root / "events.jsonl")
        except LockTimeout as exc:
            raise TrackerError(f"{exc.path}: lock timeout ({exc})") from None

    def claimable(self, issue_id: str, filters: Filters) -> Issue | None:
        """The issue as it is now, if it may be claimed now (its dependencies re-read too)."""
        issue = self._read_issue(issue_id)
        if issue is None:
            return None
        dep_states = {dep: s for dep in issue.dependencies if (s := self._state_of(dep))}
        if dispatch_reason(issue, dep_states, self.gates()) or not matches_filters(issue, filters):
            return None
        return issue

    def claim(self, issue_id: str, assignee: str, run: str, filters: Filters) -> Issue | None:
        with self._locked(issue_id):
            issue = self.claimable(issue_id, filters)
            if issue is None:
                return None
            now = transitions.format_timestamp()
            raw, events = transitions.claim(issue.raw, assignee, run, now)
            self._write_issue(raw)
        self._append_events(events)
        return issue_from_raw(raw)

    def complete(self, issue_id: str, assignee: str, *, gate_runs: Sequence[GateRecord] = ()) -> Settlement:
        with self._locked(issue_id):
            current = self._read_issue(issue_id)
            if current is None or not transitions.still_ours(current.raw, assignee):
                return Settlement(Outcome.LOST, current.failed_attempts if current else 0)
            now = transitions.format_timestamp()
            judged, gate_events = self._record_gate_runs(current.raw, gate_runs, now)
            raw, events, outcome = transitions.complete(judged, now)
            self._write_issue(raw)
        self._append_events(gate_events + events)
        promoted = self._promote_unblocked(issue_id) if outcome == Outcome.DONE else ()
        return Settlement(outcome, current.failed_attempts, promoted)

    def _promote_unblocked(self, completed: str) -> tuple[str, ...]:
        """After a `done`, every backlog issue with all dependencies resolved becomes ready (jit §7.5).

        Candidates come from the last snapshot; each is re-read with its dependencies under
        jit's locks before it is promoted.
        """
        if self._promotion_view is None:
            self.snapshot(full_states=(State.BACKLOG,))
        assert self._promotion_view is not None
        states, backlog = self._promotion_view
        states = {**states, completed: State.DONE}
        promoted: list[str] = []
        for candidate in backlog:
            # The snapshot predates the command: a dependency may have finished meanwhile (another
            # runner), so what looked blocking is read again before the candidate is passed over.
            blockers = blocking_dependencies(candidate, states)
            if any(self._state_of(dep) not in RESOLVED_STATES for dep in blockers):
                continue
            with self._locked(candidate.id):
                fresh = self._read_issue(candidate.id)
                if fresh is None or fresh.state != State.BACKLOG:
                    continue
                dep_states = {d: s for d in fresh.dependencies if (s := self._state_of(d))}
                if blocking_dependencies(fresh, dep_states):
                    continue
                raw, events = transitions.promote(fresh.raw, transitions.format_timestamp())
                self._write_issue(raw)
            self._append_events(events)
            promoted.append(candidate.id)
        return tuple(promoted)

    def release(
        self,
        issue_id: str,
        assignee: str,
        reason: str,
        max_attempts: int,
        *,
        seen: Liveness | None = None,
        gate_runs: Sequence[GateRecord] = (),
    ) -> Settlement:
        with self._locked(issue_id):
            current = self._read_issue(issue_id)
            if current is None or not transitions.still_ours(current.raw, assignee):
                return Settlement(Outcome.LOST, current.failed_attempts if current else 0)
            if seen is not None and transitions.liveness(current.raw) != seen:
                return Settlement(Outcome.LOST, current.failed_attempts)  # it showed a sign of life meanwhile
            now = transitions.format_timestamp()
            judged, gate_events = self._record_gate_runs(current.raw, gate_runs, now)
            raw, events, outcome = transitions.release(judged, reason, max_attempts, now)
            self._write_issue(raw)
        self._append_events(gate_events + events)
        return Settlement(outcome, int(raw["context"]["dispatch.attempts"]))

    def _record_gate_runs(
        self, raw: dict[str, Any], records: Sequence[GateRecord], now: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """As jit's `check_gate`: each run's `result.json` (temp + rename), then `gates_status` and events."""
        for record in records:
            path = self.root / GATE_RUNS / record["run_id"] / "result.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, dumps_pretty(dict(record)))
            self.changed.add(path)
        return gate_rules.apply_records(raw, records, now)

    def checker_root(self, issue_id: str) -> Path | None:
        """jit runs checkers in the store's parent directory (the repository root)."""
        return self.root.absolute().parent

    def gate_history(self, issue_id: str, gate_key: str) -> list[dict[str, Any]]:
        """This gate's earlier runs for the issue, oldest first; unreadable records are skipped."""
        runs = []
        for path in (self.root / GATE_RUNS).glob("*/result.json"):
            try:
                record = json.loads(path.read_bytes())
            except (OSError, ValueError, RecursionError):
                continue
            if isinstance(record, dict) and record.get("issue_id") == issue_id and record.get("gate_key") == gate_key:
                runs.append(record)
        return sorted(runs, key=lambda r: str(r.get("started_at", "")))

    def heartbeat(self, issue_id: str, assignee: str) -> bool:
        with self._locked(issue_id):
            current = self._read_issue(issue_id)
            if current is None or not transitions.still_ours(current.raw, assignee):
                return False
            self._write_issue(transitions.heartbeat(current.raw, transitions.format_timestamp()))
        return True

    def unpark(self, issue_id: str) -> bool:
        with self._locked(issue_id):
            current = self._read_issue(issue_id)
            raw = transitions.unpark(current.raw, transitions.format_timestamp()) if current else None
            if raw is None:
                return False
            self._write_issue(raw)
        return True

    def create_issues(self, specs: Iterable[NewIssue]) -> list[str]:
        """Create issues as `jit issue create` does (+ `dep add`: unresolved deps → backlog)."""
        created: list[tuple[dict[str, Any], dict[str, Any]]] = []
        try:
            with flock(self.root / ".index.lock"):
                index_path = self.root / "index.json"
                index = self._load_json(index_path)
                states = {i: s for i in index["all_ids"] if (s := self._state_of(i))}
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
        except LockTimeout as exc:
            raise TrackerError(f"{exc.path}: lock timeout ({exc})") from None
        self._append_events([event for _, event in created])
        return [raw["id"] for raw, _ in created]

    @staticmethod
    def _new_issue_raw(spec: NewIssue, states: dict[str, str]) -> dict[str, Any]:
        now = spec.created_at or transitions.format_timestamp()
        blocked = any(states.get(dep) not in RESOLVED_STATES for dep in spec.dependencies)
        raw = {
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
