"""`--deliver pull-request` with the jit tracker: a real `once` process against the GitHub fake
on 127.0.0.1 (pulls, reviews, real merges into a bare remote). The review round trip: changes
requested → the next run continues the work branch with the review in its feedback file → the
same pull request is updated → merged → done."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from delivery_runs import assert_jit_sees, remote_state
from github_fake import BOT, REPO, FakeGitHub, user
from github_server import UNPACED, FakeServer
from helpers import GIT_IDENTITY, CliRun, Remote, clean_env, make_remote, read_issue
from jit_dispatch.trackers.jit.store import NewIssue

TOKEN = "ghs_delivery_0123456789abcdefSECRET"
# Round 1 writes a.txt; a later round (back with feedback) keeps the review and extends a.txt.
COMMAND = (
    'if [ -n "$JIT_DISPATCH_FEEDBACK_FILE" ]; then cp "$JIT_DISPATCH_FEEDBACK_FILE" "$OUT/feedback.json"; '
    'cat a.txt > "$OUT/seen-a.txt"; echo fixed >> a.txt; else echo first > a.txt; fi'
)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeGitHub(page_size=30)
    fake.actors[TOKEN] = BOT
    with FakeServer(fake) as running:
        yield running


def once(server: FakeServer, clone: Path, out: Path, *extra: str, remote_mode: bool = False) -> CliRun:
    env = clean_env(
        GITHUB_TOKEN=TOKEN, GITHUB_REPOSITORY=REPO, JIT_DISPATCH_GITHUB_API_URL=server.url, OUT=str(out), **GIT_IDENTITY
    )
    argv = [sys.executable, "-c", UNPACED, "once", "--agent", "bot", "--command", COMMAND, "--json"]
    argv += ["--sync", "git", "--state-branch", "main"] if remote_mode else []  # HEAD may be detached
    proc = subprocess.run(
        [*argv, "--deliver", "pull-request", *extra], cwd=clone, env=env, capture_output=True, text=True, timeout=120
    )
    return CliRun(proc.returncode, proc.stdout, proc.stderr)


def _setup(tmp_path: Path, server: FakeServer) -> tuple[Remote, Path, Path]:
    remote = make_remote(tmp_path, [NewIssue("Fix <b>login</b> @everyone")])
    server.fake.git_remote = remote.bare
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", remote.url, str(work)], check=True, capture_output=True)
    out = tmp_path / "out"
    out.mkdir()
    return remote, work, out


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_review_round_trip_updates_the_same_pull_request(tmp_path: Path, server: FakeServer, mode: str) -> None:
    remote, work, out = _setup(tmp_path, server)
    issue_id = remote.ids[0]
    fake = server.fake
    remote_mode = mode == "remote"

    def store() -> Path:
        """Where the state is: the workspace (local mode), the remote's main (remote mode)."""
        return remote_state(remote, tmp_path) if remote_mode else work

    run = once(server, work, out, remote_mode=remote_mode)
    assert run.returncode == 0, run.stderr
    result = run.json
    assert result["outcome"] == "in-review" and result["pull_request_number"], run.stdout
    number = result["pull_request_number"]
    pull = fake.pulls[number]
    assert pull["head"]["ref"] == result["branch"] and pull["base"]["ref"] == "main"
    assert pull["title"] == f"[{issue_id[:8]}] Fix <b>login</b> @everyone"
    assert f"\nJit-Issue: {issue_id}\n" in pull["body"]
    assert "<b>" not in pull["body"] and "@everyone" not in pull["body"]  # rendered inert, as the summary
    context = read_issue(store() / ".jit", issue_id)["context"]
    assert context["dispatch.pull_number"] == str(number) and context["dispatch.pull_request"] == pull["html_url"]
    assert_jit_sees(store(), available=set(), states={issue_id: "gated"})

    fake.add_collaborator("alice", "write")
    fake.add_review(number, user("alice"), "CHANGES_REQUESTED", "please add <x>", (("a.txt", 1, "say fixed"),))
    (work / "a.txt").unlink()  # the next run must get a.txt from the work branch, not from leftovers

    run = once(server, work, out, remote_mode=remote_mode)
    assert run.returncode == 0, run.stderr
    assert any("changes requested by alice" in w for w in run.json["merged"]), run.json["merged"]
    assert run.json["outcome"] == "in-review" and run.json["pull_request_number"] == number, run.stdout
    assert (out / "seen-a.txt").read_text() == "first\n"
    feedback = json.loads((out / "feedback.json").read_text())
    assert feedback["reason"] == "changes requested by alice" and feedback["reviewer"] == "alice"
    assert feedback["review_body"] == "please add <x>"
    assert feedback["comments"] == [{"path": "a.txt", "line": 1, "body": "say fixed", "author": "alice"}]
    assert len(fake.pulls) == 1  # updated, not duplicated
    branch = run.json["branch"]
    shown = subprocess.run(["git", "-C", str(remote.bare), "show", f"{branch}:a.txt"], capture_output=True, text=True)
    assert shown.stdout == "first\nfixed\n"
    issue = read_issue(store() / ".jit", issue_id)
    assert issue["context"]["dispatch.review_rounds"] == "1" and issue["context"]["dispatch.attempts"] == "0"

    fake.merge_pull(number, "squash")
    run = once(server, work, out, remote_mode=remote_mode)
    assert run.returncode == 0, run.stderr
    assert any(f"{issue_id[:8]} done" in w for w in run.json["merged"]), run.json["merged"]
    assert read_issue(store() / ".jit", issue_id)["state"] == "done"
    assert_jit_sees(store(), available=set(), states={issue_id: "done"})


def test_a_pull_request_closed_unmerged_releases_the_issue(tmp_path: Path, server: FakeServer) -> None:
    remote, work, out = _setup(tmp_path, server)
    run = once(server, work, out)
    number = run.json["pull_request_number"]
    server.fake.close_pull(number)
    run = once(server, work, out, "--dry-run")  # a dry run notices nothing and changes nothing
    assert read_issue(work / ".jit", remote.ids[0])["state"] == "gated"
    run = once(server, work, out, "--max-attempts", "1")
    assert any(f"pull request #{number} closed without merging" in w for w in run.json["merged"]), run.stdout
    issue = read_issue(work / ".jit", remote.ids[0])
    assert issue["state"] == "ready" and issue["context"]["dispatch.attempts"] == "1"
    assert "dispatch.parked_at" in issue["context"]  # the attempt limit (1) reached
    assert issue["context"]["dispatch.branch"] == run.json["branch"] or "dispatch.branch" in issue["context"]


def test_missing_pull_request_permission_is_one_line_before_the_claim(tmp_path: Path, server: FakeServer) -> None:
    remote, work, out = _setup(tmp_path, server)
    server.fake.pulls_write = False
    events_before = (work / ".jit" / "events.jsonl").read_text()
    run = once(server, work, out)
    assert run.returncode == 3, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "`pull-requests: write`" in lines[0], run.stderr
    assert TOKEN not in run.stdout + run.stderr
    assert read_issue(work / ".jit", remote.ids[0])["state"] == "ready"
    assert (work / ".jit" / "events.jsonl").read_text() == events_before


def test_the_last_rounds_leftovers_in_a_kept_workspace_do_not_block_the_next_round(
    tmp_path: Path, server: FakeServer
) -> None:
    """A workspace that outlives the run (the pool, a self-hosted runner) still holds what the agent
    left uncommitted in round 1 (now on the work branch): checking the branch out over it must not
    fail every later round (released, attempt after attempt); a file that is not the branch's stays."""
    remote, work, out = _setup(tmp_path, server)
    issue_id = remote.ids[0]
    (work / "mine.txt").write_text("a person's untracked notes\n")
    run = once(server, work, out)
    number = run.json["pull_request_number"]
    assert (work / "a.txt").read_text() == "first\n"  # left by round 1, uncommitted
    server.fake.add_collaborator("alice", "write")
    server.fake.add_review(number, user("alice"), "CHANGES_REQUESTED", "more", ())

    run = once(server, work, out)
    assert run.json["outcome"] == "in-review" and run.json["pull_request_number"] == number, run.stdout
    shown = subprocess.run(
        ["git", "-C", str(remote.bare), "show", f"{run.json['branch']}:a.txt"], capture_output=True, text=True
    )
    assert shown.stdout == "first\nfixed\n"
    assert (work / "mine.txt").read_text() == "a person's untracked notes\n"  # not the agent's: untouched
    issue = read_issue(work / ".jit", issue_id)
    assert issue["context"]["dispatch.attempts"] == "0", issue["context"]
    assert_jit_sees(work, available=set(), states={issue_id: "gated"})


def test_a_pull_request_retargeted_and_merged_elsewhere_does_not_finish_the_issue(
    tmp_path: Path, server: FakeServer
) -> None:
    """Someone edits the pull request's base to a scratch branch and merges it there: GitHub says
    `merged`, but the work is not on the base its dependents need, so the issue keeps waiting."""
    remote, work, out = _setup(tmp_path, server)
    issue_id = remote.ids[0]
    run = once(server, work, out)
    number = run.json["pull_request_number"]
    subprocess.run(["git", "-C", str(remote.bare), "branch", "scratch", "main"], check=True)
    server.fake.pulls[number]["base"]["ref"] = "scratch"
    server.fake.merge_pull(number, "squash")

    run = once(server, work, out)
    assert not any(issue_id[:8] in line for line in run.json["merged"]), run.stdout
    assert any("merged into scratch, not main" in line for line in run.json["warnings"]), run.stdout
    assert read_issue(work / ".jit", issue_id)["state"] == "gated"
    assert_jit_sees(work, available=set(), states={issue_id: "gated"})
