"""Commands for operating a fleet: reap, release, unpark, status, config check, start."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from jit_dispatch.cli.help import GroupedCommand
from jit_dispatch.cli.options import (
    DurationType,
    ParamType,
    config_option,
    env_option,
    scope_options,
    store_options,
)
from jit_dispatch.cli.settings import (
    Scope,
    agent_settings,
    build_request,
    fleet_store_choice,
    ready_to_deliver,
    store_choice,
    with_file_defaults,
)
from jit_dispatch.context import GitHubContext
from jit_dispatch.domain import transitions
from jit_dispatch.domain.markdown import md_text
from jit_dispatch.domain.selection import matches_filters
from jit_dispatch.domain.staleness import dispatcher_claims, format_age, reap_reason, stale_claims
from jit_dispatch.domain.values import Outcome, State
from jit_dispatch.engine.merges import notice_merges
from jit_dispatch.errors import TrackerError, UsageError
from jit_dispatch.process import runlock
from jit_dispatch.process.child import CancelToken, install_cancel_handlers
from jit_dispatch.report import actions, summary
from jit_dispatch.report.console import warn
from jit_dispatch.trackers.base import Tracker
from jit_dispatch.trackers.factory import open_tracker

if TYPE_CHECKING:  # imported for real only by `start`
    from jit_dispatch.engine.pool import Pool
    from jit_dispatch.service.metrics import PoolMetrics


def emit(payload: dict[str, Any], lines: list[str], as_json: bool) -> None:
    if as_json:
        actions.print_line(sys.stdout, json.dumps(payload, ensure_ascii=False))
    else:
        for line in lines:
            actions.print_line(sys.stdout, line)


@click.command(cls=GroupedCommand)
@scope_options
@store_options
@env_option("--older-than", type=DurationType(), required=True, help="Release claims silent this long (90m, 6h, 2d).")
@env_option("--agent-pattern", help="Only claims whose agent matches this glob (e.g. 'ci-*').")
@env_option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True, help="Park at this many.")
@env_option("--dry-run", is_flag=True, help="List what would be released; change nothing.")
@env_option(
    "--foreign", is_flag=True, help="GitHub: also delete refs under the lock prefix that are no lock of jit-dispatch."
)
def reap(
    older_than: float, agent_pattern: str | None, max_attempts: int, dry_run: bool, foreign: bool, **options: Any
) -> None:
    """Release in-progress claims whose dispatcher stopped showing signs of life."""
    context = GitHubContext.from_environ()
    store = fleet_store_choice(options, read_only=dry_run)
    with open_tracker(store, context) as tracker:
        filters = Scope.from_options(options).filters(tracker)
        remove_foreign = getattr(tracker, "remove_foreign", None)
        if foreign and remove_foreign is None:
            raise UsageError("--foreign: only for --tracker github (refs under its --lock-prefix)")
        repaired = [] if dry_run else tracker.repair() + notice_merges(tracker, remote=options["remote"]).notes
        if remove_foreign is not None and foreign and not dry_run:
            repaired += remove_foreign()
        snapshot = tracker.snapshot(full_states=(State.IN_PROGRESS,))
        stale = [
            claim
            for claim in stale_claims(snapshot.issues, snapshot.now or datetime.now(UTC), older_than, agent_pattern)
            if matches_filters(claim.issue, filters)
        ]
        if stale and not dry_run and (store.sync == "git" or store.tracker == "github"):
            # Lock refs are watched before a claim is judged dead: minutes, not a hang.
            actions.print_line(
                sys.stderr,
                f"jit-dispatch: reap: {len(stale)} claim(s) silent for over {format_age(older_than)}; watching "
                "their locks for two announced heartbeat intervals plus 5 s before releasing",
            )
        dead = {c.issue.id for c in (stale if dry_run else tracker.confirm_dead(stale, older_than))}
        rows = []
        for claim in stale:
            reason = reap_reason(claim)
            outcome = "would release"
            if runlock.alive(claim.issue.id):  # its command's processes still hold the run lock here
                outcome = "skipped (alive: its command still runs on this machine)"
            elif claim.issue.id not in dead:
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
    warn(repaired + snapshot.warnings, context)
    lines = [f"{r['short_id']}  {r['outcome']:<9}  {summary.plain(str(r['reason']))}" for r in rows]
    lines.append(f"jit-dispatch: {len(rows)} stale claim(s) {'found' if dry_run else 'reaped'}")
    emit({"reaped": rows, "dry_run": dry_run}, lines, options["as_json"])


@click.command(cls=GroupedCommand)
@store_options
@click.argument("issue_ref", metavar="ID")
@click.argument("reason")
@click.option("--park", is_flag=True, help="Also park it (dispatch.parked_at), so no runner takes it.")
@click.option(
    "--attempt/--no-attempt",
    "count_attempt",
    default=None,
    help="Count the release as a failed attempt, as a runner's failure. Default --no-attempt: a person's "
    "decision is not a failed attempt (--tracker github: every release counts).",
)
def release(issue_ref: str, reason: str, park: bool, count_attempt: bool | None, **options: Any) -> None:
    """Give an in-progress issue back (a person's decision), with a reason; the runner that held it
    stops at its next heartbeat and reports the reason."""
    store = fleet_store_choice(options)
    counted = count_attempt if count_attempt is not None else store.tracker == "github"
    with open_tracker(store, GitHubContext.from_environ()) as tracker:
        issue_id = _resolve(tracker, issue_ref)
        snapshot = tracker.snapshot(full_states=(State.IN_PROGRESS,))
        current = next((i for i in snapshot.issues if i.id == issue_id), None)
        if current is None or current.assignee is None:
            state = snapshot.states.get(issue_id, "unreadable")
            raise UsageError(f"ID: issue {issue_id[:8]} is not claimed (state {state})")
        limit = 0 if park else sys.maxsize
        settlement = tracker.release(issue_id, current.assignee, reason, limit, count_attempt=counted)
    row = {"issue_id": issue_id, "outcome": settlement.outcome, "attempts": settlement.failed_attempts}
    emit(row, [f"jit-dispatch: {settlement.outcome} {issue_id[:8]} ({summary.plain(reason)})"], options["as_json"])


@click.command(cls=GroupedCommand)
@store_options
@click.argument("issue_ref", metavar="ID")
def unpark(issue_ref: str, **options: Any) -> None:
    """Let runners take a parked issue again (its attempt count starts over)."""
    with open_tracker(fleet_store_choice(options), GitHubContext.from_environ()) as tracker:
        issue_id = _resolve(tracker, issue_ref)
        if not tracker.unpark(issue_id):
            raise UsageError(f"ID: issue {issue_id[:8]} is not parked")
    emit({"issue_id": issue_id, "outcome": "unparked"}, [f"jit-dispatch: unparked {issue_id[:8]}"], options["as_json"])


def _resolve(tracker: Tracker, issue_ref: str) -> str:
    try:
        return tracker.resolve_issue_id(issue_ref)
    except ValueError as exc:
        raise UsageError(f"ID: {exc}") from None


@click.command(cls=GroupedCommand)
@store_options
@env_option("--stale-after", type=DurationType(), default="2h", show_default=True, help="Flag claims silent this long.")
@env_option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "markdown", "html"]),
    help="What to print on stdout: text (default), json (as --json), markdown (the step summary's "
    "dashboard), html (one self-contained page with the settles-per-hour chart).",
)
@env_option(
    "--summary/--no-summary",
    "write_summary",
    default=None,
    help="Also append the Markdown dashboard to $GITHUB_STEP_SUMMARY. Default: on in Actions.",
)
@env_option("--repair", is_flag=True, help="First finish settles an interrupted run left half-done (GitHub).")
def status(stale_after: float, output_format: str | None, write_summary: bool | None, repair: bool,
           **options: Any) -> None:  # fmt: skip
    """Counts by state; what is dispatchable, held, blocked, running (stale flagged), parked,
    released and gated, with why: attempts, last reason, when, the run, the failed gates."""
    from jit_dispatch.report.status import SETTLE_EVENTS, build_status, status_json, status_markdown, status_text
    from jit_dispatch.trackers.jit.events import EVENTS_FILE, local_stores
    from jit_dispatch.trackers.jit.files import read_events

    context = GitHubContext.from_environ()
    fmt = output_format or ("json" if options["as_json"] else "text")
    summary_sink = bool(context.summary_file) and (write_summary if write_summary is not None else context.in_actions)
    trend = summary_sink or fmt in ("markdown", "html")
    with open_tracker(fleet_store_choice(options, read_only=not repair), context) as tracker:
        repaired = tracker.repair() + notice_merges(tracker, remote=options["remote"]).notes if repair else []
        snapshot = tracker.snapshot(full_states=tuple(State))
        location = tracker.location
        # As `reap` judges: a claim silent by its timestamps is stale only if the tracker's own
        # evidence agrees (remote mode and GitHub locks: watched unchanged for two intervals).
        now = snapshot.now or datetime.now(UTC)  # the clock of the claims' timestamps (GitHub's)
        silent = [c for c in dispatcher_claims(snapshot.issues, now) if c.silent_for > stale_after]
        dead = {c.issue.id for c in tracker.confirm_dead(silent, stale_after)} if silent else set()
        alive = frozenset(c.issue.id for c in silent if c.issue.id not in dead)
        # The dashboard's trend of settles per hour, from each local store's event log.
        stores = local_stores(tracker) if trend else []
        events = [e for store in stores for e in read_events(store.root / EVENTS_FILE, SETTLE_EVENTS)]
    board = build_status(snapshot, location, now, stale_after, events if trend else None, alive)
    warn(repaired + snapshot.warnings, context)
    if context.summary_file and summary_sink:
        actions.append_summary(context.summary_file, status_markdown(board))
    if fmt == "html":
        from jit_dispatch.report.status_html import status_html

        actions.print_line(sys.stdout, status_html(board, now))
    elif fmt == "markdown":
        actions.print_line(sys.stdout, status_markdown(board))
    else:
        emit(status_json(board), [status_text(board)], fmt == "json")


@click.command(cls=GroupedCommand)
@store_options
def doctor(**options: Any) -> None:
    """Check a repository before its first run: dispatch.toml, the store, the gate registry, the
    remote, pushes to the state branch and lock refs, the token's scopes, the commands' programs."""
    from jit_dispatch.cli.doctor import run_checks

    context = GitHubContext.from_environ()
    checks = run_checks(options, context)
    failed = [c for c in checks if c.ok is False]
    verdict = f"jit-dispatch doctor: {len(failed)} thing(s) to fix" if failed else "jit-dispatch doctor: all good"
    if context.summary_file:
        rows = [f"- {'✅' if c.ok else '⏭️' if c.ok is None else '❌'} {md_text(c.name)}: "
                f"{md_text(c.detail)}" + (f" — **fix:** {md_text(c.fix)}" if c.fix else "")
                for c in checks]  # fmt: skip
        actions.append_summary(context.summary_file, "\n".join(["### 🩺 jit-dispatch doctor", "", *rows, ""]) + "\n")
    payload = {"ok": not failed, "checks": [c.as_json() for c in checks]}
    emit(payload, [c.line() for c in checks] + [verdict], options["as_json"])
    sys.exit(1 if failed else 0)


@click.group("config")
def config_group() -> None:
    """The dispatch.toml configuration."""


@config_group.command("check", cls=GroupedCommand)
@config_option
def config_check(config: Path | None) -> None:
    """Validate the configuration and print it with every default filled in."""
    from jit_dispatch.cli.config import DEFAULT_PATH, load_config

    loaded = load_config(config or DEFAULT_PATH)
    effective = {
        "poll_interval_secs": loaded.poll_interval_secs,
        "listen": loaded.listen,
        "repos": [str(r) for r in loaded.repos],
        "store": loaded.store_values(),  # the store keys the file sets (flags and variables beat them)
        "agents": [{**loaded.effective(agent), "workdir": _str(loaded.effective(agent)["workdir"])}
                   for agent in loaded.agents],
    }  # fmt: skip
    actions.print_line(sys.stdout, json.dumps(effective, indent=2, ensure_ascii=False))


@config_group.command("schema", cls=GroupedCommand)
def config_schema() -> None:
    """Print the JSON Schema of dispatch.toml (editors validate the file with it)."""
    from jit_dispatch.cli.schema import schema_text

    sys.stdout.write(schema_text())


def _str(value: object) -> str | None:
    return None if value is None else str(value)


class ListenType(ParamType):
    """`HOST:PORT` (`PORT` alone: loopback)."""

    name = "host:port"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, int]:
        from jit_dispatch.cli.config import parse_listen

        if isinstance(value, tuple):
            return value
        try:
            return parse_listen(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.command(cls=GroupedCommand)
@store_options
@click.option("--once", "single_cycle", is_flag=True, help="One fill cycle; wait for its commands; exit.")
@env_option("--log-dir", type=click.Path(path_type=Path, file_okay=False), help="Command logs (default: a temp dir).")
@env_option(
    "--listen",
    type=ListenType(),
    help="Serve /healthz, /readyz, /metrics and the webhooks on HOST:PORT (PORT alone: 127.0.0.1). Default: off.",
)
@env_option(
    "--probe-listen",
    type=ListenType(),
    help="Also serve /healthz, /readyz and /metrics (never webhooks) on HOST:PORT, a listener slow "
    "webhook clients cannot crowd out: point the probes here. Needs --listen.",
)
@env_option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per event (claim, settle, cycle, webhook), for log collectors.",
)
def start(
    single_cycle: bool,
    log_dir: Path | None,
    listen: tuple[str, int] | None,
    probe_listen: tuple[str, int] | None,
    log_format: str,
    **options: Any,
) -> None:
    """Run the agent pool of dispatch.toml: fill free capacity every poll interval or when woken."""
    from jit_dispatch.cli.config import DEFAULT_PATH, load_config, parse_listen
    from jit_dispatch.engine.pool import Pool, Slot
    from jit_dispatch.service.logs import EventLog

    config = options["config"] or DEFAULT_PATH
    loaded = load_config(config)
    if not loaded.agents:
        raise UsageError(f"{config}: agents: define at least one [[agents]] table")
    options = with_file_defaults({**options, "config": config})
    if listen is None and loaded.listen:
        listen = parse_listen(loaded.listen)
    if probe_listen is not None and listen is None:
        raise UsageError("--probe-listen: needs --listen (or `listen` in the configuration)")
    # The pool's secret, not the commands': they work on untrusted issue text.
    secret = os.environ.pop("JIT_DISPATCH_WEBHOOK_SECRET", "")
    cancel = CancelToken()
    install_cancel_handlers(cancel)
    logs = log_dir or Path(tempfile.mkdtemp(prefix="jit-dispatch-logs-"))
    log = EventLog(sys.stdout, log_format)
    context = GitHubContext.from_environ()
    store = store_choice(options)
    with open_tracker(store, context) as tracker:
        slots = []
        for agent in loaded.agents:
            run = agent_settings(agent.id, {**loaded.effective(agent), "command": agent.command})
            if run.delivery is not None and agent.max_concurrent > 1:  # its workspace holds one issue's work
                raise UsageError(
                    f"dispatch.toml: agent {agent.id!r}: deliver needs max_concurrent = 1 (docs/delivery.md)"
                )
            request = ready_to_deliver(
                build_request(run, run.scope.filters(tracker), store, context),
                store,
                run.max_attempts,
            )
            slots.append(Slot(agent.id, agent.max_concurrent, request))
        metrics = None
        if listen is not None:
            from jit_dispatch.service.metrics import PoolMetrics

            metrics = PoolMetrics()
        pool = Pool(tracker, slots, cancel=cancel, poll_interval=loaded.poll_interval_secs, log_dir=logs,
                    base_env=os.environ, sinks=[log] if metrics is None else [log, metrics])  # fmt: skip
        pool.emit("logs", log_dir=str(logs))
        _run_pool(pool, tracker, options, context, single_cycle, (listen, probe_listen), metrics, secret)
    sys.exit(128 + cancel.signum if cancel.signum else (1 if pool.failed else 0))


def _run_pool(pool: Pool, tracker: Tracker, options: dict[str, Any], context: GitHubContext, single_cycle: bool,
              listen: tuple[tuple[str, int] | None, tuple[str, int] | None], metrics: PoolMetrics | None,
              secret: str) -> None:  # fmt: skip
    """The pool, with the store watched (local stores; not for one cycle) and the endpoint when listening."""
    from jit_dispatch.service.app import running_service
    from jit_dispatch.trackers.jit.events import local_stores

    local = options["tracker"] == "jit" and options["sync"] == "none"
    roots = [store.root for store in local_stores(tracker)] if local and not single_cycle else []
    branch = _state_branch(options, context) if listen[0] is not None else None
    with running_service(pool, listen=listen[0], probe_listen=listen[1], metrics=metrics, secret=secret,
                         state_branch=branch, watch_roots=roots):  # fmt: skip
        pool.run(once=single_cycle)


def _state_branch(options: dict[str, Any], context: GitHubContext) -> str | None:
    """The branch whose pushes wake the pool: --state-branch, else the checked-out one (None: any)."""
    from jit_dispatch.trackers.factory import current_branch, jit_roots
    from jit_dispatch.trackers.remote.git import Git

    if options["state_branch"]:
        return str(options["state_branch"])
    root = jit_roots(options["jit_dir"])[0].absolute()
    anchor = next((p for p in [root, *root.parents] if p.is_dir()), Path.cwd())
    try:
        return current_branch(Git(anchor), context)
    except (UsageError, OSError, TrackerError):
        return None
