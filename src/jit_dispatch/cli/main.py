"""The `jit-dispatch` command line: parse options, build a request, call `dispatch`, report.

Every option can also come from `JIT_DISPATCH_<NAME>` (the Action passes its inputs that way).
Errors end in one line on stderr and a documented exit code (README, "Exit codes").
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

import click
from click.core import ParameterSource

from jit_dispatch import __version__
from jit_dispatch.cli.options import DurationType, config_option, env_option, store_options
from jit_dispatch.domain.issue import Issue, assignee_for
from jit_dispatch.domain.selection import plan
from jit_dispatch.engine.dispatch import Request, dispatch_once, exit_code_for
from jit_dispatch.errors import DispatchError, UsageError
from jit_dispatch.process.child import CancelToken, install_cancel_handlers
from jit_dispatch.report import actions, summary
from jit_dispatch.report.console import ConsoleHooks, publish, warn
from jit_dispatch.trackers.factory import (
    SCOPE_KEYS,
    build_filters,
    default_heartbeat,
    open_tracker,
    run_reference,
    store_choice,
)

_CONFIGURABLE = ("command", "labels", "exclude_labels", "min_priority", "timeout", "max_attempts", "shell", "workdir")


def apply_config(ctx: click.Context, options: dict[str, Any]) -> None:
    """Fill what the command line left at its default from dispatch.toml (agent table, then top level)."""
    path = options.pop("config")
    if path is None and not Path("dispatch.toml").is_file():
        return  # no config: pydantic is not even imported
    from jit_dispatch.cli.config import DEFAULT_PATH, RunSettings, load_config

    loaded = load_config(path or DEFAULT_PATH)
    agent_id = options["agent"] or (loaded.agents[0].id if len(loaded.agents) == 1 else None)
    entry = loaded.agent(agent_id) if agent_id else None
    settings = loaded.effective(entry) if entry else {key: getattr(loaded, key) for key in RunSettings.model_fields}
    settings["command"] = entry.command if entry else None
    for key in _CONFIGURABLE:
        value = settings.get(key)
        if value not in (None, []) and ctx.get_parameter_source(key) in (ParameterSource.DEFAULT, None):
            options[key] = tuple(value) if isinstance(value, list) else value
    options["agent"] = agent_id
    if not options["jit_dir"] and loaded.repos:
        options["jit_dir"] = tuple(loaded.repos)


class LazyGroup(click.Group):
    """Fleet commands are imported only when asked for: `once` stays fast to start."""

    LAZY: ClassVar[dict[str, str]] = {
        "reap": "reap",
        "release": "release",
        "unpark": "unpark",
        "status": "status",
        "config": "config_group",
        "start": "start",
        "watch": "start",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY:
            from jit_dispatch.cli import fleet as fleet_cli

            return getattr(fleet_cli, self.LAZY[cmd_name])
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="jit-dispatch")
def cli() -> None:
    """Dispatch the next ready jit issue to a command: select, claim, run, settle, report."""


@cli.command()
@env_option("--agent", help="Runner agent id: NAME or TYPE:NAME (assignee becomes agent:NAME).")
@env_option(
    "--command",
    help="Shell command to run. {issue_id} {short_id} {title} {priority} {agent} {issue_file} "
    "become quoted references to the JIT_* variables that carry them.",
)
@store_options
@env_option("--timeout", type=DurationType(), help="Stop the command after this long (600, 10m, 2h).")
@env_option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Park the issue after this many failed attempts.",
)
@env_option("--shell", default="bash", show_default=True, help="Shell that runs the command as SHELL -c COMMAND.")
@env_option(
    "--workdir", type=click.Path(path_type=Path, file_okay=False, exists=True), help="Working directory of the command."
)
@env_option("--dry-run", is_flag=True, help="Show what would be claimed; change nothing.")
@env_option(
    "--fail-on-command-failure/--no-fail-on-command-failure",
    default=True,
    show_default=True,
    help="Exit 1 when the command failed (released/parked/lost).",
)
@env_option(
    "--allow-workflow-commands",
    is_flag=True,
    help="In Actions, let the command's output issue ::workflow commands:: (off: fenced).",
)
@env_option(
    "--spread-index", type=click.IntRange(min=0), default=0, help="This runner's index among runners started together."
)
@env_option("--spread-total", type=click.IntRange(min=1), default=1, help="How many runners started together.")
@env_option(
    "--commit-author", help="Author of state commits, 'Name <email>' (--sync git). Default github-actions[bot]."
)
@env_option("--skip-ci/--no-skip-ci", default=True, show_default=True, help="End state commit messages with [skip ci].")
@env_option(
    "--heartbeat",
    type=DurationType(),
    help="Show signs of life this often while the command runs. Default 5m; 1m with --sync git (the lock ref moves).",
)
@config_option
def once(**options: Any) -> None:
    """Select, claim, run and settle one issue."""
    cancel = CancelToken()
    install_cancel_handlers(cancel)
    apply_config(click.get_current_context(), options)
    if not options["agent"]:
        raise UsageError("--agent: missing (pass --agent, or define the agent in dispatch.toml)")
    try:
        agent = assignee_for(options["agent"])
    except ValueError as exc:
        raise UsageError(f"--agent: {exc}") from None
    if not (options["command"] or "").strip():
        raise UsageError("--command: missing (pass --command, or give the agent a command in dispatch.toml)")
    if options["spread_index"] >= options["spread_total"]:
        raise UsageError("--spread-index: must be smaller than --spread-total")
    heartbeat = options["heartbeat"] or default_heartbeat(options)
    choice = store_choice(options, author=options["commit_author"], skip_ci=options["skip_ci"], heartbeat=heartbeat)
    with open_tracker(choice) as tracker:
        request = Request(
            agent=agent,
            command=options["command"],
            filters=build_filters(tracker, *(options[k] for k in SCOPE_KEYS)),
            timeout=options["timeout"],
            max_attempts=options["max_attempts"],
            shell=options["shell"],
            workdir=options["workdir"],
            dry_run=options["dry_run"],
            run_ref=run_reference(),
            spread_index=options["spread_index"],
            spread_total=options["spread_total"],
            heartbeat_seconds=heartbeat,
        )
        hooks = ConsoleHooks(
            sys.stderr if options["as_json"] else sys.stdout,
            in_actions=actions.in_actions(),
            allow_workflow_commands=options["allow_workflow_commands"],
        )
        result = dispatch_once(tracker, request, cancel, hooks)
        if note := tracker.record_result(result, options["max_attempts"]):
            result.warnings.append(note)  # GitHub: the summary goes into the settle comment
    warn(result.warnings)
    publish(result, max_attempts=options["max_attempts"], as_json=options["as_json"], hooks=hooks)
    sys.exit(exit_code_for(result, options["fail_on_command_failure"]))


@cli.command()
@store_options
@click.option("--all", "show_all", is_flag=True, help="Also list ready issues that are held back, with the reason.")
def ready(show_all: bool, as_json: bool, **options: Any) -> None:
    """List dispatchable issues in dispatch order."""
    with open_tracker(store_choice(options)) as tracker:
        filters = build_filters(tracker, *(options[k] for k in SCOPE_KEYS))
        snapshot = tracker.snapshot()
    result = plan(snapshot.issues, snapshot.states, snapshot.gates, filters, snapshot.locked)
    warn(snapshot.warnings)
    held = result.held if show_all else []
    if as_json:
        payload: dict[str, Any] = {"dispatchable": [_issue_json(i) for i in result.dispatchable]}
        if show_all:
            payload["held"] = [{**_issue_json(h.issue), "reason": h.reason} for h in held]
        actions.print_line(sys.stdout, json.dumps(payload, ensure_ascii=False))
        return
    for entry in result.dispatchable:
        actions.print_line(sys.stdout, _issue_line(entry))
    for held_entry in held:
        actions.print_line(sys.stdout, _issue_line(held_entry.issue) + f"  [held: {summary.plain(held_entry.reason)}]")
    if not result.dispatchable and not held:
        actions.print_line(sys.stderr, "jit-dispatch: no dispatchable issue")


def _issue_line(issue: Issue) -> str:
    return f"{issue.short_id}  {issue.priority:<8}  {summary.plain(issue.title)}"


def _issue_json(issue: Issue) -> dict[str, Any]:
    return {
        **summary.issue_json(issue),
        "labels": list(issue.labels),
        "created_at": issue.raw.get("created_at"),
        "attempts": issue.failed_attempts,
    }


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line per error, exit codes per the README."""
    try:
        cli.main(args=argv, prog_name="jit-dispatch", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        _fail(exc.format_message(), 2)
    except DispatchError as exc:
        _fail(str(exc), exc.exit_code)
    sys.exit(0)


def _fail(message: str, code: int) -> None:
    line = summary.plain(message)
    if actions.in_actions():
        actions.print_line(sys.stderr, actions.command("error", line, title="jit-dispatch"))
    else:
        actions.print_line(sys.stderr, f"jit-dispatch: error: {line}")
    if os.environ.get("GITHUB_OUTPUT"):
        actions.write_outputs(
            Path(os.environ["GITHUB_OUTPUT"]), {"claimed": "false", "outcome": "error", "reason": line}
        )
    sys.exit(code)
