"""Which issues may be dispatched, and in which order (docs/architecture.md#select). Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from jit_dispatch.domain.gates import problems as gate_problems
from jit_dispatch.domain.issue import Gate, Issue
from jit_dispatch.domain.values import PRIORITY_RANK, RESOLVED_STATES, State


@dataclass(frozen=True)
class Filters:
    """What a runner may take: labels it needs and refuses, a lowest priority, or one issue."""

    labels: tuple[str, ...] = ()
    exclude_labels: tuple[str, ...] = ()
    min_priority: str | None = None
    issue_id: str | None = None  # already resolved to a full id


@dataclass(frozen=True)
class Held:
    """A ready issue (jit `query available`) that the dispatcher will not take, and why."""

    issue: Issue
    reason: str


@dataclass(frozen=True)
class Plan:
    """The available issues matching the filters: dispatchable and held, each in dispatch order."""

    dispatchable: list[Issue] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)


def label_matches(pattern: str, labels: Iterable[str]) -> bool:
    """jit's label filter: `ns:*` matches any value in the namespace, otherwise exact."""
    if pattern.endswith(":*"):
        prefix = pattern[:-1]
        return any(label.startswith(prefix) for label in labels)
    return pattern in labels


def blocking_dependencies(issue: Issue, states: Mapping[str, str]) -> list[str]:
    """Dependencies that block: missing from the store, or not done/rejected (docs/jit-format.md#readiness)."""
    return [dep for dep in issue.dependencies if states.get(dep) not in RESOLVED_STATES]


def is_available(issue: Issue, states: Mapping[str, str]) -> bool:
    """jit `query available`: ready, unassigned, not blocked."""
    return issue.state == State.READY and issue.assignee is None and not blocking_dependencies(issue, states)


def unpassed_manual_prechecks(issue: Issue, gates: Mapping[str, Gate]) -> list[str]:
    """Manual precheck gates jit would refuse the claim for (docs/jit-format.md#gates)."""
    return [
        key
        for key in issue.gates_required
        if key in gates
        and gates[key].stage == "precheck"
        and gates[key].mode == "manual"
        and key not in issue.gates_passed
    ]


def hold_reason(issue: Issue, gates: Mapping[str, Gate]) -> str | None:
    """Why an available issue is still not dispatchable, or None."""
    if issue.parked:
        return f"parked: {issue.context.get('dispatch.last_reason', 'no reason')}"
    prechecks = unpassed_manual_prechecks(issue, gates)
    if prechecks:
        return "manual precheck not passed: " + ", ".join(prechecks)
    return None


def not_ready_reason(issue: Issue, states: Mapping[str, str]) -> str:
    """Plain words for why an issue is not available (for `--issue` and `status`)."""
    if issue.state != State.READY:
        return f"state is {issue.state}"
    if issue.assignee is not None:
        return f"assigned to {issue.assignee}"
    blockers = blocking_dependencies(issue, states)
    words = [f"{dep[:8]} ({states.get(dep, 'missing')})" for dep in blockers]
    return "blocked by " + ", ".join(words)


def matches_filters(issue: Issue, filters: Filters) -> bool:
    if filters.issue_id is not None and issue.id != filters.issue_id:
        return False
    if filters.labels and not all(label_matches(p, issue.labels) for p in filters.labels):
        return False
    if filters.exclude_labels and any(label_matches(p, issue.labels) for p in filters.exclude_labels):
        return False
    return not (
        filters.min_priority is not None and PRIORITY_RANK[issue.priority] > PRIORITY_RANK[filters.min_priority]
    )


def dispatch_order(issue: Issue) -> tuple[int, object, int, str]:
    """Priority, then oldest first (to the nanosecond), then id: the same store gives the same choice."""
    return (PRIORITY_RANK[issue.priority], issue.created_at, issue.created_ns, issue.id)


def dispatch_reason(issue: Issue, states: Mapping[str, str], gates: Mapping[str, Gate]) -> str | None:
    """None when the issue may be claimed now; otherwise why not. Used again under the lock."""
    if not is_available(issue, states):
        return not_ready_reason(issue, states)
    return hold_reason(issue, gates)


def plan(
    issues: Iterable[Issue],
    states: Mapping[str, str],
    gates: Mapping[str, Gate],
    filters: Filters,
    locked: Iterable[str] = (),
    run_gates: bool = True,
    held_back: Mapping[str, str] | None = None,
) -> Plan:
    """Split the available issues matching the filters into dispatchable and held, in order.

    `locked`: issues another runner holds a remote claim lock for (remote mode). `run_gates`: an
    issue whose required gates cannot be run as jit would (undefined, broken checker) is held.
    `held_back`: issues the tracker cannot dispatch, with the reason (a foreign ref on GitHub).
    """
    taken = frozenset(locked)
    dispatchable: list[Issue] = []
    held: list[Held] = []
    for issue in sorted(issues, key=dispatch_order):
        if not matches_filters(issue, filters) or not is_available(issue, states):
            continue
        reason = "being claimed by another runner (remote lock)" if issue.id in taken else hold_reason(issue, gates)
        reason = (held_back or {}).get(issue.id, reason)
        if reason is None and run_gates and issue.gates_required and (broken := gate_problems(issue, gates)):
            reason = broken[0]
        if reason is None:
            dispatchable.append(issue)
        else:
            held.append(Held(issue, reason))
    return Plan(dispatchable, held)


def spread(candidates: list[Issue], index: int, total: int) -> list[Issue]:
    """Runner `index` of `total` starting together tries a different candidate first.

    Each priority tier is rotated by the runner's index, so runners fan out over the top tier
    instead of all racing for its first issue; a lower tier still comes only after every
    candidate of the higher ones.
    """
    if total <= 1 or not candidates:
        return candidates
    ordered: list[Issue] = []
    for rank in sorted({PRIORITY_RANK[c.priority] for c in candidates}):
        tier = [c for c in candidates if PRIORITY_RANK[c.priority] == rank]
        shift = index % len(tier)
        ordered.extend(tier[shift:] + tier[:shift])
    return ordered


def resolve_issue_id(given: str, ids: Iterable[str]) -> str:
    """A full id or a unique prefix of at least 4 characters (docs/jit-format.md#ids, case-insensitive)."""
    wanted = given.strip().lower().replace("-", "")
    if len(wanted) < 4:
        raise ValueError(f"issue id prefix {given!r} is shorter than 4 characters")
    matches = [i for i in ids if i.lower().replace("-", "").startswith(wanted)]
    if not matches:
        raise ValueError(f"no issue matches {given!r}")
    if len(matches) > 1:
        shown = ", ".join(sorted(m[:8] for m in matches)[:5])
        raise ValueError(f"issue id {given!r} is ambiguous: {shown}")
    return matches[0]
