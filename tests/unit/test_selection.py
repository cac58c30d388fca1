"""Readiness, holds, filters and order (docs/architecture.md#select): pure functions, and the real stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import make_issue
from jit_dispatch.domain.issue import Gate, Issue
from jit_dispatch.domain.selection import (
    Filters,
    blocking_dependencies,
    dispatch_order,
    label_matches,
    plan,
    resolve_issue_id,
)
from jit_dispatch.trackers.jit.store import JitStore


def ids(issues: list[Issue]) -> list[str]:
    return [i.id for i in issues]


def test_order_is_priority_then_age_then_id() -> None:
    issues = [
        make_issue("b-normal-old", minutes=0),
        make_issue("a-low", priority="low", minutes=-100),
        make_issue("c-high-new", priority="high", minutes=50),
        make_issue("d-high-old", priority="high", minutes=10),
        make_issue("a-normal-old", minutes=0),
        make_issue("e-critical", priority="critical", minutes=99),
    ]
    result = plan(issues, {}, {}, Filters())
    assert ids(result.dispatchable) == [
        "e-critical",
        "d-high-old",
        "c-high-new",
        "a-normal-old",
        "b-normal-old",
        "a-low",
    ]
    assert sorted(issues, key=dispatch_order) == sorted(reversed(issues), key=dispatch_order)


def test_readiness_follows_jit_available() -> None:
    states = {"done-dep": "done", "rejected-dep": "rejected", "open-dep": "in_progress"}
    issues = [
        make_issue("ok", deps=("done-dep", "rejected-dep")),
        make_issue("blocked", deps=("done-dep", "open-dep")),
        make_issue("dangling", deps=("missing-dep",)),
        make_issue("assigned", assignee="agent:x"),
        make_issue("backlog", state="backlog"),
        make_issue("gated", state="gated"),
    ]
    result = plan(issues, states, {}, Filters())
    assert ids(result.dispatchable) == ["ok"]
    assert result.held == []
    assert blocking_dependencies(issues[2], states) == ["missing-dep"]


def test_manual_precheck_and_parked_label_hold_an_issue_with_a_reason() -> None:
    gates = {
        "tdd": Gate("tdd", "precheck", "manual"),
        "lint": Gate(
            "lint",
            "precheck",
            "auto",
            definition={"checker": {"type": "exec", "command": "true", "timeout_seconds": 9}},
        ),
        "review": Gate("review", "postcheck", "manual"),
    }
    issues = [
        make_issue("needs-tdd", gates=("tdd", "review")),
        make_issue("tdd-passed", gates=("tdd",), passed=("tdd",)),
        make_issue("auto-only", gates=("lint", "review")),
        make_issue("parked", labels=("dispatch:parked",)),
    ]
    result = plan(issues, {}, gates, Filters())
    assert ids(result.dispatchable) == ["auto-only", "tdd-passed"]
    reasons = {h.issue.id: h.reason for h in result.held}
    assert reasons["needs-tdd"] == "manual precheck not passed: tdd"
    assert reasons["parked"].startswith("parked: ")  # the label of older versions still parks
    # A gate that cannot run as jit would run it holds the issue, unless gates are left to jit.
    broken = {**gates, "lint": Gate("lint", "precheck", "auto")}
    held = plan(issues, {}, broken, Filters()).held
    assert {h.issue.id: h.reason for h in held}["auto-only"] == "gate 'lint' is auto but has no checker"
    assert "auto-only" in ids(plan(issues, {}, broken, Filters(), run_gates=False).dispatchable)


def test_filters() -> None:
    issues = [
        make_issue("be", labels=("component:backend", "type:task")),
        make_issue("fe", labels=("component:frontend",), priority="high"),
        make_issue("low", labels=("type:task",), priority="low"),
    ]

    def pick(**kwargs: object) -> list[str]:
        return sorted(ids(plan(issues, {}, {}, Filters(**kwargs)).dispatchable))  # type: ignore[arg-type]

    assert pick(labels=("component:*",)) == ["be", "fe"]
    assert pick(labels=("component:*", "type:task")) == ["be"]
    assert pick(exclude_labels=("component:frontend",)) == ["be", "low"]
    assert pick(min_priority="normal") == ["be", "fe"]
    assert pick(min_priority="high") == ["fe"]
    assert pick(issue_id="low") == ["low"]


def test_label_matches() -> None:
    assert label_matches("epic:*", ["epic:auth"])
    assert not label_matches("epic:*", ["epics:auth"])
    assert label_matches("type:bug", ["type:bug"])
    assert not label_matches("type:bug", ["type:bugfix"])


def test_resolve_issue_id() -> None:
    known = ["0587a73a-be52-465c-a2f2-dcac1cb4ebe6", "05880000-0000-4000-8000-000000000000"]
    assert resolve_issue_id("0587A73A", known) == known[0]
    assert resolve_issue_id(known[0], known) == known[0]
    assert resolve_issue_id("0587a73abe52", known) == known[0]
    with pytest.raises(ValueError, match="shorter than 4"):
        resolve_issue_id("058", known)
    with pytest.raises(ValueError, match="ambiguous"):
        resolve_issue_id("0587", [*known, "05870000-0000-4000-8000-000000000000"])
    with pytest.raises(ValueError, match="no issue"):
        resolve_issue_id("ffff", known)


def jit_available_independently(root: Path) -> tuple[set[str], dict[str, str]]:
    """jit `query available` recomputed straight from the files, without the project's code."""
    index = json.loads((root / "index.json").read_text())
    live = [i for i in index["all_ids"] if i not in set(index.get("deleted_ids", []))]
    issues = {}
    for issue_id in live:
        try:
            issues[issue_id] = json.loads((root / "issues" / f"{issue_id}.json").read_text())
        except (OSError, ValueError):
            continue
    available = {
        i
        for i, raw in issues.items()
        if raw["state"] == "ready"
        and raw.get("assignee") is None
        and all(d in issues and issues[d]["state"] in ("done", "rejected") for d in raw["dependencies"])
    }
    priorities = {i: issues[i]["priority"] for i in available}
    return available, priorities


@pytest.mark.parametrize("fixture_name", ["seed_store", "latest_store"])
def test_selection_matches_jit_on_real_stores(fixture_name: str, request: pytest.FixtureRequest) -> None:
    root: Path = request.getfixturevalue(fixture_name)
    store = JitStore.open(root)
    snapshot = store.snapshot()
    assert snapshot.warnings == []
    result = plan(snapshot.issues, snapshot.states, snapshot.gates, Filters())
    expected, priorities = jit_available_independently(root)
    assert {i.id for i in result.dispatchable} | {h.issue.id for h in result.held} == expected
    ranks = ["critical", "high", "normal", "low"]
    order = [ranks.index(priorities[i.id]) for i in result.dispatchable]
    assert order == sorted(order)
    # Held back only for the reasons jit would refuse a claim (the manual precheck tdd-reminder).
    assert all(h.reason == "manual precheck not passed: tdd-reminder" for h in result.held)
    assert snapshot.states == {
        i: json.loads((root / "issues" / f"{i}.json").read_text())["state"] for i in snapshot.states
    }


def test_seed_store_figures(seed_store: Path) -> None:
    """The derived seed store: 7 available in the seed store, 2 behind the manual precheck."""
    snapshot = JitStore.open(seed_store).snapshot()
    result = plan(snapshot.issues, snapshot.states, snapshot.gates, Filters())
    assert (len(result.dispatchable), len(result.held)) == (5, 2)
    assert result.dispatchable[0].priority == "critical"
    again = plan(snapshot.issues, snapshot.states, snapshot.gates, Filters())
    assert ids(again.dispatchable) == ids(result.dispatchable)
