"""The fleet at a glance: what is ready, held, blocked, running, stale and parked. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jit_dispatch.domain import selection
from jit_dispatch.domain.issue import PARKED_LABEL, Issue
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


def build_status(snapshot: Snapshot, location: str, now: datetime, stale_after: float) -> Status:
    """`snapshot` must hold every issue in full (`snapshot(full_states=State)`)."""
    plan = selection.plan(snapshot.issues, snapshot.states, snapshot.gates, selection.Filters(), snapshot.locked)
    counts = dict.fromkeys(State, 0)
    for state in snapshot.states.values():
        counts[state] += 1
    blocked = [
        (issue, deps)
        for issue in sorted(snapshot.issues, key=selection.dispatch_order)
        if issue.state not in TERMINAL_STATES and (deps := selection.blocking_dependencies(issue, snapshot.states))
    ]
    parked = [i for i in sorted(snapshot.issues, key=selection.dispatch_order) if PARKED_LABEL in i.labels]
    claims = dispatcher_claims(snapshot.issues, now)
    claims += [
        Claim(i, i.assignee or "nobody", 0.0, 0.0)
        for i in snapshot.issues
        if i.state == State.IN_PROGRESS and all(c.issue.id != i.id for c in claims)
    ]
    return Status(
        location, counts, plan.dispatchable, plan.held, blocked, claims, stale_after, parked, snapshot.warnings
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
        "dispatchable": [issue_json(i) for i in status.dispatchable],
        "held": [{**issue_json(h.issue), "reason": h.reason} for h in status.held],
        "blocked": [{**issue_json(i), "state": i.state, "blocked_by": deps} for i, deps in status.blocked],
        "in_progress": [_claim_json(c, status.stale_after) for c in status.claims],
        "parked": [{**issue_json(i), "reason": i.context.get("dispatch.last_reason")} for i in status.parked],
        "warnings": status.warnings,
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
        return f"{entry['short_id']}  {entry['priority']:<8}  {title_line(entry['title'])}"

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
