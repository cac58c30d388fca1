"""The GitHub tracker fenced by the clock (issue 22, item 1): every request of a heartbeat ends by the
deadline the watchdog gives it, and a runner whose beats hang stops its command before a reaper can
hand the issue to another runner.
The fake on a loopback server, so requests can really hang."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_github_processes import HOLD, finish, once, overlaps, runs, start

from github_fake import BOT, REPO, FakeGitHub
from github_server import FakeServer
from jit_dispatch.domain.selection import Filters
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.github import api as github_api
from jit_dispatch.trackers.github import rules
from jit_dispatch.trackers.github.reflock import RefLockedTracker

HUNG = 600.0  # a request that would hang this long lands never within a test


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setattr(github_api, "THROTTLE", False)
    fake = FakeGitHub(page_size=30)
    with FakeServer(fake, latency=(0.0, 0.02)) as running:
        yield running


def tracker(server: FakeServer, who: str, heartbeat: float = 2.0) -> RefLockedTracker:
    token = f"ghs_{who}_0123456789abcdef"
    server.fake.actors[token] = BOT
    settings = rules.GitHubSettings(REPO)
    return RefLockedTracker(settings, token, server.url, sleep=time.sleep, heartbeat=heartbeat)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", r"/repos/octo-org/widgets/git/commits"),
        ("PATCH", r"/repos/octo-org/widgets/git/refs/jit-dispatch/claims/gh-1"),
        ("PATCH", r"/repos/octo-org/widgets/issues/comments/\d+"),
    ],
    ids=["commit", "move", "claim-comment"],
)
def test_every_request_of_a_heartbeat_ends_by_its_deadline(server: FakeServer, method: str, path: str) -> None:
    """The finding: one heartbeat call blocked 31.5 s (a hung commit POST) or 94.6 s (a hung PATCH
    retried 9 times at a 10 s timeout) while the fence waited for it."""
    server.fake.add_issue(1)
    t = tracker(server, "runner")
    assert t.claim("#1", "agent:a", "r", Filters()) is not None
    for _ in range(12):  # every try hangs, retries included
        server.fake.stall(method, path, HUNG)
    started = time.monotonic()
    with contextlib.suppress(TrackerError):
        t.heartbeat("#1", "agent:a", interval=2.0, deadline=started + 1.5)
    assert time.monotonic() - started < 1.5 + 3.0  # the deadline, plus scheduling on a loaded machine
    t.close()


def test_a_runner_whose_beats_hang_stops_its_command_before_anyone_else_runs_the_issue(
    server: FakeServer, tmp_path: Path
) -> None:
    """The finding: with --heartbeat 20s the reaper released at 62.5 s and another runner ran the issue
    from 63.8 s while the first command ran until 72.4 s. Once runner 0's command runs, every beat it
    sends hangs; a reaper and a second runner loop meanwhile; no two commands of the issue may overlap
    (each holds the issue's flock for as long as any of its processes lives: `HOLD`)."""
    fake = server.fake
    fake.add_issue(1)
    hung_token = "ghs_runner00_0123456789abcdef"
    long = HOLD + 'echo "$JIT_ISSUE_SHORT_ID 1" >> "$RUNS/runs"; exec sleep 30'
    first = start(server, tmp_path, 0, "once", "--agent", "r0", "--heartbeat", "2s", "--command", long)
    deadline = time.monotonic() + 120
    while not runs(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runs(tmp_path) == ["#1 1"]
    for _ in range(50):  # from its command's start on (not its lock's: a loaded machine starts it late)
        fake.stall("POST", r"/repos/octo-org/widgets/git/commits", 8.0, token=hung_token)
    others = 0
    while len(runs(tmp_path)) < 2 and time.monotonic() < deadline:  # reap it, then run it elsewhere
        code, out, err = finish(start(server, tmp_path, 1, "reap", "--older-than", "1s"), timeout=60)
        assert code == 0, err
        finish(once(server, tmp_path, 2 + others, "--heartbeat", "2s"), timeout=60)
        others += 1
    code, out, err = finish(first, timeout=90)
    assert "exit code 143" in out and "could not be renewed" in out, out + err  # its fence, not its 30 s
    assert len(runs(tmp_path)) == 2 and overlaps(tmp_path) == []  # run again elsewhere, never at once


def test_a_hung_claim_comment_edit_never_stops_a_runner_whose_lock_moves(server: FakeServer) -> None:
    """The claim comment's `beat` is for people; the lock's move is the sign of life. An edit that
    hangs held the beat's confirmation until the fence fell: the command was stopped, its lock alive."""
    from jit_dispatch.engine.heartbeat import Heartbeat
    from jit_dispatch.process.child import CancelToken

    server.fake.add_issue(1)
    t = tracker(server, "runner", heartbeat=4.0)  # long enough that beats try the edit (EDIT_MARGIN)
    assert t.claim("#1", "agent:a", "r", Filters()) is not None
    for _ in range(40):  # every edit of the claim comment hangs, retries included
        server.fake.stall("PATCH", r"/repos/octo-org/widgets/issues/comments/\d+", HUNG)
    timing = t.claim_timing("#1")
    assert timing is not None
    moves = server.fake.count("PATCH", r"/repos/octo-org/widgets/git/refs/jit-dispatch/claims/gh-1")
    with Heartbeat(t, "#1", "agent:a", 4.0, CancelToken(), origin=timing.sent, took=timing.took) as beat:
        time.sleep(10.0)  # two beats
    assert beat.lost is None, beat.lost
    assert any(m == "PATCH" and "/issues/comments/" in path for m, path, _ in server.arrived)  # edits were tried
    assert server.fake.count("PATCH", r"/repos/octo-org/widgets/git/refs/jit-dispatch/claims/gh-1") - moves >= 2
    t.close()
