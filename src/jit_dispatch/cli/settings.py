"""Options to settings, in one precedence chain, and settings to a `Request`, in one place.

Precedence, highest first: a flag, its `JIT_DISPATCH_<NAME>` variable (click reads both), the
agent's table in dispatch.toml, the top level of dispatch.toml, the built-in default. pydantic
(dispatch.toml) is imported only when there is a configuration file to read.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from jit_dispatch.context import GitHubContext
from jit_dispatch.domain.delivery import DEFAULT_BRANCH_TEMPLATE, check_branch_template
from jit_dispatch.domain.issue import assignee_for
from jit_dispatch.domain.selection import Filters
from jit_dispatch.engine.dispatch import Request
from jit_dispatch.errors import UsageError
from jit_dispatch.trackers.base import Tracker
from jit_dispatch.trackers.factory import StoreChoice, guard_token, jit_roots, remote_mode_evidence

if TYPE_CHECKING:
    from jit_dispatch.cli.config import DispatchConfig
    from jit_dispatch.engine.deliver import DeliverySettings

# The options of `store_options` that choose the tracker, and those that narrow the issues.
STORE_KEYS = (
    "jit_dir",
    "sync",
    "remote",
    "state_branch",
    "lock_prefix",
    "push_budget",
    "wait_for_fold",
    "tracker",
    "github_repo",
    "github_token",
    "github_api_url",
    "github_ready_label",
    "github_review_label",
    "include_assigned",
    "priority_labels",
    "github_lock",
    "trusted_actors",
    "pass_token",
    "pass_git_credentials",
)
# The delivery options (docs/delivery.md), settable per agent or at the top level of dispatch.toml too.
DELIVERY_KEYS = (
    "deliver",
    "branch_template",
    "base",
    "allow_empty_delivery",
    "done_on",
    "max_review_rounds",
    "draft",
    "pr_labels",
    "reviewers",
)
# The options an agent's table (or the top level) of dispatch.toml may set for `once`.
CONFIGURABLE = (
    "command",
    "labels",
    "exclude_labels",
    "min_priority",
    "timeout",
    "max_attempts",
    "shell",
    "workdir",
    "gates",
    "on_gate_failure",
    "checks",
    *DELIVERY_KEYS,
)
DEFAULT_HEARTBEAT_SECONDS = 300.0
REMOTE_HEARTBEAT_SECONDS = 60.0


@dataclass(frozen=True)
class Scope:
    """Which issues a command looks at: `--label`, `--exclude-label`, `--min-priority`, `--issue`."""

    labels: tuple[str, ...] = ()
    exclude_labels: tuple[str, ...] = ()
    min_priority: str | None = None
    issue: str | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Scope:
        labels, excluded = tuple(options["labels"]), tuple(options["exclude_labels"])
        return cls(labels, excluded, options["min_priority"], options.get("issue"))  # no --issue in dispatch.toml

    def filters(self, tracker: Tracker) -> Filters:
        """The scope as selection filters; `--issue` resolved against the tracker (a prefix, `#12`)."""
        issue_id = None
        if self.issue:
            try:
                issue_id = tracker.resolve_issue_id(self.issue)
            except ValueError as exc:
                raise UsageError(f"--issue: {exc}") from None
        return Filters(self.labels, self.exclude_labels, self.min_priority, issue_id)


@dataclass(frozen=True)
class AgentSettings:
    """What one agent runs, on which issues, under which limits."""

    agent: str  # the assignee, `type:identifier`
    command: str
    scope: Scope = Scope()
    timeout: float | None = None
    max_attempts: int = 3
    shell: str = "bash"
    workdir: Path | None = None
    gates: str = "run"  # run jit's auto gates, or "skip" them (leave them to jit)
    on_gate_failure: str = "release"  # or "gated", as jit does
    checks: tuple[str, ...] = ()  # `--check` commands, for any tracker
    delivery: DeliverySettings | None = None  # `--deliver branch|pull-request`; remote and store filled in later


@dataclass(frozen=True)
class OnceSettings:
    """Everything `once` was told, after the precedence chain."""

    run: AgentSettings
    store: StoreChoice  # its heartbeat: --heartbeat, else the default for the store
    dry_run: bool
    fail_on_command_failure: bool
    allow_workflow_commands: bool
    spread_index: int
    spread_total: int
    as_json: bool


def store_choice(options: dict[str, Any], **extra: Any) -> StoreChoice:
    """The `store_options` a command received, dispatch.toml's store keys under them, as a
    StoreChoice (the heartbeat a GitHub lock announces filled in)."""
    values = with_file_defaults(options)
    extra.setdefault("author", values.get("commit_author"))
    choice = StoreChoice(**{key: values[key] for key in STORE_KEYS}, **extra)
    return choice if choice.heartbeat else replace(choice, heartbeat=default_heartbeat(choice))


def fleet_store_choice(options: dict[str, Any], **extra: Any) -> StoreChoice:
    """`store_choice` for the day-2 commands a person runs (reap, release, unpark, status): outside
    Actions, a store whose history shows remote-mode state commits is never silently changed (or
    reported) as the working copy has it: without an explicit --sync (flag, variable or
    dispatch.toml), one line says which flag to add."""
    choice = store_choice(options, **extra)
    ctx = click.get_current_context(silent=True)
    chosen = ctx is not None and ctx.get_parameter_source("sync") not in (ParameterSource.DEFAULT, None)
    if choice.tracker != "jit" or choice.sync != "none" or chosen or GitHubContext.from_environ().in_actions:
        return choice
    for root in jit_roots(choice.jit_dir):
        if evidence := remote_mode_evidence(root):
            raise UsageError(
                f"--sync: {root} is shared through the remote (remote-mode state commit {evidence.split()[0]}): "
                "add --sync git to act on the state branch (or --sync none for this working copy only)"
            )
    return choice


@functools.cache
def _load(path: Path) -> DispatchConfig:
    from jit_dispatch.cli.config import load_config

    return load_config(path)


def file_config(options: dict[str, Any]) -> DispatchConfig | None:
    """dispatch.toml of `--config`, else ./dispatch.toml when present, else None (pydantic not imported)."""
    path = options.get("config")
    if path is None:
        path = Path("dispatch.toml")
        if not path.is_file():
            return None
    return _load(Path(path))


def with_file_defaults(options: dict[str, Any]) -> dict[str, Any]:
    """`options` with dispatch.toml's store keys filled in where neither a flag nor a variable set
    them, each converted by its option's own type (so the file accepts what the flag accepts)."""
    ctx = click.get_current_context(silent=True)
    loaded = file_config(options) if ctx is not None else None
    if loaded is None or ctx is None:
        return options
    values = dict(options)
    params = {param.name: param for param in ctx.command.params}
    file_values: dict[str, Any] = {"jit_dir": loaded.repos} if loaded.repos else {}
    for key, raw in {**file_values, **loaded.store_values()}.items():
        param = params.get(key)
        if param is None or ctx.get_parameter_source(key) not in (ParameterSource.DEFAULT, None):
            continue
        try:
            values[key] = param.type_cast_value(ctx, raw)
        except click.BadParameter as exc:
            raise UsageError(f"{options.get('config') or 'dispatch.toml'}: {key}: {exc.message}") from None
    return values


def default_heartbeat(store: StoreChoice) -> float:
    """Claims are refreshed every 5 minutes; in remote mode every minute (a beat re-points the
    runner's own lock ref, not the branch, and is what tells a reaper the runner is alive)."""
    if store.sync == "git" and store.tracker == "jit":
        return REMOTE_HEARTBEAT_SECONDS
    return DEFAULT_HEARTBEAT_SECONDS


def build_request(
    run: AgentSettings,
    filters: Filters,
    store: StoreChoice,
    context: GitHubContext,
    *,
    dry_run: bool = False,
    spread: tuple[int, int] = (0, 1),
) -> Request:
    """The one way a `Request` is made, for `once` and for every agent of the pool."""
    return Request(
        agent=run.agent,
        command=run.command,
        filters=filters,
        timeout=run.timeout,
        max_attempts=run.max_attempts,
        shell=run.shell,
        workdir=run.workdir,
        dry_run=dry_run,
        run_ref=context.run_reference(),
        spread_index=spread[0],
        spread_total=spread[1],
        heartbeat_seconds=store.heartbeat or default_heartbeat(store),
        scratch_dir=context.runner_temp,
        gates=run.gates,
        on_gate_failure=run.on_gate_failure,
        checks=run.checks,
        delivery=run.delivery
        and replace(
            run.delivery,
            remote=store.remote,
            jit_dir=jit_roots(store.jit_dir)[0],
            push_budget=store.push_budget,
            author=store.author or run.delivery.author,
        ),
        pass_git_credentials=store.pass_git_credentials,
    )


def agent_settings(agent_id: str, values: dict[str, Any]) -> AgentSettings:
    """An agent from merged values (flags and configuration); a bad id or no command is a UsageError."""
    try:
        agent = assignee_for(agent_id)
    except ValueError as exc:
        raise UsageError(f"--agent: {exc}") from None
    if not (values["command"] or "").strip():
        raise UsageError("--command: missing (pass --command, or give the agent a command in dispatch.toml)")
    return AgentSettings(
        agent=agent,
        command=values["command"],
        scope=Scope.from_options(values),
        timeout=values["timeout"],
        max_attempts=values["max_attempts"],
        shell=values["shell"],
        workdir=values["workdir"],
        gates=values["gates"],
        on_gate_failure=values["on_gate_failure"],
        checks=tuple(values["checks"]),
        delivery=delivery_settings(values),
    )


def delivery_settings(values: dict[str, Any]) -> DeliverySettings | None:
    """`--deliver` and its options (None with `none`); a bad branch template is a UsageError."""
    mode = values.get("deliver") or "none"
    if mode == "none":
        return None
    template = values.get("branch_template") or DEFAULT_BRANCH_TEMPLATE
    if (problem := check_branch_template(template)) is not None:
        raise UsageError(f"--branch-template: {template!r}: {problem}")
    from jit_dispatch.engine.deliver import DeliverySettings  # git plumbing: only when delivering

    return DeliverySettings(
        mode=mode,
        branch_template=template,
        base=values.get("base"),
        allow_empty=bool(values.get("allow_empty_delivery")),
        done_on=values.get("done_on") or "merge",
        max_review_rounds=values.get("max_review_rounds") or 3,
        draft=bool(values.get("draft")),
        pr_labels=tuple(values.get("pr_labels") or ()),
        reviewers=tuple(values.get("reviewers") or ()),
    )


def ready_to_deliver(request: Request, store: StoreChoice, max_attempts: int) -> Request:
    """`--deliver`: checked before anything is claimed — the workspace is a git repository with the
    remote (UsageError, exit 2); with `pull-request`, GitHub's pull requests added and the token's
    permissions checked (TrackerError, exit 3; a missing repository or token is a UsageError).
    Other requests are returned as they are."""
    delivery = request.delivery
    if delivery is None or request.dry_run:
        return request
    from jit_dispatch.engine.deliver import preflight  # git plumbing: only when delivering

    if (problem := preflight(delivery, request.workdir)) is not None:
        raise UsageError(f"--deliver: {problem}")
    if delivery.mode != "pull-request":
        return request
    if not store.github_repo or not store.github_token:
        raise UsageError(
            "--deliver pull-request: needs --github-repo (or $GITHUB_REPOSITORY) and a token ($GITHUB_TOKEN)"
        )
    import functools

    from jit_dispatch.delivery.pulls import PullRequests
    from jit_dispatch.report.summary import pull_request_body

    token = guard_token(store.github_token, store.pass_token)
    pulls = PullRequests(store.github_repo, token, api_url=store.github_api_url, trusted_actors=store.trusted_actors)
    pulls.check_permissions()
    describe = functools.partial(
        pull_request_body, max_attempts=max_attempts, run_ref=request.run_ref, closes=store.tracker == "github"
    )
    return replace(request, delivery=replace(delivery, pulls=pulls, describe=describe))


def once_settings(ctx: click.Context, options: dict[str, Any]) -> OnceSettings:
    """`once`'s options through the precedence chain, checked."""
    values = with_file_defaults(options)
    _apply_config(ctx, values)
    if not values["agent"]:
        raise UsageError("--agent: missing (pass --agent, or define the agent in dispatch.toml)")
    if values["spread_index"] >= values["spread_total"]:
        raise UsageError(_spread_error(ctx, values["spread_index"], values["spread_total"]))
    return OnceSettings(
        run=agent_settings(values["agent"], values),
        store=store_choice(
            values,
            skip_ci=values["skip_ci"],
            heartbeat=values["heartbeat"],
            read_only=values["dry_run"],
        ),
        dry_run=values["dry_run"],
        fail_on_command_failure=values["fail_on_command_failure"],
        allow_workflow_commands=values["allow_workflow_commands"],
        spread_index=values["spread_index"],
        spread_total=values["spread_total"],
        as_json=values["as_json"],
    )


def _spread_error(ctx: click.Context, index: int, total: int) -> str:
    if ctx.get_parameter_source("spread_index") == ParameterSource.ENVIRONMENT and not os.environ.get(
        "JIT_DISPATCH_SPREAD_INDEX"
    ):
        return (
            f"--spread-index: {index} (from JOB_COMPLETION_INDEX) must be smaller than --spread-total ({total}); "
            "set JIT_DISPATCH_SPREAD_TOTAL to the Indexed Job's completions"
        )
    return f"--spread-index: {index} must be smaller than --spread-total ({total})"


def _apply_config(ctx: click.Context, values: dict[str, Any]) -> None:
    """Fill what neither a flag nor the environment set from dispatch.toml (agent table, then top level)."""
    loaded = file_config(values)
    if loaded is None:
        return  # no config: pydantic is not even imported
    from jit_dispatch.cli.config import RunSettings

    agent_id = values["agent"] or (loaded.agents[0].id if len(loaded.agents) == 1 else None)
    entry = loaded.agent(agent_id) if agent_id else None
    configured = loaded.effective(entry) if entry else {key: getattr(loaded, key) for key in RunSettings.model_fields}
    configured["command"] = entry.command if entry else None
    for key in CONFIGURABLE:
        value = configured.get(key)
        if value not in (None, []) and ctx.get_parameter_source(key) in (ParameterSource.DEFAULT, None):
            values[key] = tuple(value) if isinstance(value, list) else value
    values["agent"] = agent_id
