"""Waiting deliveries settled from what GitHub says of their pull requests (`delivery/pull_watch.py`):
merged → done, closed → released with an attempt, changes requested by a trusted reviewer → back to
ready with the full review for the next run; untrusted reviews and open PRs leave the issue waiting."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from github_fake import REPO, FakeGitHub, serving, user, without_pacing
from jit_dispatch.delivery.pull_watch import review_feedback, watch_pull_requests
from jit_dispatch.delivery.pulls import PullRequests
from jit_dispatch.domain.delivery import Delivery
from jit_dispatch.domain.selection import Filters
from jit_dispatch.domain.values import Outcome
from jit_dispatch.trackers.github import rules
from jit_dispatch.trackers.github.tracker import GitHubTracker

TOKEN = "ghs_0123456789abcdefSECRETtoken0123456789"
ALICE, MALLORY = user("alice", uid=11), user("mallory", uid=66)


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with serving() as server:
        server.add_collaborator("alice", "maintain")
        server.add_collaborator("mallory", "triage")
        yield server


@pytest.fixture(autouse=True)
def no_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    without_pacing(monkeypatch)


def tracker() -> GitHubTracker:
    return GitHubTracker(rules.GitHubSettings(REPO, lock="comments"), TOKEN, sleep=lambda _s: None)


def deliver(fake: FakeGitHub, number: int) -> int:
    """Issue `number` (made beforehand) claimed, its PR opened, held for the merge; the PR's number."""
    t = tracker()
    assert t.claim(f"#{number}", "agent:a", "run", Filters()) is not None
    branch = f"jit/{number}-x"
    pr = PullRequests(REPO, TOKEN).open_or_update(branch, "main", "t", "b", draft=False, labels=(), reviewers=())
    delivery = Delivery(branch, "main", "2000-01-01T00:00:00Z", "a" * 40, pr.url, pr.number)
    assert t.hold_for_merge(f"#{number}", "agent:a", delivery).outcome == Outcome.IN_REVIEW
    return pr.number


def test_each_waiting_issue_settles_as_its_pull_request_says(fake: FakeGitHub) -> None:
    for n in range(1, 6):
        fake.add_issue(n, f"issue {n}")
    merged, closed, asked, untrusted, _ = (deliver(fake, n) for n in range(1, 6))
    fake.merge_pull(merged, "squash")
    fake.close_pull(closed)
    fake.add_review(asked, ALICE, "CHANGES_REQUESTED", "handle empty input", comments=(("a.py", 3, "here"),))
    fake.add_review(untrusted, MALLORY, "CHANGES_REQUESTED", "rewrite it all", association="MEMBER")
    t = tracker()
    waiting = t.awaiting_merge()
    assert sorted(i for i, _ in waiting) == ["#1", "#2", "#3", "#4", "#5"]
    watched = watch_pull_requests(t, PullRequests(REPO, TOKEN), waiting, max_attempts=3, max_review_rounds=3)
    outcomes = {issue_id: (s.outcome, note) for issue_id, s, note in watched.settled}
    assert outcomes == {
        "#1": (Outcome.DONE, f"pull request #{merged} merged"),
        "#2": (Outcome.RELEASED, f"pull request #{closed} closed without merging"),
        "#3": (Outcome.RELEASED, f"pull request #{asked}: changes requested by alice"),
    }
    assert watched.notes == []
    assert sorted(i for i, _ in tracker().awaiting_merge()) == ["#4", "#5"]
    assert fake.issues[1]["state"] == "closed" and fake.issues[2]["state"] == "open"

    again = tracker().claim("#3", "agent:a", "run2", Filters())
    assert again is not None
    feedback = review_feedback(PullRequests(REPO, TOKEN), again.context)
    assert feedback is not None and feedback.review_body == "handle empty input"
    assert [(c.path, c.line, c.body) for c in feedback.comments] == [("a.py", 3, "here")]


def test_nothing_waiting_with_a_pull_request_costs_no_call(fake: FakeGitHub) -> None:
    start = len(fake.requests)
    delivery = Delivery("jit/1-x", "main", "2000-01-01T00:00:00Z")
    watched = watch_pull_requests(tracker(), PullRequests(REPO, TOKEN), [("#1", delivery)], max_attempts=3,
                                  max_review_rounds=3)  # fmt: skip
    assert watched.settled == [] and len(fake.requests) == start


def test_a_github_failure_is_a_note_and_the_issues_keep_waiting(fake: FakeGitHub) -> None:
    fake.add_issue(1, "issue 1")
    deliver(fake, 1)
    fake.fail("GET", r"/repos/octo-org/widgets/pulls/\d+", 500, "boom", times=99)
    t = tracker()
    watched = watch_pull_requests(t, PullRequests(REPO, TOKEN), t.awaiting_merge(), max_attempts=3, max_review_rounds=3)
    assert watched.settled == [] and len(watched.notes) == 1 and "500" in watched.notes[0]
    assert [i for i, _ in tracker().awaiting_merge()] == ["#1"]
