"""Option types and shared option groups of the CLI; every option also reads JIT_DISPATCH_<NAME>."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from jit_dispatch.domain.issue import LABEL_PATTERN, LOCK_PREFIX, parse_duration
from jit_dispatch.domain.values import DEFAULT_READY_LABEL, Priority

if TYPE_CHECKING:  # click's types are generic for type checkers (value, input); at run time plain classes
    ParamType = click.ParamType[Any, Any]
else:
    ParamType = click.ParamType

# A plain GitHub label (`bug`, `good-first-issue`) for --tracker github; jit labels are namespaced.
_PLAIN_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]*$")


class LabelType(ParamType):
    """A jit label or `ns:*` (or a plain GitHub label); from the environment, a comma- or whitespace-separated list."""

    name = "label"

    def split_envvar_value(self, rv: str) -> list[str]:
        return [part for part in re.split(r"[,\s]+", rv) if part]

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not (LABEL_PATTERN.match(value) or _PLAIN_LABEL.match(value)):
            self.fail(f"{value!r} is not a jit label (namespace:value, or namespace:*)", param, ctx)
        return str(value)


class PriorityLabelsType(ParamType):
    """`critical=P0,high=P1,normal=P2,low=P3`: which GitHub label means which priority."""

    name = "mapping"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        from jit_dispatch.trackers.github.rules import parse_priority_labels  # GitHub only: off the `once` path

        try:
            return parse_priority_labels(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class PriorityType(ParamType):
    """critical, high, normal or low, in any case (click.Choice over the enum compares member names)."""

    name = "[critical|high|normal|low]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Priority:
        try:
            return Priority.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class DurationType(ParamType):
    """Seconds, or a number with s/m/h/d: `600`, `90s`, `10m`, `2h`."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class CheckType(ParamType):
    """A `--check` command; from the environment (the Action's `checks` input), one per line."""

    name = "command"

    def split_envvar_value(self, rv: str) -> list[str]:
        return [line.strip() for line in rv.splitlines() if line.strip()]

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not str(value).strip():
            self.fail("an empty command", param, ctx)
        return str(value)


def gate_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """jit's quality gates and `--check` commands (docs/gates.md)."""
    decorators = [
        env_option(
            "--gates",
            type=click.Choice(["run", "skip"]),
            default="run",
            show_default=True,
            help="run: jit's auto prechecks after the claim, auto postchecks before done. skip: leave them to jit.",
        ),
        env_option(
            "--on-gate-failure",
            type=click.Choice(["release", "gated"]),
            default="release",
            show_default=True,
            help="A failed auto postcheck: release the issue (a failed attempt), or leave it gated as jit does.",
        ),
        env_option(
            "--check",
            "checks",
            multiple=True,
            type=CheckType(),
            help="A command that must pass after a successful command, for any tracker (repeatable).",
        ),
    ]
    return _stacked(func, decorators)


def delivery_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Where the command's work goes (docs/delivery.md)."""
    decorators = [
        env_option(
            "--deliver",
            type=click.Choice(["none", "branch", "pull-request"]),
            help="none (default): the work stays in the workspace. branch: commit it to a work branch and push "
            "it. pull-request: and open a pull request.",
        ),
        env_option(
            "--branch-template",
            help="The work branch's name; placeholders as in --command plus {slug}. Default: jit/{short_id}-{slug}.",
        ),
        env_option("--base", help="The branch the work must reach. Default: the branch the run started on."),
        env_option("--allow-empty-delivery", is_flag=True, help="Deliver even when the command changed nothing."),
        env_option(
            "--done-on",
            type=click.Choice(["success", "merge"]),
            help="When a delivered issue is done: when the command succeeds, or (default) when its work is merged.",
        ),
        env_option(
            "--max-review-rounds",
            type=click.IntRange(min=1),
            help="Park the issue after this many rounds of requested changes. Default 3.",
        ),
        env_option("--draft", is_flag=True, help="Open pull requests as drafts."),
        env_option("--pr-label", "pr_labels", multiple=True, help="Label for the pull request (repeatable)."),
        env_option("--reviewer", "reviewers", multiple=True, help="Ask this login or org/team to review (repeatable)."),
    ]
    return _stacked(func, decorators)


def _stacked(func: Callable[..., Any], decorators: list[Callable[..., Any]]) -> Callable[..., Any]:
    """`func` under `decorators`, applied as if written above it in this order (so --help lists them so)."""
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def env_option(*decls: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A click option that also reads `JIT_DISPATCH_<NAME>`."""
    name = next(d for d in decls if d.startswith("--")).lstrip("-").split("/")[0]
    kwargs.setdefault("envvar", "JIT_DISPATCH_" + name.upper().replace("-", "_"))
    kwargs.setdefault("show_envvar", True)
    return click.option(*decls, **kwargs)


config_option = env_option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="dispatch.toml: agents and store defaults (default: ./dispatch.toml when present).",
)


def scope_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Which issues a command looks at: `once`, `ready`, `reap`."""
    decorators = [
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
        env_option("--min-priority", type=PriorityType(), help="Only issues of this priority or higher."),
        env_option("--issue", "issue", help="Only this issue: full id or unique prefix (4+ chars)."),
    ]
    return _stacked(func, decorators)


def store_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Where the store is and how state is shared: every command that opens a tracker."""
    decorators = [
        env_option(
            "--jit-dir",
            multiple=True,
            type=click.Path(path_type=Path, file_okay=False),
            help="The .jit directory (repeatable: dispatch across stores). Default: $JIT_DATA_DIR, else ./.jit.",
        ),
        env_option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout."),
        env_option(
            "--sync",
            type=click.Choice(["none", "git"]),
            default="none",
            show_default=True,
            help="none: read and write .jit/ in place. git: the remote is the lock and the record (matrix fan-out).",
        ),
        env_option("--remote", default="origin", show_default=True, help="Remote of --sync git."),
        env_option("--state-branch", help="Branch holding the tracker state. Default: the current branch."),
        env_option(
            "--lock-prefix",
            default=LOCK_PREFIX,
            show_default=True,
            help="Ref namespace of the per-issue claim locks (--sync git, --tracker github).",
        ),
        env_option(
            "--push-budget",
            type=DurationType(),
            default="3m",
            show_default=True,
            help="Keep retrying refused or failed pushes this long (--sync git); cut short by cancellation.",
        ),
        env_option(
            "--wait-for-fold",
            is_flag=True,
            help="--sync git: after settling, wait until the result is on the state branch (for later workflow "
            "steps that read it), not only until the result ref is durable; the next run folds it otherwise.",
        ),
        env_option(
            "--commit-author",
            help="Author of state commits (--sync git) and delivered commits, 'Name <email>'. Default: in Actions "
            "github-actions[bot], elsewhere your git config user.name and user.email.",
        ),
        config_option,
        env_option(
            "--tracker",
            type=click.Choice(["jit", "github"]),
            default="jit",
            show_default=True,
            help="jit: the .jit/ store. github: GitHub Issues of --github-repo (see the --github-* options).",
        ),
    ]
    return _stacked(github_options(func), decorators)  # the GitHub options listed right after --tracker in --help


def github_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """GitHub Issues as the tracker (`--tracker github`). The token is read, never shown."""
    decorators = [
        env_option(
            "--github-repo",
            envvar=["JIT_DISPATCH_GITHUB_REPO", "GITHUB_REPOSITORY"],
            help="owner/name of the repository whose issues are dispatched. Default: $GITHUB_REPOSITORY.",
        ),
        env_option(
            "--github-token",
            envvar=["JIT_DISPATCH_GITHUB_TOKEN", "GITHUB_TOKEN"],
            help="Token with `issues: write`, and `contents: write` for --github-lock refs (the default); `contents: "
            "read` with comments. Default: $GITHUB_TOKEN (prefer the variable: arguments show in ps).",
        ),
        env_option(
            "--github-api-url",
            envvar=["JIT_DISPATCH_GITHUB_API_URL", "GITHUB_API_URL"],
            default="https://api.github.com",
            show_default=True,
            help="REST API base (GitHub Enterprise Server: https://HOST/api/v3). Default: $GITHUB_API_URL.",
        ),
        env_option(
            "--github-ready-label",
            default=DEFAULT_READY_LABEL,
            show_default=True,
            help="Only open issues with this label are dispatched.",
        ),
        env_option(
            "--github-review-label",
            default="in-review",
            show_default=True,
            help="With --done-on merge: a delivered issue stays open with this label until its work merges.",
        ),
        env_option("--include-assigned", is_flag=True, help="Also dispatch issues assigned to a person."),
        env_option(
            "--github-lock",
            type=click.Choice(["refs", "comments"]),
            default="refs",
            show_default=True,
            help="refs: a git ref per claim, arbitrated by GitHub (needs `contents: write`). comments: markers "
            "only, safe only where lists are read-after-write consistent.",
        ),
        env_option(
            "--trusted-actor",
            "trusted_actors",
            multiple=True,
            help="Another login whose markers count (repeatable), e.g. a second app's bot. Default: only the "
            "token's own identity and people with write access.",
        ),
        env_option(
            "--pass-token",
            is_flag=True,
            help="Leave the token in the command's environment (default: removed from it, and from the live log).",
        ),
        env_option(
            "--pass-git-credentials",
            is_flag=True,
            help="Leave the workspace's git credentials (what actions/checkout persisted, credential helpers) in "
            "its git config while the command runs (default: moved out for the command, put back after; see "
            "docs/hardening.md).",
        ),
        env_option(
            "--priority-labels",
            type=PriorityLabelsType(),
            help="Labels meaning each priority, e.g. critical=P0,high=P1,normal=P2,low=P3. "
            "Default: priority:critical|high|normal|low. Unlabelled: normal.",
        ),
    ]
    return _stacked(func, decorators)
