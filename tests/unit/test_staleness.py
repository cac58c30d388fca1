"""The stale-claim rules, pure: which claims are stale, how their age reads, why they are reaped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jit_dispatch.domain.issue import issue_from_raw
from jit_dispatch.domain.staleness import Claim, agent_matches, format_age, reap_reason, stale_claims

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_issue(n: int, state: str = "in_progress", assignee: str | None = "agent:w1", **context: str):
    raw = {
        "id": f"{n:08d}-0000-4000-8000-000000000000", "title": f"issue {n}", "description": "", "state": state,
        "priority": "normal", "assignee": assignee, "dependencies": [], "gates_required": [], "gates_status": {},
        "context": {key.replace("_", ".", 1): value for key, value in context.items()}, "documents": [],
        "labels": [], "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
    }  # fmt: skip
    return issue_from_raw(raw)


def test_stale_claims_uses_the_newer_of_claim_and_heartbeat() -> None:
    hours = lambda n: stamp(NOW - timedelta(hours=n))  # noqa: E731
    old = make_issue(1, dispatch_claimed_at=hours(5))
    beating = make_issue(2, dispatch_claimed_at=hours(5), dispatch_heartbeat_at=hours(0.5))
    silent_beat = make_issue(3, dispatch_claimed_at=hours(8), dispatch_heartbeat_at=hours(3))
    fresh = make_issue(4, dispatch_claimed_at=hours(0.5))
    stale_beat_fresh_claim = make_issue(5, dispatch_claimed_at=hours(0.5), dispatch_heartbeat_at=hours(9))
    outside = make_issue(6)  # in progress, claimed by someone else than the dispatcher
    settled = make_issue(7, state="ready", assignee=None, dispatch_claimed_at=hours(9))
    done = make_issue(8, state="done", dispatch_claimed_at=hours(9))
    garbage = make_issue(9, dispatch_claimed_at="last tuesday")
    issues = [old, beating, silent_beat, fresh, stale_beat_fresh_claim, outside, settled, done, garbage]

    stale = stale_claims(issues, NOW, 3600, None)
    assert [c.issue.id for c in stale] == [old.id, silent_beat.id], "longest silent first"
    assert stale[0].claimed_age == stale[0].silent_for == 5 * 3600
    assert stale[1].claimed_age == 8 * 3600 and stale[1].silent_for == 3 * 3600
    assert stale[0].agent == "agent:w1"
    assert [c.issue.id for c in stale_claims(issues, NOW, 10 * 3600, None)] == []
    assert {c.issue.id for c in stale_claims(issues, NOW, 60, None)} == {
        old.id, beating.id, silent_beat.id, fresh.id, stale_beat_fresh_claim.id,
    }  # fmt: skip
    # The boundary: silent exactly as long as the limit is not yet stale.
    assert stale_claims([old], NOW, 5 * 3600, None) == []
    assert len(stale_claims([old], NOW, 5 * 3600 - 1, None)) == 1


def test_stale_claims_filters_by_agent_pattern() -> None:
    claimed = stamp(NOW - timedelta(hours=5))
    ci = make_issue(1, assignee="agent:ci-2", dispatch_claimed_at=claimed)
    copilot = make_issue(2, assignee="copilot:copilot-1", dispatch_claimed_at=claimed)
    assert [c.issue.id for c in stale_claims([ci, copilot], NOW, 60, "ci-*")] == [ci.id]
    assert [c.issue.id for c in stale_claims([ci, copilot], NOW, 60, "copilot:*")] == [copilot.id]
    assert len(stale_claims([ci, copilot], NOW, 60, "*")) == 2
    assert stale_claims([ci, copilot], NOW, 60, "human:*") == []


@pytest.mark.parametrize(
    "pattern,agent,expected",
    [
        (None, "agent:x", True),
        ("", "agent:x", True),
        ("ci-*", "agent:ci-2", True),
        ("agent:ci-*", "agent:ci-2", True),
        ("ci-*", "agent:copilot-1", False),
        ("ci-?", "agent:ci-12", False),
        ("CI-*", "agent:ci-2", False),  # case matters, as in assignees
        ("*-1", "copilot:copilot-1", True),
        ("copilot", "copilot:copilot-1", False),
        ("nobody", "nobody", True),
    ],
)
def test_agent_matches(pattern: str | None, agent: str, expected: bool) -> None:
    assert agent_matches(pattern, agent) is expected


@pytest.mark.parametrize(
    "seconds,text",
    [
        (-5, "0s"), (0, "0s"), (0.9, "0s"), (45, "45s"), (59.99, "59s"), (60, "1m"), (119, "1m"), (3599, "59m"),
        (3600, "1h"), (3660, "1h 1m"), (3 * 3600 + 5 * 60 + 59, "3h 5m"), (86399, "23h 59m"), (86400, "1d"),
        (86400 + 3599, "1d"), (2 * 86400 + 4 * 3600, "2d 4h"), (400 * 86400, "400d"),
    ],
)  # fmt: skip
def test_format_age(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


def test_reap_reason() -> None:
    issue = make_issue(1)
    assert reap_reason(Claim(issue, "agent:ci-2", 7 * 3600 + 180, 7 * 3600 + 180)) == (
        "stale claim (claimed 7h 3m ago by agent:ci-2)"
    )
    assert reap_reason(Claim(issue, "agent:ci-2", 5 * 3600, 2 * 3600 + 60)) == (
        "stale claim (claimed 5h ago by agent:ci-2, last heartbeat 2h 1m ago)"
    )
    # A heartbeat within a second of the claim is not worth mentioning.
    assert reap_reason(Claim(issue, "nobody", 100.5, 100)) == "stale claim (claimed 1m ago by nobody)"
