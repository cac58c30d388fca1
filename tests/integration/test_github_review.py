"""GitHub Issues waiting for a merge (`hold_for_merge` and the three endings), in both lock modes,
against the stateful fake in-process: labels, marker comments, the ready set, attempts and rounds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from github_fake import BOT, REPO, FakeGitHub, serving, user, without_pacing
from jit_dispatch.domain.delivery import Delivery
from jit_dispatch.domain.issue import CTX_BRANCH, CTX_PULL_NUMBER, CTX_REVIEW_ROUNDS, PARKED_LABEL
from jit_dispatch.domain.selection import Filters, dispatch_reason
from jit_dispatch.domain.values import Outcome, State
from jit_dispatch.trackers.github import rules
from jit_dispatch.trackers.github.reflock import RefLockedTracker
from jit_dispatch.trackers.github.tracker import GitHubTracker

TOKEN = "ghs_0123456789abcdefSECRETtoken0123456789"
ME = frozenset({BOT["login"]})
AGENT = "agent:runner-a"
DELIVERY = Delivery(
    branch="jit/1-fix-login",
    base="main",
    delivered_at="2025-06-01T12:00:00Z",
    head_sha="a" * 40,
    pull_request=f"https://github.com/{REPO}/pull/9",
    pull_number=9,
)


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with serving() as server:
        server.add_issue(1, "Fix login")
        server.add_issue(2, "Depends on login", blocked_by=(1,))
        yield server


@pytest.fixture(autouse=True)
def no_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    without_pacing(monkeypatch)


@pytest.fixture(params=["comments", "refs"])
def make(request: pytest.FixtureRequest) -> Any:
    def build(**settings: Any) -> GitHubTracker:
        if request.param == "refs":
            return RefLockedTracker(rules.GitHubSettings(REPO, **settings), TOKEN, sleep=lambda _s: None)
        return GitHubTracker(rules.GitHubSettings(REPO, lock="comments", **settings), TOKEN, sleep=lambda _s: None)

    return build


def kinds(fake: FakeGitHub, number: int = 1) -> list[str]:
    return [m.kind for m in rules.parse_markers(fake.comments[number], ME)]


def delivered(make: Any, fake: FakeGitHub, **settings: Any) -> GitHubTracker:
    t = make(**settings)
    assert t.claim("#1", AGENT, "https://run/1", Filters()) is not None
    settled = t.hold_for_merge("#1", AGENT, DELIVERY)
    assert settled.outcome == Outcome.IN_REVIEW and settled.warnings == ()
    return t


def ready_ids(t: GitHubTracker) -> list[str]:
    """What a runner may claim now."""
    snapshot = t.snapshot()
    return sorted(i.id for i in snapshot.issues if dispatch_reason(i, snapshot.states, {}) is None)


def test_a_held_issue_stays_open_in_review_and_is_not_dispatchable(make: Any, fake: FakeGitHub) -> None:
    t = delivered(make, fake)
    raw = fake.issues[1]
    assert raw["state"] == "open"
    assert sorted(fake.labels(1)) == ["dispatch", "in-review"]
    assert kinds(fake) == ["claim", "deliver"]
    assert "pull/9" in fake.comments[1][-1]["body"] and "jit/1-fix-login" in fake.comments[1][-1]["body"]
    snapshot = make().snapshot()
    assert snapshot.states["#1"] == State.GATED and "#1" not in [i.id for i in snapshot.issues]
    assert make().claim("#1", "agent:other", "r", Filters()) is None
    assert ready_ids(make()) == []  # #2 waits for #1
    assert fake.refs == {}  # refs mode: the lock is gone, the label keeps others off
    assert t.awaiting_merge() == [("#1", DELIVERY)]


def test_the_review_label_is_configurable(make: Any, fake: FakeGitHub) -> None:
    t = delivered(make, fake, review_label="status:review")
    assert "status:review" in fake.labels(1) and "in-review" not in fake.labels(1)
    assert t.awaiting_merge() == [("#1", DELIVERY)]


def test_merged_closes_as_completed_and_unblocks_the_dependent(make: Any, fake: FakeGitHub) -> None:
    t = delivered(make, fake)
    settled = make().finish_merged("#1", "pull request #9 merged")
    assert (settled.outcome, settled.warnings) == (Outcome.DONE, ())
    raw = fake.issues[1]
    assert (raw["state"], raw["state_reason"]) == ("closed", "completed")
    assert fake.labels(1) == ["dispatch"]
    assert kinds(fake) == ["claim", "deliver", "done"]
    assert "pull request #9 merged" in fake.comments[1][-1]["body"]
    assert t.awaiting_merge() == []
    assert ready_ids(make()) == ["#2"]  # blocked until #1 closed


def test_finishing_twice_posts_one_done(make: Any, fake: FakeGitHub) -> None:
    delivered(make, fake)
    assert make().finish_merged("#1", "merged").outcome == Outcome.DONE
    assert make().finish_merged("#1", "merged").outcome == Outcome.DONE
    assert kinds(fake) == ["claim", "deliver", "done"]


def test_an_issue_closed_by_the_merge_itself_is_still_listed_and_finished(make: Any, fake: FakeGitHub) -> None:
    t = delivered(make, fake)
    fake.issues[1] |= {"state": "closed", "state_reason": "completed"}  # `Closes #1` in the merged PR
    assert t.awaiting_merge() == [("#1", DELIVERY)]
    assert t.finish_merged("#1", "pull request #9 merged").outcome == Outcome.DONE
    assert "in-review" not in fake.labels(1) and t.awaiting_merge() == []


def test_changes_requested_send_it_back_to_ready_with_the_work_branch_in_its_context(
    make: Any, fake: FakeGitHub
) -> None:
    delivered(make, fake)
    settled = make().return_for_changes("#1", "changes requested by alice", 3)
    assert (settled.outcome, settled.failed_attempts) == (Outcome.RELEASED, 0)
    assert fake.labels(1) == ["dispatch"] and kinds(fake) == ["claim", "deliver", "return"]
    again = make()
    assert ready_ids(again) == ["#1"]
    issue = again.claim("#1", AGENT, "https://run/2", Filters())
    assert issue is not None
    assert issue.context[CTX_BRANCH] == "jit/1-fix-login" and issue.context[CTX_PULL_NUMBER] == "9"
    assert issue.context[CTX_REVIEW_ROUNDS] == "1" and issue.failed_attempts == 0
    assert issue.context["dispatch.last_reason"] == "changes requested by alice"


def test_review_rounds_park_past_the_limit(make: Any, fake: FakeGitHub) -> None:
    outcomes = []
    for _ in range(3):
        delivered(make, fake)
        outcomes.append(make().return_for_changes("#1", "changes requested by alice", 2).outcome)
    assert outcomes == [Outcome.RELEASED, Outcome.RELEASED, Outcome.PARKED]
    assert PARKED_LABEL in fake.labels(1) and ready_ids(make()) == []


def test_closed_unmerged_releases_with_an_attempt_and_the_branch_to_continue(make: Any, fake: FakeGitHub) -> None:
    delivered(make, fake)
    settled = make().release_unmerged("#1", "pull request #9 closed without merging", 3)
    assert (settled.outcome, settled.failed_attempts) == (Outcome.RELEASED, 1)
    assert fake.labels(1) == ["dispatch"] and kinds(fake) == ["claim", "deliver", "release"]
    issue = make().claim("#1", AGENT, "https://run/2", Filters())
    assert issue is not None and issue.failed_attempts == 1 and issue.context[CTX_BRANCH] == "jit/1-fix-login"
    assert "closed without merging" in issue.context["dispatch.last_reason"]


def test_closed_unmerged_at_the_attempt_limit_parks(make: Any, fake: FakeGitHub) -> None:
    delivered(make, fake)
    assert make().release_unmerged("#1", "closed", 1).outcome == Outcome.PARKED
    assert PARKED_LABEL in fake.labels(1)


def test_once_ended_another_ending_is_lost(make: Any, fake: FakeGitHub) -> None:
    delivered(make, fake)
    assert make().return_for_changes("#1", "changes requested by alice", 3).outcome == Outcome.RELEASED
    assert make().release_unmerged("#1", "closed", 3).outcome == Outcome.LOST
    assert make().finish_merged("#1", "merged").outcome == Outcome.LOST
    assert fake.issues[1]["state"] == "open"


def test_an_ending_whose_labels_failed_is_finished_by_the_next_scan(make: Any, fake: FakeGitHub) -> None:
    t = delivered(make, fake)
    fake.fail("DELETE", r"/repos/octo-org/widgets/issues/1/labels/in-review", 403, "nope", times=99)
    settled = make().finish_merged("#1", "merged")
    assert settled.outcome == Outcome.DONE and "next scan" in settled.warnings[0]
    fake.faults.clear()
    assert t.awaiting_merge() == []
    assert fake.labels(1) == ["dispatch"]


def test_a_label_a_person_added_without_a_delivery_is_not_ours(make: Any, fake: FakeGitHub) -> None:
    fake.add_issue(3, "Reviewed by hand", labels=("dispatch", "in-review"))
    assert make().awaiting_merge() == []
    assert make().finish_merged("#3", "merged").outcome == Outcome.LOST


def test_a_strangers_deliver_marker_does_not_count(make: Any, fake: FakeGitHub) -> None:
    fake.add_issue(3, "x", labels=("dispatch", "in-review"))
    marker = rules.render_marker("deliver", {"nonce": "n", "agent": "x", **{"branch": "evil", "base": "main"}})
    fake.add_comment(3, marker, author=user("mallory", uid=66))
    assert make().awaiting_merge() == []


def test_a_hold_after_losing_the_claim_is_lost_and_writes_nothing(make: Any, fake: FakeGitHub) -> None:
    t = make()
    assert t.claim("#1", AGENT, "https://run/1", Filters()) is not None
    other = make()
    assert other.release("#1", AGENT, "taken back", 3).outcome == Outcome.RELEASED  # a person's release
    before = list(fake.comments[1])
    assert t.hold_for_merge("#1", AGENT, DELIVERY).outcome == Outcome.LOST
    assert fake.comments[1] == before and "in-review" not in fake.labels(1)


def test_refs_a_hold_cut_short_after_its_record_is_on_the_lock_is_finished_by_repair(fake: FakeGitHub) -> None:
    def refs() -> RefLockedTracker:
        return RefLockedTracker(rules.GitHubSettings(REPO), TOKEN, sleep=lambda _s: None)

    t = refs()
    assert t.claim("#1", AGENT, "https://run/1", Filters()) is not None
    fake.fail("POST", r"/repos/octo-org/widgets/issues/1/comments", 403, "nope", times=99)
    settled = t.hold_for_merge("#1", AGENT, DELIVERY)
    assert settled.outcome == Outcome.IN_REVIEW and "recorded" in settled.warnings[0]
    assert [m.split("\n")[0] for m in fake.lock_records().values()] == ["jit-dispatch deliver #1"]
    assert refs().snapshot().states["#1"] == State.IN_PROGRESS  # still labelled claimed
    fake.faults.clear()
    notes = refs().repair()
    assert notes == ["finished the deliver settle of #1 left half-done"]
    assert kinds(fake) == ["claim", "deliver"] and sorted(fake.labels(1)) == ["dispatch", "in-review"]
    assert fake.refs == {} and refs().awaiting_merge() == [("#1", DELIVERY)]


def test_comments_a_hold_whose_labels_failed_is_finished_by_repair(fake: FakeGitHub) -> None:
    t = GitHubTracker(rules.GitHubSettings(REPO, lock="comments"), TOKEN, sleep=lambda _s: None)
    assert t.claim("#1", AGENT, "https://run/1", Filters()) is not None
    fake.fail("POST", r"/repos/octo-org/widgets/issues/1/labels", 403, "nope", times=99)
    assert t.hold_for_merge("#1", AGENT, DELIVERY).warnings
    fake.faults.clear()
    assert t.repair() == ["finished the deliver settle of #1 left half-done"]
    assert sorted(fake.labels(1)) == ["dispatch", "in-review"] and t.awaiting_merge() == [("#1", DELIVERY)]


def test_an_issue_a_person_closed_while_its_pr_was_closed_stops_waiting(make: Any, fake: FakeGitHub) -> None:
    t = delivered(make, fake)
    fake.issues[1] |= {"state": "closed", "state_reason": "completed"}  # closed by hand, the PR too
    assert make().release_unmerged("#1", "pull request #9 closed without merging", 3).outcome == Outcome.LOST
    assert "in-review" not in fake.labels(1) and t.awaiting_merge() == []
    assert fake.issues[1]["state"] == "closed" and kinds(fake) == ["claim", "deliver"]
