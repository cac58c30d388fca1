"""Noticing merged deliveries (docs/delivery.md#done-when-it-merges): one `git log` per base branch,
since the oldest waiting delivery, looking for `Jit-Issue:` trailers. A merge commit, a squash, a
rebase and a merge by hand all leave the trailer on the base, with or without any forge's API.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jit_dispatch.domain.delivery import LOG_FORMAT, Delivery, trailer_ids
from jit_dispatch.domain.issue import parse_timestamp
from jit_dispatch.domain.values import Outcome
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.base import Tracker

if TYPE_CHECKING:
    from jit_dispatch.delivery.pulls import PullRequests
    from jit_dispatch.engine.dispatch import Request
    from jit_dispatch.trackers.remote.git import Git

# Our commit is made before `delivered_at` is taken, and a rebase keeps its committer date only
# when it fast-forwards: look back this far before the oldest delivery (the cost is a longer log).
SLACK = timedelta(days=1)
# Where each base is fetched to; kept between runs (the next fetch only brings what is new).
_FETCHED = "refs/jit-dispatch/merge-watch/"


@dataclass
class Noticed:
    """What one look for merges found: the issues settled, each as a line for the report (`done`,
    released, returned), and what went wrong on the way."""

    settled: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        return self.settled + self.problems


def notice_merges(
    tracker: Tracker,
    workdir: Path | None = None,
    remote: str = "origin",
    *,
    pulls: PullRequests | None = None,
    limits: tuple[int, int] = (3, 3),
) -> Noticed:
    """Finish every waiting issue whose delivery reached its base branch (as the remote has it).

    With `pulls` (a token), pull requests are asked too: merged finishes the issue, closed unmerged
    releases it, changes requested return it; `limits`: (max attempts, max review rounds).
    """
    noticed = Noticed()
    waiting = tracker.awaiting_merge()
    if not waiting:
        return noticed
    if pulls is not None:
        waiting = _ask_pulls(tracker, pulls, waiting, limits, noticed)
    from jit_dispatch.trackers.remote.git import Git, GitError  # only when an issue waits: `once` stays light

    git = Git(workdir or Path.cwd())
    by_base: dict[str, list[tuple[str, Delivery]]] = defaultdict(list)
    for issue_id, delivery in waiting:
        by_base[delivery.base].append((issue_id, delivery))
    for base, items in sorted(by_base.items()):
        try:
            merged = _merged_into(git, remote, base, items)
        except GitError as exc:
            noticed.problems.append(f"could not look for merges into {base}: {exc}")
            continue
        for issue_id, delivery in items:
            sha = merged.get(issue_id)
            if sha is None:
                continue
            _finish(tracker, issue_id, f"{delivery.branch} merged into {base} ({sha[:12]})", noticed)
    return noticed


def notice_merges_for(tracker: Tracker, request: Request) -> Noticed:
    """Finish the deliveries merged since (docs/delivery.md#done-when-it-merges), as `request` delivers."""
    delivery = request.delivery
    if delivery is None:
        return notice_merges(tracker, request.workdir)
    limits = (request.max_attempts, delivery.max_review_rounds)
    return notice_merges(tracker, request.workdir, delivery.remote, pulls=delivery.pulls, limits=limits)


def _ask_pulls(
    tracker: Tracker,
    pulls: PullRequests,
    waiting: list[tuple[str, Delivery]],
    limits: tuple[int, int],
    noticed: Noticed,
) -> list[tuple[str, Delivery]]:
    """Settle what the pull requests say; the issues left for the trailer search."""
    numbered = {d.pull_number: (i, d) for i, d in waiting if d.pull_number is not None}
    if not numbered:
        return waiting
    try:
        states = pulls.poll(sorted(numbered))
        left = []
        for issue_id, delivery in waiting:
            pull = states.get(delivery.pull_number) if delivery.pull_number is not None else None
            if pull is None or (
                pull.state == "open" and not _returned(tracker, pulls, issue_id, delivery, limits, noticed)
            ):
                left.append((issue_id, delivery))
            elif pull.merged and pull.base != delivery.base:  # retargeted: not where the dependents look
                noticed.problems.append(
                    f"{issue_id[:8]}: pull request #{pull.number} was merged into {pull.base}, not {delivery.base}; "
                    f"still waiting for the work on {delivery.base}"
                )
                left.append((issue_id, delivery))
            elif pull.merged:
                _finish(tracker, issue_id, f"pull request #{pull.number} merged into {pull.base}", noticed)
            elif pull.state == "closed":
                reason = f"pull request #{pull.number} closed without merging"
                settled = tracker.release_unmerged(issue_id, reason, limits[0])
                noticed.settled.append(f"{issue_id[:8]} {settled.outcome}: {reason}")
        return left
    except TrackerError as exc:
        noticed.problems.append(f"could not read the pull requests: {exc}")
        return waiting


def _returned(
    tracker: Tracker, pulls: PullRequests, issue_id: str, delivery: Delivery, limits: tuple[int, int], noticed: Noticed
) -> bool:
    """Changes requested since the delivery: the issue goes back to ready (True)."""
    assert delivery.pull_number is not None
    feedback = pulls.changes_requested(delivery.pull_number, _review_since(delivery.delivered_at))
    if feedback is None:
        return False
    settled = tracker.return_for_changes(issue_id, feedback.reason, limits[1])
    noticed.settled.append(f"{issue_id[:8]} {settled.outcome}: {feedback.reason}")
    return True


def _review_since(delivered_at: str) -> str | None:
    """Reviews count from the second before the delivery: GitHub stamps them in whole seconds."""
    try:
        moment = parse_timestamp(delivered_at).replace(microsecond=0) - timedelta(seconds=1)
    except ValueError:
        return None
    return moment.isoformat().replace("+00:00", "Z")


def _finish(tracker: Tracker, issue_id: str, note: str, noticed: Noticed) -> None:
    try:
        settled = tracker.finish_merged(issue_id, note)
    except TrackerError as exc:
        noticed.problems.append(f"{issue_id[:8]}: {note}, but finishing it failed: {exc}")
        return
    if settled.outcome != Outcome.LOST:
        promoted = f"; unblocked {', '.join(i[:8] for i in settled.promoted)}" if settled.promoted else ""
        noticed.settled.append(f"{issue_id[:8]} {settled.outcome}: {note}{promoted}")
    if settled.error:
        noticed.problems.append(settled.error)


def _merged_into(git: Git, remote: str, base: str, items: list[tuple[str, Delivery]]) -> dict[str, str]:
    """{issue id: the newest commit naming it} on `base` since the oldest of the deliveries, for the
    issues whose delivered work that commit brought (see `_brings_the_work`)."""
    from jit_dispatch.trackers.remote.git import GitError, last_line

    stamps = []
    for _, delivery in items:
        try:
            stamps.append(parse_timestamp(delivery.delivered_at))
        except ValueError:
            continue
    since = (min(stamps) - SLACK).isoformat() if stamps else None
    ref = _fetched(git, remote, base, since)
    memo = _Memo(git, base, ref)
    if memo.unchanged({issue_id for issue_id, _ in items}):
        return {}  # the base has not moved since each of these was looked for: nothing can have merged
    if since is None:
        found = trailer_ids(git.out("log", f"--format={LOG_FORMAT}", ref))
        memo.save({issue_id for issue_id, _ in items} - set(found))
        return found
    # `--since` stops the walk at the first commit older than `since`: one commit from a machine with
    # a wrong clock on top of the merge would hide it for ever. `--since-as-filter` (git 2.39) walks on.
    proc = git.run("log", f"--since-as-filter={since}", f"--format={LOG_FORMAT}", ref, check=False)
    if proc.returncode != 0 and b"since-as-filter" in proc.stderr:
        proc = git.run("log", f"--since={since}", f"--format={LOG_FORMAT}", ref)
    elif proc.returncode != 0:
        raise GitError(f"git log failed: {last_line(proc)}")
    found = trailer_ids(proc.stdout.decode("utf-8", errors="replace"))
    merged = {
        issue_id: found[issue_id]
        for issue_id, delivery in items
        if issue_id in found and _brings_the_work(git, remote, found[issue_id], delivery, ref)
    }
    memo.save({issue_id for issue_id, _ in items} - set(merged))  # a merged one must be looked at again
    return merged


class _Memo:
    """What the last look at `base` established: at which tip of the fetched base which waiting issues
    had no merge. Kept in the git directory (`jit-dispatch-merge-watch.json`), so an idle `once`
    whose base has not moved skips the `git log`. Best effort: no memo, a full look."""

    def __init__(self, git: Git, base: str, ref: str) -> None:
        dot = git.repo / ".git"
        self.path = dot / "jit-dispatch-merge-watch.json" if dot.is_dir() else None
        self.base = base
        self.tip = _ref_value(git, dot, ref) if ref.startswith(_FETCHED) and self.path else None

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_bytes()) if self.path else {}
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def unchanged(self, ids: set[str]) -> bool:
        entry = self._read().get(self.base)
        if self.tip is None or not isinstance(entry, dict) or entry.get("tip") != self.tip:
            return False
        return ids <= set(entry.get("unmerged") or ())

    def save(self, unmerged: set[str]) -> None:
        if self.path is None or self.tip is None:
            return
        data = self._read()
        data[self.base] = {"tip": self.tip, "unmerged": sorted(unmerged)}
        spare = self.path.with_name(f"{self.path.name}.{os.getpid()}")
        try:
            spare.write_text(json.dumps(data), encoding="utf-8")
            os.replace(spare, self.path)
        except OSError:
            spare.unlink(missing_ok=True)


def _ref_value(git: Git, dot: Path, ref: str) -> str | None:
    """The ref's commit: the loose file a fetch just wrote, read without a process; else `rev-parse`."""
    try:
        value = (dot / ref).read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        value = ""
    if len(value) in (40, 64):
        return value
    proc = git.run("rev-parse", "--verify", "--quiet", ref, check=False)
    return proc.stdout.decode().strip() or None if proc.returncode == 0 else None


def _brings_the_work(git: Git, remote: str, sha: str, delivery: Delivery, base: str) -> bool:
    """Whether the commit naming the issue is its delivered work reaching the base, not an older one
    (a reopened issue's earlier merge): a commit the delivered tip already contains counts only when
    that tip itself is on the base (a merge commit, a fast-forward). The tip is fetched from its work
    branch when the clone lacks it; without it (an older record, the branch deleted after its merge)
    the trailer alone decides."""
    head = delivery.head_sha
    if not head:
        return True
    if git.run("cat-file", "-e", f"{head}^{{commit}}", check=False).returncode != 0:
        ref = f"refs/heads/{delivery.branch}"
        git.run("fetch", "--no-tags", "--quiet", "--no-write-fetch-head", remote, ref, check=False)
    older = git.run("merge-base", "--is-ancestor", sha, head, check=False).returncode == 0
    return not older or git.run("merge-base", "--is-ancestor", head, base, check=False).returncode == 0


def _fetched(git: Git, remote: str, base: str, since: str | None) -> str:
    """The remote's `base` fetched under a private ref; the local branch when the remote cannot be read.

    In a shallow clone (actions/checkout's default depth 1) the history is deepened back to `since`:
    a merge one commit below the base's tip is otherwise outside the clone for ever."""
    from jit_dispatch.trackers.remote.git import GitError, redact

    fetched = _FETCHED + base
    deepen = []
    dot = git.repo / ".git"
    shallow = (dot / "shallow").exists() if dot.is_dir() else git.out("rev-parse", "--is-shallow-repository") == "true"
    if since and shallow:
        deepen = [f"--shallow-since={since}"]
    proc = git.run(
        "fetch", "--no-tags", "--quiet", "--no-write-fetch-head", *deepen, remote, f"+refs/heads/{base}:{fetched}",
        check=False,
    )  # fmt: skip
    if proc.returncode == 0:
        return fetched
    if git.run("rev-parse", "--verify", "--quiet", f"refs/heads/{base}", check=False).returncode == 0:
        return f"refs/heads/{base}"
    raise GitError(f"base branch {base} not found on '{redact(remote)}' nor locally")
