"""The `jit-dispatch` command line: parse options, build a request, call `dispatch`, report.

Every option can also come from `JIT_DISPATCH_<NAME>` (the Action passes its inputs that way).
Errors end in one line on stderr and a documented exit code (README, "Exit codes").
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import click

from . import __version__, actions, report
from .dispatch import Request, Result, dispatch_once, exit_code_for
from .errors import DispatchError, UsageError
from .jit_store import JitStore
from .models import PRIORITIES, Issue, assignee_for
from .runner import CancelToken, RunResult
from .selection import Filters, plan, resolve_issue_id

_LABEL = re.compile(r"^[a-z][a-z0-9-]*:(\*|[a-zA-Z0-9][a-zA-Z0-9._-]*)$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$")
_UNIT_SECONDS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class LabelType(click.ParamType):
    """A jit label or `ns:*`; from the environment, a comma- or whitespace-separated list."""

    name = "label"

    def split_envvar_value(self, rv: str) -> list[str]:
        return [part for part in re.split(r"[,\s]+", rv) if part]

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not _LABEL.match(value):
            self.fail(f"{value!r} is not a jit label (namespace:value, or namespace:*)", param, ctx)
        return str(value)


class DurationType(click.ParamType):
    """Seconds, or a number with s/m/h/d: `600`, `90s`, `10m`, `2h`."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            match = _DURATION.match(str(value).strip().lower())
            if not match:
                self.fail(f"{value!r} is not a duration (e.g. 600, 90s, 10m, 2h)", param, ctx)
            seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        if seconds <= 0:
            self.fail("must be greater than zero", param, ctx)
        return seconds


def env_option(*decls: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A click option that also reads `JIT_DISPATCH_<NAME>`."""
    name = next(d for d in decls if d.startswith("--")).lstrip("-").split("/")[0]
    kwargs.setdefault("envvar", "JIT_DISPATCH_" + name.upper().replace("-", "_"))
    kwargs.setdefault("show_envvar", True)
    return click.option(*decls, **kwargs)


def store_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Where the store is and which issues are in scope: shared by `once` and `ready`."""
    decorators = [
        env_option(
            "--jit-dir",
            type=click.Path(path_type=Path, file_okay=False),
            help="The .jit directory. Default: $JIT_DATA_DIR, else ./.jit.",
        ),
        env_option(
            "--label",
            "labels",
            multiple=True,
            type=LabelType(),
            help="Only issues with this label (repeatable; ns:* for any value).",
        ),
        env_option(
            "--exclude-label",
            "exclude_labels",
            multiple=True,
            type=LabelType(),
            help="Skip issues with this label (repeatable).",
        ),
        env_option("--min-priority", type=click.Choice(PRIORITIES), help="Only issues of this priority or higher."),
        env_option("--issue", "issue", help="Only this issue: full id or unique prefix (4+ chars)."),
        env_option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def open_store(jit_dir: Path | None) -> JitStore:
    root = jit_dir or Path(os.environ.get("JIT_DATA_DIR") or ".jit")
    return JitStore.open(root)


def build_filters(
    store: JitStore, labels: tuple[str, ...], exclude: tuple[str, ...], min_priority: str | None, issue: str | None
) -> Filters:
    issue_id = None
    if issue:
        try:
            issue_id = resolve_issue_id(issue, store.issue_ids())
        except ValueError as exc:
            raise UsageError(f"--issue: {exc}") from None
    return Filters(tuple(labels), tuple(exclude), min_priority, issue_id)


def run_reference(env: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """Where this claim came from: the workflow run URL, or host:pid."""
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        url = f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
        attempt = env.get("GITHUB_RUN_ATTEMPT")
        return f"{url}/attempts/{attempt}" if attempt else url
    return f"{socket.gethostname()}:{os.getpid()}"


class ConsoleHooks:
    """Shows the command's output live; in Actions inside a log group, workflow commands fenced."""

    def __init__(self, sink: TextIO, *, in_actions: bool, allow_workflow_commands: bool) -> None:
        self.sink = sink
        self.in_actions = in_actions
        self.fence_output = in_actions and not allow_workflow_commands
        self._stop_token: str | None = None

    def say(self, text: str) -> None:
        """A dispatcher line carrying issue text (already `plain`): fenced from workflow commands."""
        actions.print_line(self.sink, actions.fenced(text) if self.in_actions else text)

    def command_starting(self, issue: Issue, attempt: int) -> None:
        self.say(
            f"jit-dispatch: claimed {issue.short_id} ({issue.priority}, attempt {attempt}): {report.plain(issue.title)}"
        )
        if self.in_actions:
            actions.print_line(self.sink, f"::group::jit-dispatch: command output for {issue.short_id}")
        if self.fence_output:
            self._stop_token = actions.new_stop_token()
            actions.print_line(self.sink, f"::stop-commands::{self._stop_token}")

    def output(self, chunk: bytes) -> None:
        try:
            self.sink.flush()
            self.sink.buffer.write(chunk)
            self.sink.buffer.flush()
        except (BrokenPipeError, ValueError):
            pass  # nobody reads the log any more; the tail is still kept for the summary

    def command_finished(self, run: RunResult) -> None:
        if run.tail and not run.tail.endswith("\n"):
            actions.print_line(self.sink, "")
        if self._stop_token:
            actions.print_line(self.sink, f"::{self._stop_token}::")
            self._stop_token = None
        if self.in_actions:
            actions.print_line(self.sink, "::endgroup::")


def publish(result: Result, *, max_attempts: int, as_json: bool, hooks: ConsoleHooks) -> None:
    """Summary, outputs, annotation (in Actions) and the stdout report."""
    env = os.environ
    if env.get("GITHUB_STEP_SUMMARY"):
        actions.append_summary(Path(env["GITHUB_STEP_SUMMARY"]), report.summary_markdown(result, max_attempts))
    if env.get("GITHUB_OUTPUT"):
        actions.write_outputs(Path(env["GITHUB_OUTPUT"]), report.step_outputs(result))
    if hooks.in_actions and result.outcome in ("released", "parked", "lost", "error"):
        level = "warning" if result.outcome == "released" else "error"
        where = f"{result.issue.short_id}: " if result.issue else ""
        actions.print_line(
            sys.stderr,
            actions.command(level, where + (result.reason or result.outcome), title=f"jit-dispatch {result.outcome}"),
        )
    if as_json:
        actions.print_line(sys.stdout, json.dumps(report.result_json(result), ensure_ascii=False))
    else:
        hooks.say(report.summary_text(result, max_attempts))


def warn(warnings: list[str]) -> None:
    """Skipped files and the like: an annotation in Actions, a stderr line elsewhere."""
    for warning in warnings:
        if actions.in_actions():
            actions.print_line(sys.stderr, actions.command("warning", warning, title="jit-dispatch"))
        else:
            actions.print_line(sys.stderr, f"jit-dispatch: warning: {report.plain(warning)}")


def install_cancel_handlers(token: CancelToken) -> None:
    """A cancelled workflow run sends SIGINT, then SIGTERM; some runners SIGHUP."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda received, _frame: token.cancel(received))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="jit-dispatch")
def cli() -> None:
    """Dispatch the next ready jit issue to a command: select, claim, run, settle, report."""


@cli.command()
@env_option("--agent", required=True, help="Runner agent id: NAME or TYPE:NAME (assignee becomes agent:NAME).")
@env_option(
    "--command",
    required=True,
    help="Shell command to run. {issue_id} {short_id} {title} {priority} {agent} {issue_file} "
    "are substituted shell-quoted.",
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
def once(
    agent: str,
    command: str,
    jit_dir: Path | None,
    labels: tuple[str, ...],
    exclude_labels: tuple[str, ...],
    min_priority: str | None,
    issue: str | None,
    as_json: bool,
    timeout: float | None,
    max_attempts: int,
    shell: str,
    workdir: Path | None,
    dry_run: bool,
    fail_on_command_failure: bool,
    allow_workflow_commands: bool,
) -> None:
    """Select, claim, run and settle one issue."""
    cancel = CancelToken()
    install_cancel_handlers(cancel)
    try:
        assignee = assignee_for(agent)
    except ValueError as exc:
        raise UsageError(f"--agent: {exc}") from None
    if not command.strip():
        raise UsageError("--command: must not be empty")
    store = open_store(jit_dir)
    request = Request(
        agent=assignee,
        command=command,
        filters=build_filters(store, labels, exclude_labels, min_priority, issue),
        timeout=timeout,
        max_attempts=max_attempts,
        shell=shell,
        workdir=workdir,
        dry_run=dry_run,
        run_ref=run_reference(),
    )
    hooks = ConsoleHooks(
        sys.stderr if as_json else sys.stdout,
        in_actions=actions.in_actions(),
        allow_workflow_commands=allow_workflow_commands,
    )
    result = dispatch_once(store, request, cancel, hooks)
    warn(result.warnings)
    publish(result, max_attempts=max_attempts, as_json=as_json, hooks=hooks)
    sys.exit(exit_code_for(result, fail_on_command_failure))


@cli.command()
@store_options
@click.option("--all", "show_all", is_flag=True, help="Also list ready issues that are held back, with the reason.")
def ready(
    jit_dir: Path | None,
    labels: tuple[str, ...],
    exclude_labels: tuple[str, ...],
    min_priority: str | None,
    issue: str | None,
    as_json: bool,
    show_all: bool,
) -> None:
    """List dispatchable issues in dispatch order."""
    store = open_store(jit_dir)
    snapshot = store.snapshot()
    result = plan(
        snapshot.issues,
        snapshot.states,
        snapshot.gates,
        build_filters(store, labels, exclude_labels, min_priority, issue),
    )
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
        actions.print_line(sys.stdout, _issue_line(held_entry.issue) + f"  [held: {report.plain(held_entry.reason)}]")
    if not result.dispatchable and not held:
        actions.print_line(sys.stderr, "jit-dispatch: no dispatchable issue")


def _issue_line(issue: Issue) -> str:
    return f"{issue.short_id}  {issue.priority:<8}  {report.plain(issue.title)}"


def _issue_json(issue: Issue) -> dict[str, Any]:
    return {
        "issue_id": issue.id,
        "short_id": issue.short_id,
        "title": issue.title,
        "priority": issue.priority,
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
    line = report.plain(message)
    if actions.in_actions():
        actions.print_line(sys.stderr, actions.command("error", line, title="jit-dispatch"))
    else:
        actions.print_line(sys.stderr, f"jit-dispatch: error: {line}")
    if os.environ.get("GITHUB_OUTPUT"):
        actions.write_outputs(
            Path(os.environ["GITHUB_OUTPUT"]), {"claimed": "false", "outcome": "error", "reason": line}
        )
    sys.exit(code)
