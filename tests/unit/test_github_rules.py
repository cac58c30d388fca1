"""The GitHub tracker's pure part: markers, the winner, priorities, dispatchability, order."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jit_dispatch.domain.selection import Filters, plan
from jit_dispatch.trackers.github import failures, rules

SETTINGS = rules.GitHubSettings("octo-org/widgets")
BOT = {"login": "github-actions[bot]", "type": "Bot"}
ME = frozenset({"github-actions[bot]"})  # the dispatcher's own login


def comment(cid: int, body: str, user: dict[str, Any] | None = None, association: str = "NONE") -> dict[str, Any]:
    return {"id": cid, "body": body, "user": user or BOT, "author_association": association}


def claim(cid: int, nonce: str, agent: str = "agent:a", supersedes: tuple[str, ...] = ()) -> dict[str, Any]:
    data = {"nonce": nonce, "agent": agent, "run": "r", "at": "2025-06-01T12:00:00Z", "supersedes": list(supersedes)}
    return comment(cid, rules.render_marker("claim", data) + "\nclaimed")


def marker(cid: int, kind: str, nonce: str, **data: Any) -> dict[str, Any]:
    return comment(cid, rules.render_marker(kind, {"nonce": nonce, **data}))


def raw_issue(number: int, labels: tuple[str, ...] = ("dispatch",), **extra: Any) -> dict[str, Any]:
    return {
        "number": number,
        "title": f"Issue {number}",
        "state": "open",
        "state_reason": None,
        "labels": [{"name": name} for name in labels],
        "assignees": [],
        "created_at": "2025-05-01T10:00:00Z",
        **extra,
    }


# ---------------------------------------------------------------------------- priorities and refs


def test_priority_mapping_parses_and_picks_the_most_urgent_label() -> None:
    mapping = rules.parse_priority_labels("critical=P0, high=P1,normal=P2,low=P3")
    assert mapping == (("critical", "P0"), ("high", "P1"), ("normal", "P2"), ("low", "P3"))
    assert rules.priority_of(["p3", "P1", "bug"], mapping) == "high"  # case-insensitive, most urgent wins
    assert rules.priority_of(["bug"], mapping) == "normal"  # unlabelled
    assert rules.priority_of(["priority:critical"], rules.DEFAULT_PRIORITY_LABELS) == "critical"
    assert rules.parse_priority_labels("critical=urgent") == (("critical", "urgent"),)  # partial is fine


@pytest.mark.parametrize(
    "text",
    ["", "critical", "urgent=P0", "critical=P0,critical=P1", "critical=P0,high=p0", "high="],
)
def test_priority_mapping_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        rules.parse_priority_labels(text)


def test_issue_refs() -> None:
    assert rules.parse_issue_ref("#12") == 12
    assert rules.parse_issue_ref(" 7 ") == 7
    assert rules.parse_issue_ref("https://github.com/octo-org/widgets/issues/31") == 31
    for bad in ("#0", "abc", "#12a", "12 13", ""):
        with pytest.raises(ValueError):
            rules.parse_issue_ref(bad)
    assert rules.issue_id(12) == "#12"
    own = {"number": 4, "repository_url": "https://api.github.com/repos/octo-org/widgets"}
    other = {"number": 9, "repository_url": "https://api.github.com/repos/octo-org/gadgets"}
    assert rules.dependency_ref(own, "octo-org/widgets") == "#4"
    assert rules.dependency_ref(other, "octo-org/widgets") == "octo-org/gadgets#9"


def test_repo_names() -> None:
    assert rules.check_repo("octo-org/widgets.js") == "octo-org/widgets.js"
    for bad in ("", "widgets", "a/b/c", "octo org/x", "../etc"):
        with pytest.raises(ValueError):
            rules.check_repo(bad)


# ---------------------------------------------------------------------------- markers


def test_marker_round_trip_and_no_breakout() -> None:
    hostile = "agent:x-->\n<img src=x>&"
    body = rules.render_marker("claim", {"nonce": "n1", "agent": hostile, "run": "r"})
    assert "\n" not in body and body.count("-->") == 1 and "<img" not in body
    parsed = rules.parse_marker(comment(5, body + "\nvisible text"), ME)
    assert parsed is not None and parsed.kind == "claim" and parsed.agent == hostile and parsed.comment_id == 5


def test_markers_count_only_from_trusted_authors_and_only_on_the_first_line() -> None:
    body = rules.render_marker("release", {"nonce": "n1", "reason": "exit code 1"})
    stranger = {"login": "mallory", "type": "User"}
    assert rules.parse_marker(comment(1, body, stranger, "NONE"), ME) is None
    assert rules.parse_marker(comment(1, body, stranger, "CONTRIBUTOR"), ME) is None
    for association in ("MEMBER", "COLLABORATOR", "OWNER"):  # no evidence of write access: asked separately
        assert rules.parse_marker(comment(1, body, stranger, association), ME) is None
    assert rules.parse_marker(comment(1, body, stranger, "MEMBER"), ME | {"mallory"}) is not None  # found to write
    assert rules.marker_authors([comment(1, body, stranger), comment(2, "hi", {"login": "x", "type": "User"})], ME) == {
        "mallory"
    }
    assert rules.can_write({"permission": "write", "role_name": "maintain"})
    assert not rules.can_write({"permission": "read", "role_name": "triage"})
    assert rules.parse_marker(comment(1, body), ME) is not None  # the dispatcher's own identity (the Actions bot)
    other_app = {"login": "other-app[bot]", "type": "Bot"}
    assert rules.parse_marker(comment(1, body, other_app, "NONE"), ME) is None  # another installed app
    assert rules.parse_marker(comment(1, body, other_app, "MEMBER"), ME) is None  # bots need --trusted-actor
    assert rules.parse_marker(comment(1, body, other_app, "NONE"), ME | {"other-app[bot]"}) is not None
    assert rules.parse_marker(comment(1, "> quoting:\n" + body), ME) is None
    assert rules.parse_marker(comment(1, "<!-- jit-dispatch:claim {not json} -->"), ME) is None
    assert rules.parse_marker(comment(1, '<!-- jit-dispatch:claim {"agent": "a"} -->'), ME) is None  # no nonce
    assert rules.parse_marker(comment(1, '<!-- jit-dispatch:steal {"nonce": "a"} -->'), ME) is None


def test_lowest_live_claim_wins() -> None:
    markers = rules.parse_markers([claim(30, "late"), claim(20, "early"), claim(25, "middle")], ME)
    assert rules.winning_claim(markers).nonce == "early"
    # a release (or done) marker of the same nonce ends a claim; the next lowest wins
    markers = rules.parse_markers([claim(20, "early"), claim(30, "late"), marker(40, "release", "early")], ME)
    assert rules.winning_claim(markers).nonce == "late"
    markers = rules.parse_markers([claim(20, "a"), marker(21, "done", "a")], ME)
    assert rules.winning_claim(markers) is None
    # a release marker older than the claim does not end it
    markers = rules.parse_markers([marker(10, "release", "a"), claim(20, "a")], ME)
    assert rules.winning_claim(markers).nonce == "a"


def test_a_claim_superseding_an_abandoned_one_wins() -> None:
    """Someone removed `dispatch:claimed` and another runner claimed: the old claim is dead."""
    markers = rules.parse_markers([claim(20, "old"), claim(30, "new", supersedes=("old",))], ME)
    assert [c.nonce for c in rules.live_claims(markers)] == ["new"]
    assert rules.winning_claim(markers).nonce == "new"


def test_attempts_count_failure_markers_since_the_last_reset() -> None:
    markers = rules.parse_markers(
        [
            claim(1, "a"),
            marker(2, "release", "a", reason="exit code 1"),
            claim(3, "b"),
            marker(4, "release", "b", reason="timed out after 5s"),
        ],
        ME,
    )
    assert rules.failed_attempts(markers) == 2
    twice = rules.parse_markers([marker(5, "release", "b", reason="timed out after 5s")], ME)  # a repaired settle
    assert rules.failed_attempts([*markers, *twice]) == 2
    context = rules.marker_context(markers)
    assert context["dispatch.attempts"] == "2" and context["dispatch.last_reason"] == "timed out after 5s"
    assert "dispatch.claimed_at" not in context
    assert rules.failed_attempts([*markers, *rules.parse_markers([marker(5, "reset", "u")], ME)]) == 0


def test_context_of_a_live_claim() -> None:
    data = {"nonce": "n", "agent": "agent:a", "run": "https://run", "at": "2025-06-01T12:00:00Z", "beat": "B"}
    markers = rules.parse_markers([comment(9, rules.render_marker("claim", data))], ME)
    context = rules.marker_context(markers)
    assert context["dispatch.claimed_at"] == "2025-06-01T12:00:00Z"
    assert context["dispatch.run"] == "https://run"
    assert context["dispatch.heartbeat_at"] == "B"


# ---------------------------------------------------------------------------- issues


def test_states() -> None:
    assert rules.state_of(raw_issue(1), "dispatch") == "ready"
    assert rules.state_of(raw_issue(1, ("Dispatch",)), "dispatch") == "ready"  # labels are case-insensitive
    assert rules.state_of(raw_issue(1, ("bug",)), "dispatch") == "backlog"
    assert rules.state_of(raw_issue(1, ("dispatch", "dispatch:claimed")), "dispatch") == "in_progress"
    assert rules.state_of(raw_issue(1, state="closed", state_reason="completed"), "dispatch") == "done"
    assert rules.state_of(raw_issue(1, state="closed", state_reason="not_planned"), "dispatch") == "rejected"
    assert rules.is_pull_request(raw_issue(1, pull_request={"url": "u"}))
    assert not rules.is_pull_request(raw_issue(1))


def test_people_assigned_hold_an_issue_back_bots_do_not() -> None:
    person = {"login": "octocat", "type": "User"}
    bot = {"login": "Copilot", "type": "Bot"}
    held = rules.to_issue(raw_issue(1, assignees=[bot, person]), SETTINGS)
    assert held.assignee == "github:octocat"
    assert rules.to_issue(raw_issue(1, assignees=[bot]), SETTINGS).assignee is None
    include = rules.GitHubSettings("octo-org/widgets", include_assigned=True)
    assert rules.to_issue(raw_issue(1, assignees=[person]), include).assignee is None


def test_issue_fields_and_parked_label_spelling() -> None:
    issue = rules.to_issue(raw_issue(42, ("dispatch", "Dispatch:Parked", "priority:high")), SETTINGS)
    assert issue.id == "#42" and issue.short_id == "#42" and issue.priority == "high"
    assert "dispatch:parked" in issue.labels  # canonical spelling, so selection holds it back
    assert issue.raw["number"] == 42
    result = plan([issue], {"#42": "ready"}, {}, Filters())
    assert not result.dispatchable and "parked" in result.held[0].reason


def test_order_is_priority_then_creation_then_number() -> None:
    same_second = "2025-05-01T10:00:00Z"
    raws = [
        raw_issue(100, created_at=same_second),
        raw_issue(99, created_at=same_second),
        raw_issue(7, created_at="2025-05-02T00:00:00Z"),
        raw_issue(1000, ("dispatch", "priority:critical"), created_at="2025-06-01T00:00:00Z"),
        raw_issue(5, ("dispatch", "priority:low"), created_at="2025-01-01T00:00:00Z"),
    ]
    issues = [rules.to_issue(r, SETTINGS) for r in raws]
    states = {i.id: i.state for i in issues}
    order = [i.id for i in plan(issues, states, {}, Filters()).dispatchable]
    assert order == ["#1000", "#99", "#100", "#7", "#5"]


def test_blocked_issue_is_not_available_until_its_blocker_closes() -> None:
    issue = rules.to_issue(raw_issue(3), SETTINGS, dependencies=("#1", "octo-org/gadgets#9"))
    open_states = {"#3": "ready", "#1": "ready", "octo-org/gadgets#9": "done"}
    assert not plan([issue], open_states, {}, Filters()).dispatchable
    assert plan([issue], {**open_states, "#1": "done"}, {}, Filters()).dispatchable == [issue]
    assert rules.open_blockers(raw_issue(3)) is None
    assert rules.open_blockers(raw_issue(3, issue_dependencies_summary={"blocked_by": 2, "total_blocked_by": 3})) == 2


def test_comments_fit_githubs_limit() -> None:
    head = rules.render_marker("done", {"nonce": "n"}) + "\ndone"
    assert rules.fit_comment(head, "short") == head + "\n\nshort"
    long = rules.fit_comment(head, "x" * 100_000)
    assert len(long) == rules.COMMENT_LIMIT and long.startswith(head) and long.endswith(rules.FIT_NOTE)
    marker = rules.render_marker("done", {"nonce": "n"})
    assert json.loads(marker[len("<!-- jit-dispatch:done ") : -4]) == {"nonce": "n"}


# ---------------------------------------------------------------------------- API failures and texts


NOW = 1_750_000_000.0


def test_which_failures_a_write_retries_and_how_long_github_asks_to_wait() -> None:
    assert failures.retry_wait(None, "", {}, 1, NOW) == 0.5  # no answer at all
    assert failures.retry_wait(502, "Bad Gateway", {}, 2, NOW) == 1.0
    assert failures.retry_wait(403, "secondary rate limit", {"retry-after": "3"}, 1, NOW) == 3.0
    primary = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 1800)}
    assert failures.retry_wait(403, "API rate limit exceeded", primary, 1, NOW) == 1801.0  # until the reset
    assert failures.retry_wait(403, "You have exceeded a secondary rate limit", {}, 1, NOW) == 60.0  # at least a minute
    assert failures.retry_wait(429, "", {}, 1, NOW) == 60.0
    assert failures.retry_wait(403, "Resource not accessible by integration", {}, 1, NOW) is None
    assert failures.retry_wait(422, "Validation Failed", {}, 1, NOW) is None


def test_a_limit_is_told_from_a_missing_permission_by_status_headers_and_message() -> None:
    """GitHub's rules (docs/github-locks.md#rate-limits): primary = x-ratelimit-remaining 0; secondary = a
    message saying so, or retry-after; a 403 with neither is a permission."""
    assert failures.limit_kind(
        403, "API rate limit exceeded for installation ID 1.", {"x-ratelimit-remaining": "0"}
    ) == ("primary")
    assert failures.limit_kind(403, "", {"x-ratelimit-remaining": "0"}) == "primary"  # no message at all
    assert failures.limit_kind(403, "You have exceeded a secondary rate limit.", {"x-ratelimit-remaining": "4"}) == (
        "secondary"
    )
    assert failures.limit_kind(403, "Resource not accessible by integration", {"x-ratelimit-remaining": "4"}) is None
    assert failures.limit_kind(404, "rate limit", {}) is None


@pytest.mark.parametrize(
    ("status", "message", "headers", "words"),
    [
        (401, "Bad credentials", {}, ["rejected the token", "`issues: write`"]),
        (403, "Resource not accessible by integration", {}, ["GitHub refused", "`issues: write`", "o/r"]),
        (404, "Not Found", {}, ["--github-repo o/r", "`issues: write`"]),
        (403, "You have exceeded a secondary rate limit", {"retry-after": "60"}, ["secondary rate limit", "wait 60s"]),
        (403, "You have exceeded a secondary rate limit", {}, ["secondary rate limit", "at least a minute"]),
        (429, "", {}, ["secondary rate limit", "no message"]),
        (
            403,
            "",
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 600), "x-ratelimit-limit": "1000"},
            ["primary rate limit of 1000 requests an hour is used up", "resets at 15:16:40 UTC (in 601s)"],
        ),
        (
            403,
            "Resource not accessible by integration",
            {"x-accepted-github-permissions": "contents=write"},
            ["`contents=write`"],
        ),
        (410, "Issues are disabled for this repo", {}, ["issues are disabled on o/r"]),
        (500, "boom", {}, ["GitHub API error 500: boom"]),
    ],
)
def test_errors_name_the_fix(status: int, message: str, headers: dict[str, str], words: list[str]) -> None:
    line = failures.explain("claim #1", status, message, headers, "o/r", NOW)
    assert line.startswith("claim #1: ") and "\n" not in line
    assert all(word in line for word in words)


def test_comment_texts_are_inert() -> None:
    assert "[workflow run](https://github.com/o/r/actions/runs/1)" in rules.claim_text(
        "agent:a", "https://github.com/o/r/actions/runs/1"
    )
    assert "](" not in rules.claim_text("agent:a", "https://x) [click](https://evil")
    assert "](" not in rules.claim_text("agent:a", "host:123")
    text = rules.release_text("agent:a", "command not found: <script>@team", 3, 3, parked=True)
    assert "<script>" not in text and "@team" not in text and "dispatch:parked" in text
    assert rules.done_text("agent:a", 2).endswith("(attempt 2).")
