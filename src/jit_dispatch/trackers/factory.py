"""From CLI options to a tracker: the local `.jit/`, or the state branch of a git remote."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jit_dispatch.domain.issue import LOCK_PREFIX
from jit_dispatch.domain.selection import Filters
from jit_dispatch.errors import UsageError
from jit_dispatch.trackers.base import Tracker
from jit_dispatch.trackers.jit.store import JitStore
from jit_dispatch.trackers.multi import MultiTracker
from jit_dispatch.trackers.remote.git import Git, GitError

if TYPE_CHECKING:
    from jit_dispatch.trackers.remote.tracker import RemoteJitTracker


@dataclass(frozen=True)
class StoreChoice:
    jit_dir: tuple[Path, ...] = ()  # several: multi-repo dispatch
    sync: str = "none"
    remote: str = "origin"
    state_branch: str | None = None
    lock_prefix: str = LOCK_PREFIX
    author: str | None = None  # "Name <email>"
    skip_ci: bool = True
    tracker: str = "jit"  # or "github": the --github-* fields below; jit_dir/sync are not used then
    github_repo: str | None = None
    github_token: str | None = field(default=None, repr=False)
    github_api_url: str = "https://api.github.com"
    github_ready_label: str = "dispatch"
    include_assigned: bool = False
    priority_labels: tuple[tuple[str, str], ...] | None = None
    heartbeat: float | None = None  # remote mode: announced in each lock, which is re-pointed this often
    push_budget: float = 180.0  # remote mode: how long to keep retrying a refused or failed push


# The options that fill the github_* fields of StoreChoice (options.github_options).
GITHUB_KEYS = (
    "github_repo",
    "github_token",
    "github_api_url",
    "github_ready_label",
    "include_assigned",
    "priority_labels",
)


STORE_KEYS = ("jit_dir", "sync", "remote", "state_branch", "lock_prefix", "push_budget", "tracker", *GITHUB_KEYS)
SCOPE_KEYS = ("labels", "exclude_labels", "min_priority", "issue")


DEFAULT_HEARTBEAT_SECONDS = 300.0
REMOTE_HEARTBEAT_SECONDS = 60.0


def default_heartbeat(options: dict[str, Any]) -> float:
    """Claims are refreshed every 5 minutes; in remote mode every minute (a beat re-points the
    runner's own lock ref, not the branch, and is what tells a reaper the runner is alive)."""
    if options["sync"] == "git" and options["tracker"] == "jit":
        return REMOTE_HEARTBEAT_SECONDS
    return DEFAULT_HEARTBEAT_SECONDS


def store_choice(options: dict[str, Any], **extra: Any) -> StoreChoice:
    """The `store_options` a command received, as a StoreChoice."""
    return StoreChoice(**{key: options[key] for key in STORE_KEYS}, **extra)


def jit_roots(jit_dirs: tuple[Path, ...]) -> tuple[Path, ...]:
    """`--jit-dir`s, else `$JIT_DATA_DIR` (relative to the working directory, as jit reads it), else .jit."""
    return jit_dirs or (Path(os.environ.get("JIT_DATA_DIR") or ".jit"),)


def run_reference(env: Mapping[str, str] = os.environ) -> str:
    """Where this claim came from: the workflow run URL, or host:pid."""
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        url = f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
        attempt = env.get("GITHUB_RUN_ATTEMPT")
        return f"{url}/attempts/{attempt}" if attempt else url
    return f"{os.uname().nodename}:{os.getpid()}"


def current_branch(git: Git, env: Mapping[str, str] = os.environ) -> str:
    """The branch being run: `GITHUB_REF_NAME` for a branch ref, else the checked-out branch."""
    if env.get("GITHUB_REF", "").startswith("refs/heads/") and env.get("GITHUB_REF_NAME"):
        return env["GITHUB_REF_NAME"]
    branch = git.run("symbolic-ref", "--short", "-q", "HEAD", check=False).stdout.decode().strip()
    if not branch:
        raise UsageError("--state-branch: HEAD is detached and GITHUB_REF is not a branch; name the branch")
    return branch


def parse_author(author: str) -> dict[str, str]:
    """`Name <email>` → the RemoteSettings fields."""
    name, _, rest = author.partition("<")
    if not rest.endswith(">") or not name.strip():
        raise UsageError(f"--commit-author: {author!r} is not 'Name <email>'")
    return {"author_name": name.strip(), "author_email": rest[:-1].strip()}


@contextmanager
def open_tracker(choice: StoreChoice) -> Iterator[Tracker]:
    """One tracker for every `--jit-dir` (a `MultiTracker` over several), closed afterwards."""
    if choice.tracker == "github":
        with _github_tracker(choice) as tracker:
            yield tracker
        return
    with ExitStack() as stack:
        trackers = [
            JitStore.open(root) if choice.sync == "none" else stack.enter_context(_remote_tracker(choice, root))
            for root in jit_roots(choice.jit_dir)
        ]
        yield trackers[0] if len(trackers) == 1 else MultiTracker(trackers)


@contextmanager
def _remote_tracker(choice: StoreChoice, root: Path) -> Iterator[RemoteJitTracker]:
    """The store at `root`, as the state branch of its repository's remote has it."""
    from jit_dispatch.trackers.remote.tracker import (  # not imported on the local hot path
        RemoteJitTracker,
        RemoteSettings,
    )

    anchor = next((p for p in [root, *root.absolute().parents] if p.is_dir()), Path.cwd())
    git = Git(anchor)
    try:
        top = Path(git.out("rev-parse", "--show-toplevel"))
    except GitError:
        raise UsageError(f"--sync git: {root} is not inside a git repository") from None
    try:
        jit_path = root.resolve().relative_to(top.resolve()).as_posix()
    except ValueError:
        raise UsageError(f"--jit-dir: {root} is outside the repository {top}") from None
    settings = RemoteSettings(
        branch=choice.state_branch or current_branch(git),
        jit_path=jit_path,
        remote=choice.remote,
        lock_prefix=choice.lock_prefix,
        skip_ci=choice.skip_ci,
        heartbeat_seconds=choice.heartbeat,
        push_budget=choice.push_budget,
        **(parse_author(choice.author) if choice.author else {}),
    )
    with tempfile.TemporaryDirectory(prefix="jit-dispatch-", dir=os.environ.get("RUNNER_TEMP") or None) as scratch:
        tracker = RemoteJitTracker(Git(top), settings, Path(scratch))
        try:
            yield tracker
        finally:
            tracker.close()


@contextmanager
def _github_tracker(choice: StoreChoice) -> Iterator[Tracker]:
    """GitHub Issues; PyGithub is imported here, never on the jit path."""
    from jit_dispatch.report import actions
    from jit_dispatch.trackers.github.rules import DEFAULT_PRIORITY_LABELS, GitHubSettings, check_repo

    if not choice.github_token:
        raise UsageError("--github-token: missing (set GITHUB_TOKEN to a token with `issues: write`)")
    if actions.in_actions():  # the runner hides it from the log from here on
        for line in choice.github_token.splitlines():
            actions.print_line(sys.stderr, f"::add-mask::{line}")
    # The Action's token is the dispatcher's, not the command's (which works on untrusted issue text).
    os.environ.pop("JIT_DISPATCH_GITHUB_TOKEN", None)
    try:
        repo = check_repo(choice.github_repo or "")
    except ValueError as exc:
        raise UsageError(f"--github-repo: {exc} (default: $GITHUB_REPOSITORY)") from None
    try:
        from jit_dispatch.trackers.github.tracker import GitHubTracker
    except ImportError as exc:
        if exc.name not in ("github", "requests", "urllib3"):
            raise
        raise UsageError("--tracker github needs PyGithub: pip install 'jit-dispatch[github]'") from None
    settings = GitHubSettings(
        repo, choice.github_ready_label, choice.include_assigned, choice.priority_labels or DEFAULT_PRIORITY_LABELS
    )
    tracker = GitHubTracker(settings, choice.github_token, choice.github_api_url or "https://api.github.com")
    try:
        yield tracker
    finally:
        tracker.close()


def build_filters(
    tracker: Tracker, labels: tuple[str, ...], exclude: tuple[str, ...], min_priority: str | None, issue: str | None
) -> Filters:
    issue_id = None
    if issue:
        try:
            issue_id = tracker.resolve_issue_id(issue)
        except ValueError as exc:
            raise UsageError(f"--issue: {exc}") from None
    return Filters(tuple(labels), tuple(exclude), min_priority, issue_id)
