"""Delivery with GitHub Issues as the tracker: real `once` processes against the GitHub fake on a
loopback server, real git with a bare remote behind it (the fake's merges are real ones there).

The two-issue chain: the first issue's agent writes a file, the delivery waits with `in-review`,
the dependent is not dispatched; the work is merged; the next `once` closes the first as
completed and dispatches the second, whose command sees the file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from github_fake import BOT, REPO, FakeGitHub
from github_server import FakeServer
from helpers import GIT_IDENTITY, clean_env, git
from jit_dispatch.trackers.github import rules

CHAIN_COMMAND = 'if [ "$JIT_ISSUE_TITLE" = first ]; then echo A > a.txt; else cat a.txt > b.txt; fi'
TOKEN = "ghs_delivery0123456789abcdef"
UNPACED = (
    "import jit_dispatch.trackers.github.api as a; a.THROTTLE = False; from jit_dispatch.cli.main import main; main()"
)
ME = frozenset({BOT["login"]})


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeGitHub(page_size=30)
    with FakeServer(fake, latency=(0.0, 0.02)) as running:
        yield running


@pytest.fixture
def origin(tmp_path: Path, server: FakeServer) -> Path:
    bare, seed = tmp_path / "origin.git", tmp_path / "seed"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(seed)], check=True)
    (seed / "README").write_text("widgets\n")
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "start")
    git(seed, "push", "-q", str(bare), "main")
    server.fake.git_remote = bare
    server.fake.add_issue(1, "first")
    server.fake.add_issue(2, "second", blocked_by=(1,))
    return bare


def once(server: FakeServer, cwd: Path, *args: str) -> dict:
    server.fake.actors[TOKEN] = BOT
    env = clean_env(
        GITHUB_TOKEN=TOKEN,
        GITHUB_REPOSITORY=REPO,
        JIT_DISPATCH_GITHUB_API_URL=server.url,
        JIT_DISPATCH_TRACKER="github",
        **GIT_IDENTITY,
    )
    argv = [sys.executable, "-c", UNPACED, "once", "--agent", "bot", "--command", CHAIN_COMMAND, "--json", *args]
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert TOKEN not in proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def fresh(origin: Path, tmp_path: Path, name: str) -> Path:
    """Every run in a fresh checkout of main, as a workflow run has it."""
    dest = tmp_path / name
    subprocess.run(["git", "clone", "-q", f"file://{origin}", str(dest)], check=True, capture_output=True)
    return dest


def kinds(fake: FakeGitHub, number: int) -> list[str]:
    return [m.kind for m in rules.parse_markers(fake.comments[number], ME)]


@pytest.mark.parametrize("lock", ["refs", "comments"])
def test_branch_delivery_chain_with_github_issues(server: FakeServer, origin: Path, tmp_path: Path, lock: str) -> None:
    fake = server.fake
    run = once(server, fresh(origin, tmp_path, "run1"), "--deliver", "branch", "--github-lock", lock)
    assert (run["outcome"], run["issue_id"]) == ("in-review", "#1"), run
    branch = run["branch"]
    assert branch == "jit/1-first", branch
    assert "a.txt" in git(origin, "ls-tree", "-r", "--name-only", branch).split()
    assert "Jit-Issue: #1" in git(origin, "log", "-1", "--format=%B", branch)
    assert fake.issues[1]["state"] == "open" and sorted(fake.labels(1)) == ["dispatch", "in-review"]
    assert kinds(fake, 1) == ["claim", "deliver"] and fake.refs == {}

    idle = once(server, fresh(origin, tmp_path, "run2"), "--deliver", "branch", "--github-lock", lock)
    assert idle["outcome"] == "idle", idle  # #2 is blocked by the open #1, #1 waits for its merge

    merger = fresh(origin, tmp_path, "merger")
    git(merger, "fetch", "-q", "origin", branch)
    git(merger, "merge", "-q", "--squash", "FETCH_HEAD")
    squashed = git(origin, "log", "--format=* %B", f"main..{branch}")
    git(merger, "commit", "-q", "-m", "first (squashed)", "-m", squashed)
    git(merger, "push", "-q", "origin", "main")

    run = once(server, fresh(origin, tmp_path, "run3"), "--deliver", "branch", "--github-lock", lock)
    assert (fake.issues[1]["state"], fake.issues[1]["state_reason"]) == ("closed", "completed")
    assert fake.labels(1) == ["dispatch"] and kinds(fake, 1) == ["claim", "deliver", "done"]
    assert (run["outcome"], run["issue_id"]) == ("in-review", "#2"), run
    assert git(origin, "show", f"{run['branch']}:b.txt") == "A\n"  # its command saw the merged a.txt
