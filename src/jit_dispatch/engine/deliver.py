"""The delivery step of a run (docs/delivery.md): before the command, continue an earlier delivery's
work branch and hand the command its feedback; after a successful command, put the work on the
work branch and push it, fenced by the claim.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jit_dispatch.delivery.workbranch import Author, DeliveryError, Start, WorkBranch, toplevel
from jit_dispatch.domain import transitions
from jit_dispatch.domain.delivery import (
    DEFAULT_BRANCH_TEMPLATE,
    Delivery,
    Feedback,
    branch_name,
    inert_line,
    names_issue,
    ref_format_problem,
)
from jit_dispatch.domain.issue import (
    CTX_ATTEMPTS,
    CTX_BASE,
    CTX_BRANCH,
    CTX_LAST_REASON,
    CTX_PULL_NUMBER,
    CTX_REVIEW_ROUNDS,
    Issue,
)
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.base import Tracker
from jit_dispatch.trackers.remote.git import Git, GitError, redact
from jit_dispatch.trackers.remote.plumbing import BOT_EMAIL, BOT_NAME

if TYPE_CHECKING:
    from jit_dispatch.delivery.pulls import PullRequests

FEEDBACK_VARIABLE = "JIT_DISPATCH_FEEDBACK_FILE"
DEFAULT_AUTHOR = f"{BOT_NAME} <{BOT_EMAIL}>"
GATE_TAIL_CHARS = 8000


@dataclass(frozen=True)
class DeliverySettings:
    """`--deliver` and its options, as the run asked for them."""

    mode: str  # branch | pull-request
    branch_template: str = DEFAULT_BRANCH_TEMPLATE
    author: str = DEFAULT_AUTHOR
    base: str | None = None  # default: the branch the run started on
    allow_empty: bool = False
    done_on: str = "merge"  # or "success": done at once, as without delivery
    max_review_rounds: int = 3
    remote: str = "origin"
    jit_dir: Path = Path(".jit")  # the store (never on a work branch)
    push_budget: float = 180.0
    # pull-request mode: the API (permissions checked before the claim), what to pass through, and
    # the body's renderer (the report layer's; `Any`: the engine's Result at delivery time)
    pulls: PullRequests | None = field(default=None, compare=False)
    draft: bool = False
    pr_labels: tuple[str, ...] = ()
    reviewers: tuple[str, ...] = ()
    describe: Callable[[Any], str] | None = field(default=None, compare=False)


class Delivering:
    """One issue's delivery within a run: `prepare` before the command, `deliver` after it."""

    def __init__(self, settings: DeliverySettings, issue: Issue, agent: str, workdir: Path | None) -> None:
        self.settings = settings
        self.issue = issue
        self.agent = agent
        self.workdir = workdir or Path.cwd()
        self.delivery: Delivery | None = None
        self.notes: list[str] = []
        self._start: Start | None = None
        self._work: WorkBranch | None = None
        self._base: str | None = None
        self._branch: str | None = None

    @property
    def hold(self) -> bool:
        """Whether a successful run waits for the merge instead of being `done`."""
        return self.delivery is not None and self.settings.done_on == "merge"

    def prepare(self, tracker: Tracker, env: dict[str, str], scratch: Path) -> str | None:
        """Record where the work starts (continuing the issue's work branch when it has one) and write the
        feedback file. A reason when the run cannot go on (the issue is then released with it)."""
        env[FEEDBACK_VARIABLE] = ""
        feedback = _feedback(tracker, self.issue)
        if feedback is not None and self.settings.pulls is not None:
            feedback = self._with_review(feedback)
        if feedback is not None:
            path = scratch / "feedback.json"
            path.write_text(feedback.to_json(), encoding="utf-8")
            env[FEEDBACK_VARIABLE] = str(path)
        try:
            git = toplevel(self.workdir)
            jit_path = _relative(self.settings.jit_dir, git.repo)
            self._work = WorkBranch(git, self.settings.remote, jit_path, Author.parse(self.settings.author))
            self._base = self.settings.base or self.issue.context.get(CTX_BASE) or _current_branch(git)
            earlier = self._earlier_branch(self._base)
            self._branch = earlier or branch_name(
                self.settings.branch_template,
                issue_id=self.issue.id, title=self.issue.title, priority=self.issue.priority, agent=self.agent,
            )  # fmt: skip
            start = self._work.continue_from(earlier) if earlier else None
            if earlier and start is None:
                self.notes.append(f"work branch {earlier} is gone from the remote; starting afresh")
            self._start = start or self._work.start(self._base)
        except (DeliveryError, GitError, ValueError) as exc:
            return f"cannot deliver: {exc}"
        return None

    def _earlier_branch(self, base: str) -> str | None:
        """The work branch of an earlier delivery, as the issue's context records it; never the base,
        a name git would refuse, nor one without the issue's id (the context is data: it must not aim
        the push elsewhere)."""
        branch = self.issue.context.get(CTX_BRANCH)
        if not branch:
            return None
        if branch == base or ref_format_problem(branch) is not None or not names_issue(branch, self.issue.id):
            self.notes.append(f"{CTX_BRANCH} {branch!r} is not a work branch; using a new one")
            return None
        return branch

    def _with_review(self, feedback: Feedback) -> Feedback:
        """The feedback with the review that asks for changes, when the pull request has one."""
        number = self.issue.context.get(CTX_PULL_NUMBER, "")
        if not number.isdigit() or self.settings.pulls is None:
            return feedback
        try:
            review = self.settings.pulls.changes_requested(int(number), None)
        except TrackerError as exc:
            self.notes.append(f"could not read the reviews of pull request #{number}: {exc}")
            return feedback
        if review is None:
            return feedback
        return replace(review, failed_gate=feedback.failed_gate, gate_output_tail=feedback.gate_output_tail)

    def deliver(self, tracker: Tracker, agent: str, attempt: int, result: Any = None) -> str | None:
        """Build the work branch and push it (only while the claim is ours). None when delivered
        (`self.delivery`), else the reason to release the issue with."""
        if self._work is None or self._start is None or self._base is None or self._branch is None:
            return "cannot deliver: the work's start was not recorded"
        issue, branch = self.issue, self._branch
        body = f"Delivered by jit-dispatch for issue {issue.short_id} (attempt {attempt}, {agent})."
        try:
            tip = self._work.build(self._start, issue.id, issue.title, body, allow_empty=self.settings.allow_empty)
            if tip is None:
                return "no changes to deliver"
            fence = functools.partial(tracker.heartbeat, issue.id, agent)
            self._work.push(branch, tip, issue.id, fence, self.settings.push_budget, base=self._base)
        except (DeliveryError, GitError) as exc:
            return str(exc)
        self.delivery = Delivery(branch, self._base, transitions.format_timestamp(), tip)
        if self.settings.mode == "pull-request":
            return self._propose(result)
        return None

    def _propose(self, result: Any) -> str | None:
        """Open the pull request for the pushed branch, or update the open one."""
        pulls, delivery = self.settings.pulls, self.delivery
        if pulls is None or delivery is None:
            return "cannot open a pull request: no GitHub repository and token"
        title = f"[{self.issue.short_id}] {inert_line(self.issue.title, 200)}"
        if result is not None:
            result.delivery = delivery
        body = self.settings.describe(result) if self.settings.describe else f"Jit-Issue: {self.issue.id}\n"
        try:
            pull = pulls.open_or_update(
                delivery.branch, delivery.base, title, body,
                draft=self.settings.draft, labels=self.settings.pr_labels, reviewers=self.settings.reviewers,
            )  # fmt: skip
        except TrackerError as exc:
            return f"{delivery.branch} pushed, but the pull request failed: {exc}"
        self.notes.extend(pulls.warnings)
        self.delivery = replace(delivery, pull_request=pull.url, pull_number=pull.number)
        return None


def preflight(settings: DeliverySettings, workdir: Path | None) -> str | None:
    """Why nothing could be delivered from `workdir` at all (checked before a claim), or None."""
    try:
        git = toplevel(workdir or Path.cwd())
    except DeliveryError as exc:
        return str(exc)
    if git.run("remote", "get-url", settings.remote, check=False).returncode != 0 and "/" not in settings.remote:
        return f"remote '{settings.remote}' is not configured in {git.repo} (see --remote)"
    if settings.base is not None and not _branch_exists(git, settings.remote, settings.base):
        # the issue would wait for ever for a merge into a branch nobody can merge into
        return f"base branch '{settings.base}' (--base) is neither on '{redact(settings.remote)}' nor local"
    return None


def _branch_exists(git: Git, remote: str, branch: str) -> bool:
    """On the remote, or a local branch (as the merge watch reads it); true when the remote cannot be read."""
    ref = f"refs/heads/{branch}"
    if git.run("rev-parse", "--verify", "--quiet", ref, check=False).returncode == 0:
        return True
    listed = git.run("ls-remote", "--heads", remote, ref, check=False)
    return listed.returncode != 0 or bool(listed.stdout.strip())


def _relative(jit_dir: Path, top: Path) -> str:
    """The store's path inside the repository (`.jit` when it lies elsewhere)."""
    where = jit_dir if jit_dir.is_absolute() else Path.cwd() / jit_dir
    try:
        return where.resolve().relative_to(top.resolve()).as_posix()
    except ValueError:
        return ".jit"


def _current_branch(git: Git) -> str:
    """The branch checked out (the default base); in Actions a detached checkout names it in $GITHUB_REF_NAME."""
    try:
        return git.out("symbolic-ref", "--quiet", "--short", "HEAD")
    except GitError:
        pass
    named = os.environ.get("GITHUB_BASE_REF") or os.environ.get("GITHUB_REF_NAME")
    if named:
        return named
    raise DeliveryError("HEAD is detached and no base branch is known: pass --base")


def _feedback(tracker: Tracker, issue: Issue) -> Feedback | None:
    """Why the issue is back, when it is: the last reason, and the newest failed gate run's output."""
    context: Mapping[str, str] = issue.context
    reason = context.get(CTX_LAST_REASON)
    if not reason or (context.get(CTX_ATTEMPTS, "0") == "0" and CTX_REVIEW_ROUNDS not in context):
        return None
    failed: dict[str, object] | None = None
    for key in issue.gates_required:
        for record in tracker.gate_history(issue.id, key):
            if record.get("status") == "failed" and str(record.get("started_at", "")) >= str(
                (failed or {}).get("started_at", "")
            ):
                failed = record
    if failed is None:
        return Feedback(reason)
    output = str(failed.get("stdout", "")) + str(failed.get("stderr", ""))
    return Feedback(reason, failed_gate=str(failed.get("gate_key")), gate_output_tail=output[-GATE_TAIL_CHARS:])
