"""State changes as pure functions over raw issues, with the events jit logs for them."""

from __future__ import annotations

import re
from copy import deepcopy

from jit_dispatch.domain import transitions
from jit_dispatch.trackers.jit.files import ISSUE_FIELDS, dumps_pretty, ordered_issue

NOW = "2026-11-23T20:00:00.123456789Z"
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


def raw_issue(**overrides: object) -> dict:
    raw = {
        "id": "7806c333-0000-4000-8000-000000000001",
        "title": "Example",
        "description": "",
        "state": "ready",
        "priority": "normal",
        "assignee": None,
        "dependencies": [],
        "gates_required": [],
        "gates_status": {},
        "context": {},
        "documents": [],
        "labels": ["type:task"],
        "created_at": "2026-02-19T19:07:20.759284139+00:00",
        "updated_at": "2026-02-19T19:07:20.759284139+00:00",
    }
    raw.update(overrides)
    return raw


def shapes(events: list[dict]) -> list[tuple]:
    return [(e["type"], e.get("from"), e.get("to")) for e in events]


def test_claim_sets_state_assignee_and_context_in_one_change() -> None:
    before = raw_issue()
    original = deepcopy(before)
    after, events = transitions.claim(before, "agent:w1", "host:1", NOW)
    assert before == original, "the input must not be mutated"
    assert (after["state"], after["assignee"], after["updated_at"]) == ("in_progress", "agent:w1", NOW)
    assert after["context"] == {"dispatch.claimed_at": NOW, "dispatch.run": "host:1", "dispatch.attempts": "0"}
    assert shapes(events) == [("issue_state_changed", "ready", "in_progress"), ("issue_claimed", None, None)]
    assert list(events[0]) == ["type", "id", "issue_id", "timestamp", "from", "to"]
    assert list(events[1]) == ["type", "id", "issue_id", "timestamp", "assignee"]
    assert events[1]["assignee"] == "agent:w1"
    assert events[0]["id"] != events[1]["id"]


def test_complete_is_done_only_when_every_required_gate_passed() -> None:
    passed = {"status": "passed", "updated_by": None, "updated_at": NOW}
    pending = {"status": "pending", "updated_by": None, "updated_at": NOW}
    claimed = raw_issue(state="in_progress", assignee="agent:w1", gates_required=["tests", "review"])

    done, events, outcome = transitions.complete({**claimed, "gates_status": {"tests": passed, "review": passed}}, NOW)
    assert (outcome, done["state"]) == ("done", "done")
    assert shapes(events) == [("issue_state_changed", "in_progress", "done"), ("issue_completed", None, None)]

    gated, events, outcome = transitions.complete(
        {**claimed, "gates_status": {"tests": passed, "review": pending}}, NOW
    )
    assert (outcome, gated["state"]) == ("gated", "gated")
    assert shapes(events) == [("issue_state_changed", "in_progress", "gated")]

    _, _, outcome = transitions.complete({**claimed, "gates_status": {"tests": passed}}, NOW)
    assert outcome == "gated", "a required gate with no status at all is not passed"


def test_release_counts_attempts_and_parks_at_the_limit() -> None:
    claimed = raw_issue(state="in_progress", assignee="agent:w1", context={"dispatch.attempts": "1", "keep": "me"})
    released, events, outcome = transitions.release(claimed, "exit code 7", 3, NOW)
    assert outcome == "released"
    assert (released["state"], released["assignee"]) == ("ready", None)
    assert released["context"] == {"dispatch.attempts": "2", "keep": "me", "dispatch.last_reason": "exit code 7"}
    assert shapes(events) == [("issue_released", None, None), ("issue_state_changed", "in_progress", "ready")]
    assert (events[0]["assignee"], events[0]["reason"]) == ("agent:w1", "exit code 7")
    assert list(events[0]) == ["type", "id", "issue_id", "timestamp", "assignee", "reason"]

    parked, _, outcome = transitions.release({**claimed, "context": {"dispatch.attempts": "2"}}, "exit code 1", 3, NOW)
    assert outcome == "parked"
    assert parked["labels"] == ["type:task"]  # parking is no label: jit validates labels
    assert parked["context"]["dispatch.parked_at"] == NOW
    assert parked["context"]["dispatch.attempts"] == "3"


def test_release_without_assignee_logs_no_empty_released_event() -> None:
    _, events, _ = transitions.release(raw_issue(state="in_progress"), "stale", 3, NOW)
    assert shapes(events) == [("issue_state_changed", "in_progress", "ready")]


def test_promote_and_ownership() -> None:
    promoted, events = transitions.promote(raw_issue(state="backlog"), NOW)
    assert promoted["state"] == "ready"
    assert shapes(events) == [("issue_state_changed", "backlog", "ready")]
    assert transitions.still_ours(raw_issue(state="in_progress", assignee="agent:a"), "agent:a")
    assert not transitions.still_ours(raw_issue(state="in_progress", assignee="agent:b"), "agent:a")
    assert not transitions.still_ours(raw_issue(state="ready", assignee=None), "agent:a")
    claimed = raw_issue(state="in_progress", assignee="agent:a", context={"dispatch.run": "h:1#x"})
    assert transitions.still_ours(claimed, "agent:a", "h:1#x")
    assert not transitions.still_ours(claimed, "agent:a", "h:1#y"), "another run of the same agent"


def test_timestamps_are_rfc3339_utc_with_nanoseconds() -> None:
    assert TS.match(transitions.format_timestamp())
    assert transitions.format_timestamp(1_700_000_000_000_000_001) == "2023-11-14T22:13:20.000000001Z"


def test_issue_layout_is_jits() -> None:
    """14 fields in struct order; unknown keys kept; pretty, raw UTF-8, no trailing newline."""
    shuffled = {"x_custom": {"a": 1}, **{k: v for k, v in reversed(list(raw_issue(title="Ünïcødé").items()))}}
    del shuffled["assignee"]
    ordered = ordered_issue(shuffled)
    assert list(ordered)[:14] == list(ISSUE_FIELDS)
    assert ordered["assignee"] is None and ordered["x_custom"] == {"a": 1}
    text = dumps_pretty(ordered)
    assert '"title": "Ünïcødé"' in text and not text.endswith("\n")
    in_order = raw_issue(x_extra=1)
    assert ordered_issue(in_order) is in_order, "a file already in jit's order keeps its own key positions"
