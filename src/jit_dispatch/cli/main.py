"""The `jit-dispatch` command line: parse options, build a request, call `dispatch`, report.

Every option can also come from `JIT_DISPATCH_<NAME>` (the Action passes its inputs that way).
Errors end in one line on stderr and a documented exit code (docs/cli.md#exit-codes).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import click

from jit_dispatch import __version__
from jit_dispatch.cli.help import GroupedCommand
from jit_dispatch.cli.options import (
    DurationType,
    delivery_options,
    env_option,
    gate_options,
    scope_options,
    store_options,
)
from jit_dispatch.cli.settings import Scope, build_request, once_settings, ready_to_deliver, store_choice
from jit_dispatch.context import GitHubContext
from jit_dispatch.domain import gates as gate_rules
from jit_dispatch.domain.issue import Gate, Issue
from jit_dispatch.engine.dispatch import dispatch_once, exit_code_for, plan_for
from jit_dispatch.errors import DispatchError
from jit_dispatch.process import credentials
from jit_dispatch.process.child import CancelToken, install_cancel_handlers
from jit_dispatch.report import actions, summary
from jit_dispatch.report.console import ConsoleHooks, publish, scrub_result, warn
from jit_dispatch.trackers.factory import open_tracker


class LazyGroup(click.Group):
    """Fleet commands are imported only when asked for: `once` stays fast to start."""

    command_class = GroupedCommand

    LAZY: ClassVar[dict[str, str]] = {
        "reap": "reap",
        "release": "release",
        "unpark": "unpark",
        "status": "status",
        "config": "config_group",
        "start": "start",
        "watch": "start",
        "doctor": "doctor",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY:
            from jit_dispatch.cli import fleet as fleet_cli

            command: click.Command = getattr(fleet_cli, self.LAZY[cmd_name])
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="jit-dispatch")
def cli() -> None:
    """Dispatch the next ready jit issue to a command: select, claim, run, settle, report."""


@cli.command()
@env_option(
    "--agent", help="Runner agent id: NAME (the assignee becomes agent:NAME) or TYPE:NAME (the assignee as given)."
)
@env_option(
    "--command",
    help="Shell command to run. {issue_id} {short_id} {title} {priority} {agent} {issue_file} "
    "become quoted references to the JIT_* variables that carry them.",
)
@scope_options
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
    "--spread-index",
    envvar=["JIT_DISPATCH_SPREAD_INDEX", "JOB_COMPLETION_INDEX"],  # a Kubernetes Indexed Job's pod index
    type=click.IntRange(min=0),
    default=0,
    help="This runner's index among runners started together. Default: $JOB_COMPLETION_INDEX, else 0.",
)
@env_option(
    "--spread-total",
    type=click.IntRange(min=1),
    default=1,
    help="How many runners started together (an Indexed Job: its completions).",
)
@env_option("--skip-ci/--no-skip-ci", default=True, show_default=True, help="End state commit messages with [skip ci].")
@env_option(
    "--heartbeat",
    type=DurationType(),
    help="Show signs of life this often while the command runs. Default 5m; 1m with --sync git (the lock ref moves).",
)
@gate_options
@delivery_options
def once(**options: Any) -> None:
    """Select, claim, run and settle one issue."""
    cancel = CancelToken()
    install_cancel_handlers(cancel)
    settings = once_settings(click.get_current_context(), options)
    context = GitHubContext.from_environ()
    with open_tracker(settings.store, context) as tracker:
        request = build_request(
            settings.run,
            settings.run.scope.filters(tracker),
            settings.store,
            context,
            dry_run=settings.dry_run,
            spread=(settings.spread_index, settings.spread_total),
        )
        request = ready_to_deliver(request, settings.store, settings.run.max_attempts)
        hooks = ConsoleHooks(
            sys.stderr if settings.as_json else sys.stdout,
            in_actions=context.in_actions,
            allow_workflow_commands=settings.allow_workflow_commands,
        )
        result = scrub_result(dispatch_once(tracker, request, cancel, hooks))
        max_attempts = settings.run.max_attempts
        render = functools.partial(summary.summary_markdown, max_attempts=max_attempts)
        if note := tracker.record_result(result, render):
            result.warnings.append(note)  # GitHub: the summary goes into the settle comment
    warn(result.warnings, context)
    publish(result, context, max_attempts=max_attempts, as_json=settings.as_json, hooks=hooks)
    sys.exit(exit_code_for(result, settings.fail_on_command_failure))


@cli.command()
@scope_options
@store_options
@click.option("--all", "show_all", is_flag=True, help="Also list ready issues that are held back, with the reason.")
def ready(show_all: bool, as_json: bool, **options: Any) -> None:
    """List dispatchable issues in dispatch order."""
    context = GitHubContext.from_environ()
    with open_tracker(store_choice(options, read_only=True), context) as tracker:
        filters = Scope.from_options(options).filters(tracker)
        snapshot = tracker.snapshot()
    result = plan_for(snapshot, filters)
    warn(snapshot.warnings, context)
    held = result.held if show_all else []
    gates = snapshot.gates
    if as_json:
        payload: dict[str, Any] = {"dispatchable": [_issue_json(i, gates) for i in result.dispatchable]}
        if show_all:
            payload["held"] = [{**_issue_json(h.issue, gates), "reason": h.reason} for h in held]
        actions.print_line(sys.stdout, json.dumps(payload, ensure_ascii=False))
        return
    for entry in result.dispatchable:
        actions.print_line(sys.stdout, _issue_line(entry, gates if show_all else {}))
    for held_entry in held:
        line = _issue_line(held_entry.issue, gates) + f"  [held: {summary.plain(held_entry.reason)}]"
        actions.print_line(sys.stdout, line)
    if not result.dispatchable and not held:
        actions.print_line(sys.stderr, "jit-dispatch: no dispatchable issue")


def _issue_line(issue: Issue, gates: Mapping[str, Gate]) -> str:
    line = f"{issue.short_id}  {issue.priority:<8}  {summary.title_line(issue.title)}"
    needed = gate_rules.needed(issue, gates) if gates else []
    return line + (f"  [gates: {summary.plain(gate_rules.needed_text(needed))}]" if needed else "")


def _issue_json(issue: Issue, gates: Mapping[str, Gate]) -> dict[str, Any]:
    return {
        **summary.issue_json(issue),
        "labels": list(issue.labels),
        "created_at": issue.raw.get("created_at"),
        "attempts": issue.failed_attempts,
        "gates_needed": gate_rules.needed(issue, gates),
    }


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line per error, exit codes per docs/cli.md#exit-codes."""
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
    """One line per mistake (dispatch.toml reports all of its mistakes at once); secrets cut out."""
    context = GitHubContext.from_environ()
    message = credentials.scrub(message)
    lines = [summary.plain(text) for text in message.splitlines() if text.strip()] or [summary.plain(message)]
    for line in lines:
        if context.in_actions:
            actions.print_line(sys.stderr, actions.command("error", line, title="jit-dispatch"))
        else:
            actions.print_line(sys.stderr, f"jit-dispatch: error: {line}")
    line = lines[0] if len(lines) == 1 else f"{lines[0]} (and {len(lines) - 1} more)"
    if context.output_file:
        actions.write_outputs(context.output_file, {"claimed": "false", "outcome": "error", "reason": line})
    sys.exit(code)
