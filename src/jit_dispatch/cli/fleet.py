"""Commands for operating a fleet: reap, release, unpark, status, config check, start."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from jit_dispatch.cli.options import DurationType, config_option, env_option, store_options
from jit_dispatch.domain import transitions
from jit_dispatch.domain.issue import assignee_for
from jit_dispatch.domain.selection import matches_filters
from jit_dispatch.domain.staleness import reap_reason, stale_claims
from jit_dispatch.domain.values import Outcome, State
from jit_dispatch.errors import UsageError
from jit_dispatch.process.child import CancelToken, install_cancel_handlers
from jit_dispatch.report import actions, summary
from jit_dispatch.report.console import warn
from jit_dispatch.trackers.base import Tracker
from jit_dispatch.trackers.factory import (
    SCOPE_KEYS,
    build_filters,
    default_heartbeat,
    open_tracker,
    run_reference,
    store_choice,
)


def emit(payload: dict[str, Any], lines: list[str], as_json: bool) -> None:
    if as_json:
        actions.print_line(sys.stdout, json.dumps(payload, ensure_ascii=False))
    else:
        for line in lines:
            actions.print_line(sys.stdout, line)


@click.command()
@store_options
@env_option("--older-than", type=DurationType(), required=True, help="Release claims silent this long (90m, 6h, 2d).")
@env_option("--agent-pattern", help="Only claims whose agent matches this glob (e.g. 'ci-*').")
@env_option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True, help="Park at this many.")
@env_option("--dry-run", is_flag=True, help="List what would be released; change nothing.")
def reap(older_than: float, agent_pattern: str | None, max_attempts: int, dry_run: bool, **options: Any) -> None:
    """Release in-progress claims whose dispatcher stopped showing signs of life."""
    with open_tracker(store_choice(options)) as tracker:
        filters = build_filters(tracker, *(options[k] for k in SCOPE_KEYS))
        snapshot = tracker.snapshot(full_states=(State.IN_PROGRESS,))
        stale = [
            claim
            for claim in stale_claims(snapshot.issues, datetime.now(UTC), older_than, agent_pattern)
            if matches_filters(claim.issue, filters)
        ]
        dead = {c.issue.id for c in (stale if dry_run else tracker.confirm_dead(stale, older_than))}
        rows = []
        for claim in stale:
            reason = reap_reason(claim)
            outcome = "would release"
            if claim.issue.id not in dead:
                outcome = "skipped (alive: its heartbeat moved while watched)"
            elif not dry_run:
                seen = transitions.liveness(claim.issue.raw)
                outcome = tracker.release(claim.issue.id, claim.agent, reason, max_attempts, seen=seen).outcome
                outcome = "skipped (alive or settled meanwhile)" if outcome == Outcome.LOST else outcome
            rows.append({"issue_id": claim.issue.id, "short_id": claim.issue.short_id, "title": claim.issue.title,
                         "agent": claim.agent, "age_seconds": round(claim.claimed_age), "reason": reason,
                         "outcome": outcome})  # fmt: skip
        if not dry_run:
            tracker.flush()  # remote mode: results others left pending go onto the branch too
    warn(snapshot.warnings)
    lines = [f"{r['short_id']}  {r['outcome']:<9}  {summary.plain(r['reason'])}" for r in rows]
    lines.append(f"jit-dispatch: {len(rows)} stale claim(s) {'found' if dry_run else 'reaped'}")
    emit({"reaped": rows, "dry_run": dry_run}, lines, options["as_json"])


@click.command()
@store_options
@click.argument("issue_ref", metavar="ID")
@click.argument("reason")
@click.option("--park", is_flag=True, help="Also park it (dispatch:parked), so no runner takes it.")
def release(issue_ref: str, reason: str, park: bool, **options: Any) -> None:
    """Give an in-progress issue back (a person's decision), with a reason."""
    with open_tracker(store_choice(options)) as tracker:
        issue_id = _resolve(tracker, issue_ref)
        snapshot = tracker.snapshot(full_states=(State.IN_PROGRESS,))
        current = next((i for i in snapshot.issues if i.id == issue_id), None)
        if current is None or current.assignee is None:
            state = snapshot.states.get(issue_id, "unreadable")
            raise UsageError(f"ID: issue {issue_id[:8]} is not claimed (state {state})")
        settlement = tracker.release(issue_id, current.assignee, reason, 0 if park else sys.maxsize)
    row = {"issue_id": issue_id, "outcome": settlement.outcome, "attempts": settlement.failed_attempts}
    emit(row, [f"jit-dispatch: {settlement.outcome} {issue_id[:8]} ({summary.plain(reason)})"], options["as_json"])


@click.command()
@store_options
@click.argument("issue_ref", metavar="ID")
def unpark(issue_ref: str, **options: Any) -> None:
    """Let runners take a parked issue again (its attempt count starts over)."""
    with open_tracker(store_choice(options)) as tracker:
        issue_id = _resolve(tracker, issue_ref)
        if not tracker.unpark(issue_id):
            raise UsageError(f"ID: issue {issue_id[:8]} is not parked")
    emit({"issue_id": issue_id, "outcome": "unparked"}, [f"jit-dispatch: unparked {issue_id[:8]}"], options["as_json"])


def _resolve(tracker: Tracker, issue_ref: str) -> str:
    try:
        return tracker.resolve_issue_id(issue_ref)
    except ValueError as exc:
        raise UsageError(f"ID: {exc}") from None


@click.command()
@store_options
@env_option("--stale-after", type=DurationType(), default="2h", show_default=True, help="Flag claims silent this long.")
@env_option("--summary/--no-summary", "write_summary", default=None, help="Write the dashboard to the step summary.")
def status(stale_after: float, write_summary: bool | None, **options: Any) -> None:
    """Counts by state; what is dispatchable, held, blocked, running (stale flagged) and parked."""
    from jit_dispatch.report.status import build_status, status_json, status_markdown, status_text

    with open_tracker(store_choice(options)) as tracker:
        snapshot = tracker.snapshot(full_states=tuple(State))
        location = tracker.location
    board = build_status(snapshot, location, datetime.now(UTC), stale_after)
    warn(snapshot.warnings)
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path and (write_summary if write_summary is not None else actions.in_actions()):
        actions.append_summary(Path(summary_path), status_markdown(board))
    emit(status_json(board), [status_text(board)], options["as_json"])


@click.group("config")
def config_group() -> None:
    """The dispatch.toml configuration."""


@config_group.command("check")
@config_option
def config_check(config: Path | None) -> None:
    """Validate the configuration and print it with every default filled in."""
    from jit_dispatch.cli.config import DEFAULT_PATH, load_config

    loaded = load_config(config or DEFAULT_PATH)
    effective = {
        "poll_interval_secs": loaded.poll_interval_secs,
        "repos": [str(r) for r in loaded.repos],
        "agents": [{**loaded.effective(agent), "workdir": _str(loaded.effective(agent)["workdir"])}
                   for agent in loaded.agents],
    }  # fmt: skip
    actions.print_line(sys.stdout, json.dumps(effective, indent=2, ensure_ascii=False))


def _str(value: object) -> str | None:
    return None if value is None else str(value)


@click.command()
@config_option
@store_options
@click.option("--once", "single_cycle", is_flag=True, help="One fill cycle; wait for its commands; exit.")
@env_option("--log-dir", type=click.Path(path_type=Path, file_okay=False), help="Command logs (default: a temp dir).")
def start(config: Path | None, single_cycle: bool, log_dir: Path | None, **options: Any) -> None:
    """Run the agent pool of dispatch.toml: fill free capacity every poll interval."""
    from jit_dispatch.cli.config import DEFAULT_PATH, load_config
    from jit_dispatch.engine.dispatch import Request
    from jit_dispatch.engine.pool import Pool, Slot

    loaded = load_config(config or DEFAULT_PATH)
    if not loaded.agents:
        raise UsageError(f"{config or DEFAULT_PATH}: agents: define at least one [[agents]] table")
    if not options["jit_dir"] and loaded.repos:
        options["jit_dir"] = tuple(loaded.repos)
    cancel = CancelToken()
    install_cancel_handlers(cancel)
    logs = log_dir or Path(tempfile.mkdtemp(prefix="jit-dispatch-logs-"))
    with open_tracker(store_choice(options, heartbeat=default_heartbeat(options))) as tracker:
        slots = []
        for agent in loaded.agents:
            settings = loaded.effective(agent)
            scope = build_filters(tracker, tuple(settings["labels"]), tuple(settings["exclude_labels"]),
                                  settings["min_priority"], None)  # fmt: skip
            request = Request(
                agent=assignee_for(agent.id),
                command=agent.command,
                filters=scope,
                timeout=settings["timeout"],
                max_attempts=settings["max_attempts"],
                shell=settings["shell"],
                workdir=settings["workdir"],
                run_ref=run_reference(),
                heartbeat_seconds=default_heartbeat(options),
            )
            slots.append(Slot(agent.id, agent.max_concurrent, request))
        pool = Pool(tracker, slots, cancel=cancel, poll_interval=loaded.poll_interval_secs, log_dir=logs,
                    out=sys.stdout, base_env=os.environ)  # fmt: skip
        pool.say(f"jit-dispatch: command logs in {logs}")
        results = pool.run(once=single_cycle)
    failed = [r for r in results if r.outcome.failed]
    sys.exit(128 + cancel.signum if cancel.signum else (1 if failed else 0))
