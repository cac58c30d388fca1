"""Rate limits by the book and no tracebacks (issue 22, items 5 and 6), against the stateful fake
in-process. GitHub's rules: docs/github-locks.md#rate-limits."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from github_fake import BOT, REPO, FakeGitHub, serving, without_pacing
from jit_dispatch.domain.selection import Filters
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.github import api as github_api
from jit_dispatch.trackers.github import rules
from jit_dispatch.trackers.github.reflock import RefLockedTracker

ME = frozenset({BOT["login"]})
ISSUES = r"/repos/octo-org/widgets/issues"
SECONDARY = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    without_pacing(monkeypatch)
    with serving() as server:
        yield server


def tracker(fake: FakeGitHub, sleeps: list[float] | None = None, who: str = "a", **kw: Any) -> RefLockedTracker:
    token = f"ghs_{who}_0123456789abcdef"
    fake.actors[token] = BOT
    waits = sleeps if sleeps is not None else []
    return RefLockedTracker(rules.GitHubSettings(REPO), token, sleep=waits.append, heartbeat=300.0, **kw)


def test_a_long_limit_on_a_read_inside_a_repair_fails_fast_naming_the_limit(fake: FakeGitHub) -> None:
    """The finding: a 429 with retry-after 60 on a list read waited 120.9 s (a settle's patience) before exit 3."""
    fake.add_issue(1)
    sleeps: list[float] = []
    t = tracker(fake, sleeps)
    fake.fail("GET", ISSUES, 429, SECONDARY, {"Retry-After": "60"}, times=9)
    with pytest.raises(TrackerError, match=r"secondary rate limit \(429.*wait 60s"):
        t.repair()
    assert all(s <= github_api.MAX_WAIT for s in sleeps) and fake.count("GET", ISSUES) == 1


def test_a_primary_limit_names_itself_and_its_reset(fake: FakeGitHub) -> None:
    """The finding: the primary limit read "403: no message"."""
    fake.add_issue(1)
    reset = int(time.time()) + 1200
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset), "X-RateLimit-Limit": "1000"}
    fake.fail("GET", ISSUES, 403, "", headers, times=9)
    with pytest.raises(TrackerError) as caught:
        tracker(fake).snapshot()
    line = str(caught.value)
    assert "primary rate limit of 1000 requests an hour is used up" in line
    assert time.strftime("%H:%M:%S UTC", time.gmtime(reset)) in line and "\n" not in line


@pytest.mark.parametrize("path", [r"/repos/octo-org/widgets/git/trees", r"/repos/octo-org/widgets/issues/1/labels"])
def test_a_secondary_limit_without_retry_after_is_no_missing_permission(fake: FakeGitHub, path: str) -> None:
    """The finding: a 403 secondary limit read "the token needs `issues: write`" (on the tree POST:
    `contents: write`)."""
    fake.add_issue(1)
    fake.fail("POST", path, 403, SECONDARY, times=9)
    with pytest.raises(TrackerError) as caught:
        tracker(fake).claim("#1", "agent:a", "r", Filters())
    assert "secondary rate limit" in str(caught.value) and "at least a minute" in str(caught.value)
    assert "write`" not in str(caught.value)


def test_a_lock_created_just_before_a_limit_is_given_back_or_finished_by_the_next_once(fake: FakeGitHub) -> None:
    """The finding: a limit after the lock was created, with the give-back limited too, left a lock
    without a comment for `reap` to find hours later."""
    fake.add_issue(1)
    fake.fail("POST", r"/repos/octo-org/widgets/issues/1/labels", 403, SECONDARY, times=99)
    fake.fail("DELETE", r"/repos/octo-org/widgets/git/refs/.*", 403, SECONDARY, times=99)
    sleeps: list[float] = []
    with pytest.raises(TrackerError, match="secondary rate limit"):
        tracker(fake, sleeps).claim("#1", "agent:a", "r", Filters())
    assert fake.refs and 60.0 in sleeps  # waited out the limit a while, then left the lock saying "never started"
    fake.faults.clear()
    nxt = tracker(fake, who="next")
    assert nxt.repair() == ["finished the release settle of #1 left half-done"]
    assert fake.refs == {} and rules.parse_markers(fake.comments[1], ME) == []  # no attempt counted
    assert nxt.claim("#1", "agent:b", "r", Filters()) is not None


def test_a_slow_tree_post_in_the_access_check_is_one_line(fake: FakeGitHub) -> None:
    """The finding: a slow `POST /git/trees` in the access check ended in a raw traceback."""
    for _ in range(github_api.RETRIES + 1):  # every try times out
        fake.stall("POST", r"/repos/octo-org/widgets/git/trees", 60)
    with pytest.raises(TrackerError, match=r"create the lock tree in octo-org/widgets: cannot reach .*ReadTimeout"):
        tracker(fake)


def test_a_502_on_the_comment_read_inside_a_reap_is_one_line(fake: FakeGitHub) -> None:
    """The finding: a 502 on the comment read inside the reaper's release ended in a traceback that
    printed the response body unscrubbed."""
    fake.add_issue(1)
    holder = RefLockedTracker(
        rules.GitHubSettings(REPO), "ghs_holder_0123456789", sleep=lambda _s: None, heartbeat=0.05
    )
    assert holder.claim("#1", "agent:a", "r", Filters()) is not None
    fake.fail("GET", r"/repos/octo-org/widgets/issues/1/comments", 502, "Bad Gateway ghs_a_0123456789abcdef", times=99)
    with pytest.raises(TrackerError, match="GitHub API error 502") as caught:
        tracker(fake).release("#1", "agent:a", "stale claim", 3, seen=(None, None))
    assert "ghs_a_0123456789abcdef" not in str(caught.value)
