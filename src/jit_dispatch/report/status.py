"""The fleet at a glance: what is ready, held, blocked, running, stale and parked. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from jit_dispatch.domain import selection
from jit_dispatch.domain.gates import needed, needed_text
from jit_dispatch.domain.issue import Gate, Issue, parse_timestamp
from jit_dispatch.domain.selection import Held
from jit_dispatch.domain.staleness import Claim, dispatcher_claims, format_age
from jit_dispatch.domain.values import TERMINAL_STATES, State
from jit_dispatch.report.summary import issue_json, md_text, plain, title_line
from jit_dispatch.trackers.base import Snapshot


@dataclass(frozen=True)
class Status:
    location: str
    counts: dict[str, int]
    dispatchable: list[Issue]
    held: list[Held]
    blocked: list[tuple[Issue, list[str]]]  # issue, blocking dependency ids
    claims: list[Claim]
    stale_after: float
    parked: list[Issue]
    warnings: list[str]
    queue: dict[str, Any] = field(default_factory=dict)
    trend: list[tuple[datetime, int, int]] = field(default_factory=list)  # hour, done, released
    gates: Mapping[str, Gate] = field(default_factory=dict)  # the registry: which gates an issue still needs


SETTLE_EVENTS = ("issue_completed", "issue_released")
TREND_HOURS = 12


def queue_figures(dispatchable: list[Issue], now: datetime) -> dict[str, Any]:
    """The figures `status --json` and the pool's metrics share (docs/service.md#metrics).

    An issue's wait is measured from its `created_at`: jit records no "ready since" in the issue.
    """
    oldest = min((issue.created_at for issue in dispatchable), default=None)
    age = None if oldest is None else max(0.0, round((now - oldest).total_seconds(), 3))
    return {"ready_issues": len(dispatchable), "oldest_ready_age_seconds": age}


def settle_trend(
    events: Iterable[Mapping[str, Any]], now: datetime, hours: int = TREND_HOURS
) -> list[tuple[datetime, int, int]]:
    """Done (`issue_completed`) and released (`issue_released`) per UTC hour, the last `hours`, oldest first."""
    current = now.replace(minute=0, second=0, microsecond=0)
    start = current - timedelta(hours=hours - 1)
    counts = {start + timedelta(hours=n): [0, 0] for n in range(hours)}
    for event in events:
        kind, stamp = event.get("type"), event.get("timestamp")
        if kind not in SETTLE_EVENTS or not isinstance(stamp, str):
            continue
        try:
            hour = parse_timestamp(stamp).replace(minute=0, second=0, microsecond=0)
        except ValueError:
            continue
        if hour in counts:
            counts[hour][SETTLE_EVENTS.index(kind)] += 1
    return [(hour, done, released) for hour, (done, released) in counts.items()]


def build_status(
    snapshot: Snapshot,
    location: str,
    now: datetime,
    stale_after: float,
    events: Iterable[Mapping[str, Any]] | None = None,
) -> Status:
    """`snapshot` must hold every issue in full (`snapshot(full_states=State)`); `events` (the store's
    settle events) feed the trend of the Markdown dashboard."""
    plan = selection.plan(
        snapshot.issues, snapshot.states, snapshot.gates, selection.Filters(), snapshot.locked, True, snapshot.held_back
    )
    counts: dict[str, int] = dict.fromkeys(State, 0)
    for state in snapshot.states.values():
        counts[state] += 1
    ordered = sorted(snapshot.issues, key=selection.dispatch_order)
    blocked = [
        (issue, deps)
        for issue in ordered
        if issue.state not in TERMINAL_STATES and (deps := selection.blocking_dependencies(issue, snapshot.states))
    ]
    parked = [i for i in ordered if i.parked]
    claims = dispatcher_claims(snapshot.issues, now)
    claims += [
        Claim(i, i.assignee or "nobody", 0.0, 0.0)
        for i in snapshot.issues
        if i.state == State.IN_PROGRESS and all(c.issue.id != i.id for c in claims)
    ]
    queue = {**queue_figures(plan.dispatchable, now), "running": len(claims)}
    trend = settle_trend(events, now) if events is not None else []
    return Status(
        location,
        counts,
        plan.dispatchable,
        plan.held,
        blocked,
        claims,
        stale_after,
        parked,
        snapshot.warnings,
        queue,
        trend,
        snapshot.gates,
    )


def _claim_json(claim: Claim, stale_after: float) -> dict[str, Any]:
    dispatched = "dispatch.claimed_at" in claim.issue.context
    return {
        **issue_json(claim.issue),
        "agent": claim.agent,
        "age_seconds": round(claim.claimed_age) if dispatched else None,
        "silent_seconds": round(claim.silent_for) if dispatched else None,
        "stale": dispatched and claim.silent_for > stale_after,
    }


def status_json(status: Status) -> dict[str, Any]:
    """A stable schema: these keys, always present."""
    return {
        "store": status.location,
        "counts": status.counts,
        "dispatchable": [{**issue_json(i), "gates_needed": needed(i, status.gates)} for i in status.dispatchable],
        "held": [
            {**issue_json(h.issue), "reason": h.reason, "gates_needed": needed(h.issue, status.gates)}
            for h in status.held
        ],
        "blocked": [{**issue_json(i), "state": i.state, "blocked_by": deps} for i, deps in status.blocked],
        "in_progress": [_claim_json(c, status.stale_after) for c in status.claims],
        "parked": [{**issue_json(i), "reason": i.context.get("dispatch.last_reason")} for i in status.parked],
        "warnings": status.warnings,
        "queue": status.queue,
    }


def status_text(status: Status) -> str:
    data = status_json(status)
    counts = " · ".join(f"{state} {n}" for state, n in status.counts.items() if n)
    lines = [f"jit-dispatch status of {plain(status.location)}: {counts or 'no issues'}"]

    def section(title: str, rows: list[str]) -> None:
        if rows:
            lines.append(f"\n{title} ({len(rows)}):")
            lines.extend(f"  {row}" for row in rows)

    def head(entry: dict[str, Any]) -> str:
        gates = f"  [gates: {plain(needed_text(entry['gates_needed']))}]" if entry.get("gates_needed") else ""
        return f"{entry['short_id']}  {entry['priority']:<8}  {title_line(entry['title'])}{gates}"

    section("Dispatchable, in order", [head(e) for e in data["dispatchable"]])
    section("Ready but held back", [f"{head(e)}  [{plain(e['reason'])}]" for e in data["held"]])
    section("Blocked", [f"{head(e)}  [by {', '.join(d[:8] for d in e['blocked_by'])}]" for e in data["blocked"]])
    section("In progress", [_claim_line(c, status.stale_after) for c in status.claims])
    section("Parked", [f"{head(e)}  [{plain(e['reason'] or '')}]" for e in data["parked"]])
    return "\n".join(lines)


def _claim_line(claim: Claim, stale_after: float) -> str:
    issue = claim.issue
    if "dispatch.claimed_at" not in issue.context:
        return f"{issue.short_id}  {plain(claim.agent)}  (claimed outside the dispatcher)  {title_line(issue.title)}"
    flag = "  STALE" if claim.silent_for > stale_after else ""
    age = format_age(claim.claimed_age)
    return f"{issue.short_id}  {plain(claim.agent)}  claimed {age} ago{flag}  {title_line(issue.title)}"


def status_markdown(status: Status) -> str:
    """A step-summary dashboard with a Mermaid chart of the state counts."""
    data = status_json(status)
    lines = [
        f"### 📋 jit-dispatch status · {md_text(status.location)}",
        "",
        "```mermaid",
        "pie showData title Issues by state",
    ]
    lines += [f'    "{state}" : {n}' for state, n in status.counts.items() if n]
    lines += ["```", ""]
    lines += _trend_markdown(status.trend)

    def table(title: str, header: str, rows: list[str]) -> None:
        if rows:
            cols = header.count("|") - 1
            lines.extend([f"#### {title} ({len(rows)})", "", header, "|" + "---|" * cols, *rows, ""])

    def cells(entry: dict[str, Any], *extra: str) -> str:
        return (
            "| "
            + " | ".join([f"`{entry['short_id']}`", entry["priority"], md_text(entry["title"], 120), *extra])
            + " |"
        )

    table("Dispatchable, in order", "| Issue | Priority | Title |", [cells(e) for e in data["dispatchable"]])
    table(
        "Ready but held back",
        "| Issue | Priority | Title | Why |",
        [cells(e, md_text(e["reason"])) for e in data["held"]],
    )
    table(
        "Blocked",
        "| Issue | Priority | Title | Blocked by |",
        [cells(e, ", ".join(f"`{d[:8]}`" for d in e["blocked_by"])) for e in data["blocked"]],
    )
    claim_rows = []
    for claim, entry in zip(status.claims, data["in_progress"], strict=True):
        age = "outside the dispatcher" if entry["age_seconds"] is None else format_age(claim.claimed_age)
        claim_rows.append(cells(entry, md_text(claim.agent), age, "⚠️ stale" if entry["stale"] else ""))
    table("In progress", "| Issue | Priority | Title | Agent | Claimed | |", claim_rows)
    table(
        "Parked",
        "| Issue | Priority | Title | Last reason |",
        [cells(e, md_text(e["reason"] or "")) for e in data["parked"]],
    )
    return "\n".join(lines) + "\n"


SPARKS = "▁▂▃▄▅▆▇█"


def _sparkline(values: list[int]) -> str:
    top = max(values, default=0)
    return "".join(SPARKS[0] if not top else SPARKS[round(v * (len(SPARKS) - 1) / top)] for v in values)


def _trend_markdown(trend: list[tuple[datetime, int, int]]) -> list[str]:
    """A small trend of the last settles: one sparkline per outcome, then the hours that had any."""
    if not trend or not any(done or released for _, done, released in trend):
        return []
    done = [d for _, d, _ in trend]
    released = [r for _, _, r in trend]
    first, last = trend[0][0].strftime("%H:00"), trend[-1][0].strftime("%H:00")
    lines = [
        f"#### Settles per hour, {first}–{last} UTC",
        "",
        f"done `{_sparkline(done)}` {sum(done)} · released `{_sparkline(released)}` {sum(released)}",
        "",
        "| Hour (UTC) | done | released |",
        "|---|---|---|",
    ]
    lines += [f"| {hour:%m-%d %H:00} | {d} | {r} |" for hour, d, r in trend if d or r]
    return [*lines, ""]
