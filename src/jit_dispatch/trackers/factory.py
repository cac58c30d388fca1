"""From CLI options to a tracker: the local `.jit/`, or the state branch of a git remote."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from jit_dispatch.context import GitHubContext
from jit_dispatch.domain.issue import LOCK_PREFIX
from jit_dispatch.errors import UsageError
from jit_dispatch.process import credentials
from jit_dispatch.trackers.base import Tracker
from jit_dispatch.trackers.jit.leases import lease_ttl
from jit_dispatch.trackers.jit.store import JitStore

if TYPE_CHECKING:
    from jit_dispatch.trackers.remote.git import Git
    from jit_dispatch.trackers.remote.tracker import RemoteJitTracker


@dataclass(frozen=True)
class StoreChoice:
    """Which tracker to open and how (the store options of the command line)."""

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
    github_review_label: str = "in-review"  # delivered, waiting for the merge (docs/delivery.md#github)
    include_assigned: bool = False
    priority_labels: tuple[tuple[str, str], ...] | None = None
    github_lock: str = "refs"  # or "comments": the marker protocol alone (read-after-write consistent lists only)
    trusted_actors: tuple[str, ...] = ()
    pass_token: bool = False  # leave the token in the command's environment
    pass_git_credentials: bool = False  # leave the workspace's persisted git credential while the command runs
    heartbeat: float | None = None  # announced in claim locks (GitHub, remote mode): the reaper watches for two
    push_budget: float = 180.0  # remote mode: how long to keep retrying a refused or failed push
    wait_for_fold: bool = False  # remote mode: a settle returns once its result is on the branch
    read_only: bool = False  # ready/status: no need to prove `contents: write`


ACTIONS_BOT = "github-actions[bot]"  # who the workflow's GITHUB_TOKEN comments as


def jit_roots(jit_dirs: tuple[Path, ...]) -> tuple[Path, ...]:
    """`--jit-dir`s, else `$JIT_DATA_DIR` (relative to the working directory, as jit reads it), else .jit."""
    return jit_dirs or (Path(os.environ.get("JIT_DATA_DIR") or ".jit"),)


def guard_token(given: str, pass_token: bool) -> str:
    """The token, a known secret from here on (masked in Actions and scrubbed in every form a tool
    prints, docs/hardening.md#credentials) and (unless `pass_token`) gone from the environment the
    command inherits: it is the dispatcher's, not the command's (untrusted issue text)."""
    credentials.register(given)
    token = given.strip()
    if not pass_token and len(token) >= 8:
        for key in [k for k, v in os.environ.items() if token in v]:  # GITHUB_TOKEN, GH_TOKEN, a URL with it
            del os.environ[key]
    return token


def current_branch(git: Git, context: GitHubContext) -> str:
    """The branch being run: `GITHUB_REF_NAME` for a branch ref, else the checked-out branch."""
    if context.branch:
        return context.branch
    branch = git.run("symbolic-ref", "--short", "-q", "HEAD", check=False).stdout.decode().strip()
    if not branch:
        raise UsageError("--state-branch: HEAD is detached and GITHUB_REF is not a branch; name the branch")
    return branch


def _checked_out(git: Git, context: GitHubContext) -> str | None:
    """The branch being run, None when HEAD is detached and Actions names none."""
    try:
        return current_branch(git, context)
    except UsageError:
        return None


def _workspace_branch(git: Git, context: GitHubContext, *, record: bool) -> str:
    """The checked-out branch as the state branch, refused when this checkout dispatched from
    another one before: a command that left the workspace on its own branch must not make the next
    run read and fold into that branch (the first branch used is remembered in the git directory)."""
    branch = current_branch(git, context)
    if context.branch:
        return branch
    remembered = Path(git.out("rev-parse", "--path-format=absolute", "--git-dir")) / "jit-dispatch-state-branch"
    before = remembered.read_text().strip() if remembered.is_file() else ""
    if before and before != branch:
        raise UsageError(
            f"--state-branch: this checkout dispatched from '{before}' and is now on '{branch}' (did a command "
            f"switch branches?): run 'git checkout {before}', or pass --state-branch"
        )
    if not before and record:
        remembered.write_text(f"{branch}\n")
    return branch


def person_author(git: Git, context: GitHubContext) -> str | None:
    """Outside Actions, the person running the command (`git config user.name/email`) authors its
    commits; in Actions (or without both set) the bot default stays."""
    if context.in_actions:
        return None
    name = git.run("config", "user.name", check=False).stdout.decode("utf-8", errors="replace").strip()
    email = git.run("config", "user.email", check=False).stdout.decode("utf-8", errors="replace").strip()
    return f"{name} <{email}>" if name and email and "<" not in name and ">" not in email else None


def remote_mode_evidence(root: Path) -> str | None:
    """The newest state commit a remote-mode runner made to this store (`jit-dispatch: …`), as
    `sha subject`, in the checked-out history: evidence that the store is shared through the
    remote, so acting on the working copy alone would be silently wrong. None: no such commit."""
    from jit_dispatch.trackers.remote.git import Git, GitError

    anchor = next((p for p in [root, *root.absolute().parents] if p.is_dir()), Path.cwd())
    try:
        proc = Git(anchor, timeout=10).run(
            "log", "-1", "--format=%h %s", "--grep=^jit-dispatch: ", "HEAD", "--", str(root.absolute()), check=False
        )
    except GitError:
        return None
    line = proc.stdout.decode("utf-8", errors="replace").strip() if proc.returncode == 0 else ""
    return line or None


def parse_author(author: str) -> dict[str, str]:
    """`Name <email>` → the RemoteSettings fields."""
    name, _, rest = author.partition("<")
    if not rest.endswith(">") or not name.strip():
        raise UsageError(f"--commit-author: {author!r} is not 'Name <email>'")
    return {"author_name": name.strip(), "author_email": rest[:-1].strip()}


def _learn_credentials() -> None:
    """Every token this run could leak becomes a known secret (masked, scrubbed); credentials a killed
    run moved out of the workspace's git config are put back first (docs/hardening.md#credentials)."""
    credentials.register_environment()
    for note in credentials.restore_left_behind(Path.cwd()):
        print(f"jit-dispatch: warning: {note}", file=sys.stderr, flush=True)
    credentials.persisted(Path.cwd())


@contextmanager
def open_tracker(choice: StoreChoice, context: GitHubContext) -> Iterator[Tracker]:
    """One tracker for every `--jit-dir` (a `MultiTracker` over several), closed afterwards."""
    _learn_credentials()
    if choice.tracker == "github":
        with _github_tracker(choice, context) as tracker:
            yield tracker
        return
    with ExitStack() as stack:
        trackers = [
            _local_store(root, choice)
            if choice.sync == "none"
            else stack.enter_context(_remote_tracker(choice, root, context))
            for root in jit_roots(choice.jit_dir)
        ]
        if len(trackers) == 1:
            yield trackers[0]
            return
        from jit_dispatch.trackers.multi import MultiTracker  # several stores: not the common case

        yield MultiTracker(trackers)


def _local_store(root: Path, choice: StoreChoice) -> JitStore:
    """The store, its jit leases lasting two heartbeat intervals (docs/jit-format.md#leases)."""
    store = JitStore.open(root)
    store.lease_ttl = lease_ttl(choice.heartbeat)
    return store


@contextmanager
def _remote_tracker(choice: StoreChoice, root: Path, context: GitHubContext) -> Iterator[RemoteJitTracker]:
    """The store at `root`, as the state branch of its repository's remote has it."""
    import tempfile

    from jit_dispatch.trackers.remote.git import Git, GitError  # not imported on the local hot path
    from jit_dispatch.trackers.remote.tracker import RemoteJitTracker, RemoteSettings

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
    author = choice.author or person_author(git, context)
    settings = RemoteSettings(
        branch=choice.state_branch or _workspace_branch(git, context, record=not choice.read_only),
        jit_path=jit_path,
        remote=choice.remote,
        lock_prefix=choice.lock_prefix,
        skip_ci=choice.skip_ci,
        heartbeat_seconds=choice.heartbeat,
        push_budget=choice.push_budget,
        wait_for_fold=choice.wait_for_fold,
        state_elsewhere=bool(choice.state_branch) and choice.state_branch != _checked_out(git, context),
        **(parse_author(author) if author else {}),
    )
    if choice.state_branch and not choice.read_only:  # a branch of its own: started on first use
        from jit_dispatch.trackers.remote.statebranch import start_if_missing

        if (started := start_if_missing(Git(top), settings)) is not None:
            print(started, file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="jit-dispatch-", dir=context.runner_temp) as scratch:
        tracker = RemoteJitTracker(Git(top), settings, Path(scratch))
        try:
            yield tracker
        finally:
            tracker.close()


@contextmanager
def _github_tracker(choice: StoreChoice, context: GitHubContext) -> Iterator[Tracker]:
    """GitHub Issues; PyGithub is imported here, never on the jit path."""
    from jit_dispatch.trackers.github.records import check_lock_prefix
    from jit_dispatch.trackers.github.rules import DEFAULT_PRIORITY_LABELS, GitHubSettings, check_repo

    if not choice.github_token:
        raise UsageError("--github-token: missing (set GITHUB_TOKEN to a token with `issues: write`)")
    guard_token(choice.github_token, choice.pass_token)
    try:
        repo = check_repo(choice.github_repo or "")
    except ValueError as exc:
        raise UsageError(f"--github-repo: {exc} (default: $GITHUB_REPOSITORY)") from None
    prefix = choice.lock_prefix or LOCK_PREFIX
    try:
        if choice.github_lock == "refs":
            check_lock_prefix(prefix)
    except ValueError as exc:
        raise UsageError(f"--lock-prefix: {exc}") from None
    try:
        from jit_dispatch.trackers.github.reflock import RefLockedTracker
        from jit_dispatch.trackers.github.tracker import GitHubTracker
    except ImportError as exc:
        if exc.name not in ("github", "requests", "urllib3"):
            raise
        raise UsageError("--tracker github needs PyGithub: pip install 'jit-dispatch[github]'") from None
    settings = GitHubSettings(
        repo,
        choice.github_ready_label,
        choice.include_assigned,
        choice.priority_labels or DEFAULT_PRIORITY_LABELS,
        choice.github_lock,
        prefix,
        tuple(choice.trusted_actors),
        choice.github_review_label,
    )
    api_url = choice.github_api_url or "https://api.github.com"
    identity = ACTIONS_BOT if context.in_actions else None  # when GET /user cannot say (an installation token)
    tracker: GitHubTracker
    if choice.github_lock == "comments":
        tracker = GitHubTracker(settings, choice.github_token, api_url, identity=identity)
    else:
        heartbeat = choice.heartbeat or 0.0
        tracker = RefLockedTracker(
            settings, choice.github_token, api_url, identity=identity, heartbeat=heartbeat, check=not choice.read_only
        )
    try:
        with tracker.api.doing(f"talk to GitHub about {repo}"):  # any failure a caller let through: one line
            yield tracker
    finally:
        tracker.close()
