"""A depth-1 checkout (what actions/checkout makes) stays usable for the agent after a dispatch:
the dispatcher fetches into a repository of its own, never writing the checkout's `.git/shallow`
(docs/remote-mode.md#shallow-clones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import GIT_IDENTITY, clean_env, git, make_remote
from jit_dispatch.trackers.jit.store import NewIssue
from remote_runs import assert_remote_store_valid, finish, start

AGENT = {
    # The agent's own work, pushed to the branch the dispatcher folds into (a few tries: races).
    "rebase": "git fetch -q origin && git rebase -q origin/main && git push -q origin HEAD:main",
    "merge": "git pull -q --no-rebase --no-edit origin main && git push -q origin HEAD:main",
}


def agent_command(how: str) -> str:
    work = 'echo "$JIT_ISSUE_ID" > "work-$JIT_ISSUE_ID.txt" && git add work-*.txt && git commit -qm "work"'
    return f"{work} && for i in 1 2 3 4 5 6; do {AGENT[how]} && exit 0; sleep 0.3; done; exit 1"


@pytest.mark.parametrize("how", ["rebase", "merge"])
def test_a_shallow_checkout_can_still_rebase_or_merge_after_the_branch_moved(tmp_path: Path, how: str) -> None:
    """Three depth-1 clones taken before anything ran; their runners go one after the other, so each
    dispatch reads a tip its clone lacks. Each agent commits, then fetches and rebases (or pulls
    with a merge) and pushes: all done, every piece of work on the branch, no clone's shallow
    boundary moved."""
    remote = make_remote(tmp_path, [NewIssue(f"task {n}") for n in range(3)])
    clones = [remote.clone(tmp_path / f"runner{n}") for n in range(3)]
    boundaries = [(clone / ".git" / "shallow").read_text() for clone in clones]
    env = clean_env(**GIT_IDENTITY)
    for n, clone in enumerate(clones):
        code, result, stderr = finish(start(clone, f"w{n}", agent_command(how), env=env), timeout=120)
        assert (code, result["outcome"]) == (0, "done"), (result, stderr)
    assert [(clone / ".git" / "shallow").read_text() for clone in clones] == boundaries
    files = git(remote.bare, "ls-tree", "--name-only", "main").split()
    assert sorted(f for f in files if f.startswith("work-")) == sorted(f"work-{i}.txt" for i in remote.ids)
    assert {remote.issue(i)["state"] for i in remote.ids} == {"done"}
    assert_remote_store_valid(remote)
    for clone in clones:  # and afterwards, an ordinary pull still works in each
        git(clone, "pull", "-q", "--no-rebase", "--no-edit", "origin", "main")
