"""Noticing merged deliveries (docs/delivery.md#done-when-it-merges): one `git log` per base branch,
since the oldest waiting delivery, looking for `Jit-Issue:` trailers. A merge commit, a squash, a
rebase and a merge by hand all leave the trailer on the base, with or without any forge's API.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from jit_dispatch.domain.delivery import LOG_FORMAT, Delivery, trailer_ids
from jit_dispatch.domain.issue import parse_timestamp
from jit_dispatch.domain.values import Outcome
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.base import Tracker
from jit_dispatch.trackers.remote.git import Git, GitError, redact

# Our commit is made before `delivered_at` is taken, and a rebase keeps its committer date only
# when it fast-forwards: look back this far before the oldest delivery (the cost is a longer log).
SLACK = timedelta(days=1)
_FETCHED = "refs/jit-dispatch/merge-watch"


@dataclass
class Noticed:
    """What one look for merges found: the issues finished (with what they promoted), and notes."""

    finished: list[tuple[str, Outcome, tuple[str, ...]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def notice_merges(tracker: Tracker, workdir: Path | None = None, remote: str = "origin") -> Noticed:
    """Finish every waiting issue whose delivery reached its base branch (as the remote has it)."""
    noticed = Noticed()
    waiting = tracker.awaiting_merge()
    if not waiting:
        return noticed
    git = Git(workdir or Path.cwd())
    by_base: dict[str, list[tuple[str, Delivery]]] = defaultdict(list)
    for issue_id, delivery in waiting:
        by_base[delivery.base].append((issue_id, delivery))
    for base, items in sorted(by_base.items()):
        try:
            merged = _merged_into(git, remote, base, [delivery for _, delivery in items])
        except GitError as exc:
            noticed.notes.append(f"could not look for merges into {base}: {exc}")
            continue
        for issue_id, delivery in items:
            sha = merged.get(issue_id)
            if sha is None:
                continue
            note = f"{delivery.branch} merged into {base} ({sha[:12]})"
            try:
                settled = tracker.finish_merged(issue_id, note)
            except TrackerError as exc:
                noticed.notes.append(f"{issue_id[:8]}: {note}, but finishing it failed: {exc}")
                continue
            if settled.outcome != Outcome.LOST:
                noticed.finished.append((issue_id, settled.outcome, settled.promoted))
                noticed.notes.append(f"{issue_id[:8]} {settled.outcome}: {note}")
            if settled.error:
                noticed.notes.append(settled.error)
    return noticed


def _merged_into(git: Git, remote: str, base: str, deliveries: list[Delivery]) -> dict[str, str]:
    """{issue id: the newest commit naming it} on `base` since the oldest of `deliveries`."""
    stamps = []
    for delivery in deliveries:
        try:
            stamps.append(parse_timestamp(delivery.delivered_at))
        except ValueError:
            continue
    since = (min(stamps) - SLACK).isoformat() if stamps else None
    ref = _fetched(git, remote, base)
    args = ["log", f"--format={LOG_FORMAT}", ref]
    if since:
        args.insert(1, f"--since={since}")
    try:
        return trailer_ids(git.out(*args))
    finally:
        if ref == _FETCHED:
            git.run("update-ref", "-d", _FETCHED, check=False)


def _fetched(git: Git, remote: str, base: str) -> str:
    """The remote's `base` fetched under a private ref; the local branch when the remote cannot be read."""
    proc = git.run(
        "fetch", "--no-tags", "--quiet", "--no-write-fetch-head", remote, f"+refs/heads/{base}:{_FETCHED}", check=False
    )
    if proc.returncode == 0:
        return _FETCHED
    if git.run("rev-parse", "--verify", "--quiet", f"refs/heads/{base}", check=False).returncode == 0:
        return f"refs/heads/{base}"
    raise GitError(f"base branch {base} not found on '{redact(remote)}' nor locally")
