"""A state branch of its own, started on first use (docs/delivery.md#protected-base-branches).

With delivery, only the state needs pushing outside work branches, and most teams protect their
base branch: `--state-branch jit-state` keeps the state apart. When that branch does not exist on
the remote yet, it is created from the checked-out commit's `.jit/`: one root commit holding only
the store, pushed only if the branch is still absent (another runner may create it first).
"""

from __future__ import annotations

import os
from pathlib import Path

from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.remote.git import Git, GitError, last_line, redact
from jit_dispatch.trackers.remote.plumbing import RemoteSettings


def start_if_missing(git: Git, settings: RemoteSettings) -> str | None:
    """Create the state branch on the remote from HEAD's store when it has none; the line announcing
    it, or None when the branch exists (or the remote cannot be read: the listing says why later)."""
    ref = f"refs/heads/{settings.branch}"
    listed = git.run("ls-remote", "--heads", settings.remote, ref, check=False)
    if listed.returncode != 0 or listed.stdout.strip():
        return None
    source = f"HEAD:{settings.jit_path}"
    store = git.run("rev-parse", "--verify", "--quiet", source, check=False)
    if store.returncode != 0:
        raise TrackerError(
            f"--state-branch: '{settings.branch}' is not on remote '{redact(settings.remote)}', and HEAD has no "
            f"{settings.jit_path}/ to start it from"
        )
    index = Path(git.out("rev-parse", "--absolute-git-dir")) / f"jit-dispatch-state-index-{os.getpid()}"
    env = {
        "GIT_INDEX_FILE": str(index),
        "GIT_AUTHOR_NAME": settings.author_name,
        "GIT_AUTHOR_EMAIL": settings.author_email,
        "GIT_COMMITTER_NAME": settings.author_name,
        "GIT_COMMITTER_EMAIL": settings.author_email,
    }
    try:
        git.run("read-tree", "--empty", env=env)
        git.run("read-tree", f"--prefix={settings.jit_path}/", store.stdout.decode().strip(), env=env)
        tree = git.out("write-tree", env=env)
    finally:
        index.unlink(missing_ok=True)
    started_from = git.run("rev-parse", "--abbrev-ref", "HEAD", check=False).stdout.decode().strip() or "HEAD"
    suffix = " [skip ci]" if settings.skip_ci else ""
    message = f"jit-dispatch: start the state branch from {started_from}'s {settings.jit_path}/{suffix}\n"
    commit = git.out("commit-tree", tree, stdin=message.encode(), env=env)
    lease = f"--force-with-lease={ref}:"  # only while it does not exist
    pushed = git.run(
        "push", "--porcelain", "--quiet", "--no-verify", lease, settings.remote, f"{commit}:{ref}", check=False
    )
    if pushed.returncode != 0:
        text = (pushed.stdout + pushed.stderr).decode("utf-8", errors="replace")
        if "stale info" in text or "already exists" in text or "fetch first" in text:
            return None  # another runner started it first: theirs is as good
        raise GitError(f"--state-branch: could not create '{settings.branch}': {last_line(pushed)}")
    return (
        f"jit-dispatch: created state branch '{settings.branch}' on '{redact(settings.remote)}' from "
        f"{started_from}'s {settings.jit_path}/ (commit {commit[:12]})"
    )
