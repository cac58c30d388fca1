"""The enforced-rule evaluation of `domain/rules.py` and chrono's timestamp forms (docs/jit-format.md#graph-rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jit_dispatch.domain.rules import RulesError, blockers, parse_rules
from jit_dispatch.domain.transitions import chrono, chrono_display, chrono_time, timestamp_ns

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
RECENCY = """
[[rules]]
name = "fresh"
when = { type = "epic", state = ["gated", "done"] }
severity = "error"
enforce = true
assert = { gate-recency = { max-age-hours = 30, gates = ["review"] } }
"""


def _issue(labels: list[str], age: timedelta | None) -> dict:
    status = {}
    if age is not None:
        at = chrono_time(int((NOW - age).timestamp() * 1e9))
        status["review"] = {"status": "failed", "updated_by": "human:x", "updated_at": at}
    return {"id": "i", "state": "in_progress", "labels": labels, "gates_required": [], "gates_status": status}


def test_gate_recency_counts_whole_hours_and_any_recorded_status_as_jit() -> None:
    rules = parse_rules(RECENCY, "rules.toml")
    assert blockers(rules, _issue(["type:epic"], timedelta(hours=30, minutes=59)), "done", NOW) == []
    assert blockers(rules, _issue(["type:epic"], timedelta(hours=31)), "done", NOW) == [
        ("fresh", "gate 'review' result is 31 hours old (max 30)")
    ]
    assert blockers(rules, _issue(["type:epic"], None), "gated", NOW) == [
        ("fresh", "gate 'review' has no recorded result")
    ]
    assert blockers(rules, _issue(["type:task"], None), "done", NOW) == []  # `when.type` does not select it
    assert blockers(rules, _issue(["type:epic"], None), "in_progress", NOW) == []  # nor `when.state`


def test_rules_that_do_not_enforce_or_are_left_to_validate_never_block() -> None:
    text = RECENCY.replace("enforce = true", "enforce = false") + (
        '\n[[rules]]\nname = "u"\nseverity = "error"\nenforce = true\n'
        'assert = { label-uniqueness = { namespace = "req", scope = "all" } }\n'
        '\n[[rules]]\nname = "s"\nseverity = "error"\nenforce = true\n'
        'assert = { require-section = { heading = "X" } }\n'
    )
    assert blockers(parse_rules(text, "rules.toml"), _issue(["type:epic"], None), "done", NOW) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[rules]]\nname = 'x'\nassert = { nope = 1 }\n", "rules.toml: rule 'x': unknown assertion kind 'nope'"),
        ("[[rules]]\nassert = { json-schema = 'a' }\n", "rules.toml: rule #1: missing 'name'"),
        ("[[rules]]\nname = 'x'\nwhen = { state = 'doing' }\nassert = { json-schema = 'a' }\n", "'when.state' must be"),
        ("[[rules\n", "rules.toml: not valid TOML"),
    ],
)
def test_a_rules_file_jit_cannot_load_is_one_line_naming_the_rule(text: str, message: str) -> None:
    with pytest.raises(RulesError) as raised:
        parse_rules(text, "rules.toml")
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_timestamps_in_chronos_forms() -> None:
    ns = timestamp_ns("2026-12-07T15:12:42.663028663Z")
    assert ns is not None and chrono_time(ns) == "2026-12-07T15:12:42.663028663Z"
    assert chrono_display(ns) == "2026-12-07 15:12:42.663028663 UTC"
    whole = timestamp_ns("2026-12-07T15:12:42+00:00")
    assert whole is not None and chrono(whole + 500_000_000, "T", "+00:00") == "2026-12-07T15:12:42.500+00:00"
    assert chrono_time(whole + 1_000) == "2026-12-07T15:12:42.000001Z" and chrono_time(whole) == "2026-12-07T15:12:42Z"
    assert timestamp_ns("yesterday") is None
