"""Plain data the dispatcher passes around, and the parsing of a jit issue into it.

Stdlib dataclasses rather than pydantic on purpose: `jit-dispatch once` must start fast, and
importing pydantic alone costs about 200 ms. Pydantic is for the configuration file, which is
read once per process and is not on this path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from jit_dispatch.domain.values import Priority, State

PARKED_LABEL = "dispatch:parked"
LOCK_PREFIX = "refs/jit-dispatch/claims/"  # remote mode: one lock ref per claimed issue under this

# Keys of `context` owned by the dispatcher (docs/jit-format.md#context).
CTX_CLAIMED_AT = "dispatch.claimed_at"
CTX_RUN = "dispatch.run"
CTX_ATTEMPTS = "dispatch.attempts"
CTX_LAST_REASON = "dispatch.last_reason"
CTX_HEARTBEAT_AT = "dispatch.heartbeat_at"
# Parking is a context key, not a label: jit validates labels against the store's namespace
# registry, and neither era's registry knows `dispatch:` (docs/gates.md#parking). A label
# left by an older jit-dispatch still counts; GitHub Issues park with the label.
CTX_PARKED_AT = "dispatch.parked_at"
# Delivery (docs/delivery.md): where the work went, and how many review rounds sent it back.
CTX_BRANCH = "dispatch.branch"
CTX_PULL_REQUEST = "dispatch.pull_request"
CTX_PULL_NUMBER = "dispatch.pull_number"
CTX_DELIVERED_AT = "dispatch.delivered_at"
CTX_BASE = "dispatch.base"
CTX_HEAD_SHA = "dispatch.head_sha"
CTX_REVIEW_ROUNDS = "dispatch.review_rounds"

_ASSIGNEE_RE = re.compile(r"^[^\s:]+:\S+$")
# jit's label format (docs/jit-format.md#labels), plus `ns:*` for "any value in the namespace" in filters.
LABEL_PATTERN = re.compile(r"^[a-z][a-z0-9-]*:(\*|[a-zA-Z0-9][a-zA-Z0-9._-]*)$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$")
_UNIT_SECONDS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_FRACTION = re.compile(r"\.(\d+)")
E = TypeVar("E", State, Priority)


class IssueFormatError(ValueError):
    """An issue file jit itself could not read; it is skipped, never rewritten."""


class IssueFacts:
    """What follows from an issue's id, labels and context: shared by `Issue` and the hot path's leads."""

    __slots__ = ()
    id: str
    labels: tuple[str, ...]
    context: Mapping[str, str]

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def parked(self) -> bool:
        return CTX_PARKED_AT in self.context or PARKED_LABEL in self.labels

    @property
    def failed_attempts(self) -> int:
        try:
            return max(0, int(self.context.get(CTX_ATTEMPTS, "0")))
        except ValueError:
            return 0


@dataclass(frozen=True)
class Issue(IssueFacts):
    """The fields dispatch decisions need; `raw` keeps the file's full JSON for writing back."""

    id: str
    title: str
    state: State
    priority: Priority
    assignee: str | None
    dependencies: tuple[str, ...]
    labels: tuple[str, ...]
    gates_required: tuple[str, ...]
    gates_passed: frozenset[str]
    context: Mapping[str, str]
    created_at: datetime
    raw: dict[str, Any] = field(compare=False, repr=False)
    created_ns: int = 0  # nanoseconds below `created_at`'s microsecond (jit writes 9 digits)


@dataclass(frozen=True)
class Gate:
    """A gate of jit's registry (docs/jit-format.md#gates); `definition` is its entry as the registry holds it."""

    key: str
    stage: str  # "precheck" | "postcheck"
    mode: str  # "manual" | "auto"
    priority: int = 100  # newer jit: prechecks run in this order (lower first)
    definition: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def checker(self) -> Mapping[str, Any] | None:
        checker = self.definition.get("checker")
        return checker if isinstance(checker, Mapping) else None


def parse_timestamp(value: str) -> datetime:
    """Accept jit's two styles (`Z` and `+00:00`, 0-9 fraction digits)."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


# Parsing runs for every ready issue on every dispatch: the checks below stay in C where they can
# (`map(str.__instancecheck__, …)`, a dict lookup instead of calling the enum).
_is_str = str.__instancecheck__
_MEMBERS: dict[type, dict[str, Any]] = {kind: {m.value: m for m in kind} for kind in (State, Priority)}


def _require(raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = raw.get(key, _require)
    if not isinstance(value, kind):
        raise IssueFormatError(f"missing field '{key}'" if value is _require else f"field '{key}' has the wrong type")
    return value


def _enum(raw: Mapping[str, Any], key: str, kind: type[E]) -> E:
    value = _require(raw, key, str)
    member = _MEMBERS[kind].get(value)
    if member is None:
        raise IssueFormatError(f"field '{key}' has unknown value {value!r}")
    return member  # type: ignore[no-any-return]  # the table maps each enum's values to its members


def _str_list(raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
    values = _require(raw, key, list)
    if not all(map(_is_str, values)):
        raise IssueFormatError(f"field '{key}' must be a list of strings")
    return tuple(values)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def may_hold_surrogate(data: bytes) -> bool:
    """Whether a JSON document could parse to a lone surrogate (a cheap test on its bytes).

    Only a `\\ud800`-`\\udfff` escape can yield one, or the UTF-8 form of one, which starts with
    0xED (json.loads decodes bytes with "surrogatepass"); jit writes no escapes but for control
    characters, so the regex rarely runs. A false alarm (Hangul) only costs the full check.
    """
    return b"\xed" in data or (b"\\u" in data and _SURROGATE_ESCAPE.search(data) is not None)


def issue_from_raw(raw: Any, expected_id: str | None = None, *, check_text: bool = True) -> Issue:
    """Validate like jit's serde reader does: a missing required key makes the issue unreadable.

    `check_text=False` skips the lone-surrogate check, for a caller that parsed the bytes itself
    and found that they cannot hold one (`may_hold_surrogate`; the check re-encodes the whole issue).
    """
    if not isinstance(raw, dict):
        raise IssueFormatError("not a JSON object")
    try:  # jit's reader rejects lone surrogates (`\udc80`), and no UTF-8 file can hold one
        if check_text:
            json.dumps(raw, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise IssueFormatError("holds a lone surrogate escape, which is not text") from None
    issue_id = _require(raw, "id", str)
    if expected_id is not None and issue_id != expected_id:
        raise IssueFormatError(f"field 'id' is {issue_id!r}, not the file name")
    title = _require(raw, "title", str)
    _require(raw, "description", str)
    state = _enum(raw, "state", State)
    priority = _enum(raw, "priority", Priority)
    assignee = raw.get("assignee")
    if assignee is not None and not isinstance(assignee, str):
        raise IssueFormatError("field 'assignee' must be a string or null")
    gates_status = _require(raw, "gates_status", dict)
    passed: set[str] = set()
    for key, gate_state in gates_status.items():
        if not isinstance(gate_state, dict) or "status" not in gate_state:
            raise IssueFormatError(f"field 'gates_status.{key}' has no status")
        if gate_state["status"] == "passed":
            passed.add(key)
    context = _require(raw, "context", dict)
    if not all(map(_is_str, context.values())):
        raise IssueFormatError("field 'context' must map strings to strings")
    _require(raw, "documents", list)
    created_raw = _require(raw, "created_at", str)
    _require(raw, "updated_at", str)
    try:
        created_at = parse_timestamp(created_raw)
    except ValueError:
        raise IssueFormatError(f"field 'created_at' is not a timestamp: {created_raw!r}") from None
    fraction = _FRACTION.search(created_raw)
    return Issue(
        id=issue_id,
        title=title,
        state=state,
        priority=priority,
        assignee=assignee,
        dependencies=_str_list(raw, "dependencies"),
        labels=_str_list(raw, "labels"),
        gates_required=_str_list(raw, "gates_required"),
        gates_passed=frozenset(passed),
        context=dict(context),
        created_at=created_at,
        raw=raw,
        created_ns=int(fraction.group(1).ljust(9, "0")[6:9]) if fraction else 0,
    )


def assignee_for(agent: str) -> str:
    """jit's assignee convention is `type:identifier`; a bare agent name becomes `agent:<name>`."""
    assignee = agent if ":" in agent else f"agent:{agent}"
    if not _ASSIGNEE_RE.match(assignee):
        raise ValueError(f"{agent!r} is not a valid agent id (use NAME or TYPE:NAME, no spaces)")
    return assignee


def parse_duration(value: object) -> float:
    """Seconds, or a number with s/m/h/d: `600`, `90s`, `10m`, `2h`, `2d`."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 10m")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).strip().lower())
        if not match:
            raise ValueError(f"{value!r} is not a duration (e.g. 600, 90s, 10m, 2h, 2d)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds
