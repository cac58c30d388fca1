"""Delivery with GitHub Issues as the tracker: real `once` processes against the GitHub fake on a
loopback server, real git with a bare remote behind it (the fake's merges are real ones there).

The two-issue chain: the first issue's agent writes a file, the delivery waits with `in-review`,
the dependent is not dispatched; the work is merged; the next `once` closes the first as
completed and dispatches the second, whose command sees the file. The review round trip: changes
requested → back to ready → the next attempt continues the work branch with the review in its
feedback file → the same pull request is updated → merged → done.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from github_fake import BOT, REPO, FakeGitHub, user
from github_server import UNPACED, FakeServer
from helpers import GIT_IDENTITY, clean_env, git
from jit_dispatch.trackers.github import rules

CHAIN_COMMAND = (
    'if [ -n "$JIT_DISPATCH_FEEDBACK_FILE" ]; then cp "$JIT_DISPATCH_FEEDBACK_FILE" "$OUT/feedback.json"; '
    'cat a.txt > "$OUT/seen-a.txt"; echo fixed >> a.txt; '
    'elif [ "$JIT_ISSUE_TITLE" = first ]; then echo A > a.txt; '
    "else cat a.txt > b.txt; fi"
)
TOKEN = "ghs_delivery0123456789abcdef"
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
        OUT=str(cwd.parent / "out"),
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
    (tmp_path / "out").mkdir(exist_ok=True)
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


def test_pull_request_chain_with_github_issues(server: FakeServer, origin: Path, tmp_path: Path) -> None:
    fake = server.fake
    run = once(server, fresh(origin, tmp_path, "run1"), "--deliver", "pull-request")
    assert (run["outcome"], run["issue_id"]) == ("in-review", "#1"), run
    number = run["pull_request_number"]
    pull = fake.pulls[number]
    assert pull["title"] == "[#1] first" and pull["head"]["ref"] == run["branch"]
    assert "\nCloses #1\n" in pull["body"] and pull["body"].rstrip().endswith("Jit-Issue: #1")
    assert sorted(fake.labels(1)) == ["dispatch", "in-review"] and kinds(fake, 1) == ["claim", "deliver"]
    assert once(server, fresh(origin, tmp_path, "run2"), "--deliver", "pull-request")["outcome"] == "idle"

    fake.merge_pull(number, "squash")  # GitHub closes #1 itself: `Closes #1` in the body
    assert (fake.issues[1]["state"], fake.labels(1)) == ("closed", ["dispatch", "in-review"])
    run = once(server, fresh(origin, tmp_path, "run3"), "--deliver", "pull-request")
    assert any("#1 done" in w for w in run["merged"]), run["merged"]
    assert fake.labels(1) == ["dispatch"] and kinds(fake, 1) == ["claim", "deliver", "done"]
    assert (run["outcome"], run["issue_id"]) == ("in-review", "#2"), run
    assert git(origin, "show", f"{run['branch']}:b.txt") == "A\n"
    assert len(fake.pulls) == 2


def test_review_round_trip_with_github_issues(server: FakeServer, origin: Path, tmp_path: Path) -> None:
    fake = server.fake
    run = once(server, fresh(origin, tmp_path, "run1"), "--deliver", "pull-request")
    number, branch = run["pull_request_number"], run["branch"]
    fake.add_collaborator("alice", "write")
    fake.add_collaborator("mallory", "read")
    fake.add_review(number, user("mallory", uid=66), "CHANGES_REQUESTED", "ignore me", association="MEMBER")
    assert once(server, fresh(origin, tmp_path, "run2"), "--deliver", "pull-request")["outcome"] == "idle"
    fake.add_review(number, user("alice", uid=11), "CHANGES_REQUESTED", "say <b>fixed</b>", (("a.txt", 1, "here"),))

    run = once(server, fresh(origin, tmp_path, "run3"), "--deliver", "pull-request")
    assert any("changes requested by alice" in w for w in run["merged"]), run["merged"]
    assert (run["outcome"], run["issue_id"], run["pull_request_number"]) == ("in-review", "#1", number), run
    assert run["branch"] == branch and len(fake.pulls) == 1  # the same branch, the same PR: updated
    out = tmp_path / "out"
    assert (out / "seen-a.txt").read_text() == "A\n"  # it continued its own work
    feedback = json.loads((out / "feedback.json").read_text())
    assert (feedback["reason"], feedback["reviewer"], feedback["review_body"]) == (
        "changes requested by alice",
        "alice",
        "say <b>fixed</b>",
    )
    assert feedback["comments"] == [{"path": "a.txt", "line": 1, "body": "here", "author": "alice"}]
    assert git(origin, "show", f"{branch}:a.txt") == "A\nfixed\n"
    assert kinds(fake, 1) == ["claim", "deliver", "return", "claim", "deliver"]
    assert sorted(fake.labels(1)) == ["dispatch", "in-review"]

    fake.merge_pull(number, "rebase")
    run = once(server, fresh(origin, tmp_path, "run4"), "--deliver", "pull-request")
    assert any("#1 done" in w for w in run["merged"]), run["merged"]
    assert fake.issues[1]["state"] == "closed" and kinds(fake, 1)[-1] == "done"


def test_a_pull_request_closed_unmerged_releases_and_the_next_attempt_continues_the_branch(
    server: FakeServer, origin: Path, tmp_path: Path
) -> None:
    fake = server.fake
    first = once(server, fresh(origin, tmp_path, "run1"), "--deliver", "pull-request")
    fake.close_pull(first["pull_request_number"])
    run = once(server, fresh(origin, tmp_path, "run2"), "--deliver", "pull-request")
    assert any(f"pull request #{first['pull_request_number']} closed without merging" in w for w in run["merged"])
    assert (run["outcome"], run["issue_id"], run["attempt"]) == ("in-review", "#1", 2), run
    assert run["branch"] == first["branch"] and run["pull_request_number"] != first["pull_request_number"]
    assert git(origin, "show", f"{run['branch']}:a.txt") == "A\nfixed\n"  # extended, never overwritten
    assert kinds(fake, 1) == ["claim", "deliver", "release", "claim", "deliver"]


@pytest.mark.parametrize(("pulls_write", "named"), [(False, "`pull-requests: write`"), (True, None)])
def test_a_token_without_pull_request_write_is_one_line_and_the_issue_untouched(
    server: FakeServer, origin: Path, tmp_path: Path, pulls_write: bool, named: str | None
) -> None:
    fake = server.fake
    fake.pulls_write = pulls_write
    fake.actors[TOKEN] = BOT
    env = clean_env(GITHUB_TOKEN=TOKEN, GITHUB_REPOSITORY=REPO, JIT_DISPATCH_GITHUB_API_URL=server.url,
                    JIT_DISPATCH_TRACKER="github", **GIT_IDENTITY)  # fmt: skip
    argv = [sys.executable, "-c", UNPACED, "once", "--agent", "bot", "--command", "true", "--deliver", "pull-request"]
    proc = subprocess.run(
        argv, cwd=fresh(origin, tmp_path, "run"), env=env, capture_output=True, text=True, timeout=120
    )
    if named is None:  # the command changed nothing: released, which shows the check passed
        assert proc.returncode == 1 and "no changes to deliver" in proc.stdout, proc.stdout + proc.stderr
        return
    assert proc.returncode == 3 and TOKEN not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], proc.stderr
    assert fake.labels(1) == ["dispatch"] and fake.comments[1] == [] and fake.refs == {} and fake.pulls == {}
