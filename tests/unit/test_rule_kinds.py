"""The pieces of jit's graph rules that need no store: body sections, the neighbourhood, load errors
(docs/jit-format.md#graph-rules). The kinds themselves are compared with the real jit in
tests/integration/test_jit_rule_kinds.py."""

from __future__ import annotations

import pytest

from jit_dispatch.domain.criteria import sections, slugify
from jit_dispatch.domain.graph_rules import neighbourhood
from jit_dispatch.domain.rules import RulesError, parse_rules


def test_sections_hold_top_level_items_merged_by_slug_as_jits_markdown_parser() -> None:
    body = (
        "Intro\n\n- before any heading\n\n## Success Criteria\n\n- [hard] REQ-1 *works*\n  wrapped `code`\n"
        "  - REQ-9 nested\n1. REQ-2 ordered\n\n# Success -- criteria!\n\n- REQ-3\n"
    )
    assert sections(body) == {"success_criteria": ("[hard] REQ-1 works wrapped code", "REQ-2 ordered", "REQ-3")}
    assert slugify("  Über  die Hypothesen: v2 ") == "über_die_hypothesen_v2"


def test_the_neighbourhood_follows_dependencies_and_dependents_transitively() -> None:
    issues = {
        "a": {"id": "a", "dependencies": ["b"]},
        "b": {"id": "b", "dependencies": ["c"]},
        "c": {"id": "c", "dependencies": []},
        "d": {"id": "d", "dependencies": ["a"]},
        "e": {"id": "e", "dependencies": ["d"]},
        "x": {"id": "x", "dependencies": ["c"]},  # shares a dependency only: not in a's neighbourhood
    }
    projected = {**issues["a"], "state": "done"}
    assert [i["id"] for i in neighbourhood(issues, projected)] == ["a", "b", "c", "d", "e"]
    assert neighbourhood(issues, projected)[0] is projected


@pytest.mark.parametrize(
    ("assertion", "message"),
    [
        ("gate-recency = { max-age-days = 1, max-age-hours = 2 }", "not both"),
        ("gate-recency = { gates = ['x'] }", "requires 'max-age-days' or 'max-age-hours'"),
        ("gate-recency = { max-age-hours = 0 }", "greater than zero"),
        ("criteria-to-check = { marker = '[hard]' }", "at least one of 'gate-prefix' or 'check-namespace'"),
        ("criteria-label-match = { id-pattern = 'X' }", "missing field 'namespace'"),
        ("criteria-label-match = { namespace = 'req', id-pattern = '(' }", "invalid 'id-pattern'"),
        ("criteria-to-check = { gate-prefix = 'v:', typo = 1 }", "unknown field 'typo'"),
        # found by bench/rules_differential.py: serde-strict shapes jit refuses to load
        ("label-uniqueness = { namespace = 'satisfies' }", "missing field 'scope'"),
        ("label-uniqueness = { namespace = 'req', scope = 'linked' }", 'does not support scope = "linked"'),
        ("label-uniqueness = { namespace = 'req', scope = 'global' }", "'scope' must be \"all\""),
        ("type-hierarchy = { kind = 'flat' }", "must be 'orphan-leaf' or 'strategic-consistency'"),
        ("require-label = { min = 1 }", "missing field 'label'"),
        ("require-label = { label = 'x:*', min = -1 }", "'min' must be a whole number"),
        ("require-section = { title = 'Risks' }", "unknown field 'title'"),
        ("require-doc-type = { }", "missing field 'doc-type'"),
        ("label-value-pattern = { namespace = 'x' }", "missing field 'regex'"),
        ("criteria-label-match = { namespace = '' }", "'namespace' must be a non-empty string"),
        ("label-coverage = { child-state = 'finished' }", "'finished'"),
    ],
)
def test_assertions_jit_refuses_to_load_name_the_rule(assertion: str, message: str) -> None:
    with pytest.raises(RulesError, match="rule 'r'") as caught:
        parse_rules(f"[[rules]]\nname = 'r'\nassert = {{ {assertion} }}\n", "rules.toml")
    assert message in str(caught.value)


def test_an_enforced_checker_command_is_refused_at_load_as_jit_does() -> None:
    text = "[[rules]]\nname = 'r'\nenforce = true\nassert = { checker-command = { command = 'true' } }\n"
    with pytest.raises(RulesError, match="rule 'r': checker-command rules cannot block writes"):
        parse_rules(text, "rules.toml")
    assert parse_rules(text.replace("true\nassert", "false\nassert"), "rules.toml")[0].kind == "checker-command"


SHAPE = """
[[rules]]
name = "shape"
when = { type = "release", state = "done" }
severity = "error"
enforce = true
assert = { dependency-shape = { target = { type = "qa" }, mode = "%s" } }
"""


def test_a_broken_config_blocks_and_a_finding_on_another_issue_does_not() -> None:
    from datetime import UTC, datetime

    from jit_dispatch.domain.rules import blockers

    now = datetime(2026, 12, 7, tzinfo=UTC)
    release = {"id": "r" * 36, "state": "in_progress", "labels": ["type:release"], "dependencies": ["o" * 36]}
    other = {"id": "o" * 36, "state": "done", "labels": ["type:release"], "dependencies": []}  # lacks a qa too

    def around(issue: dict) -> list[dict]:
        return [issue, other]

    found = blockers(parse_rules(SHAPE % "must", "rules.toml"), release, "done", now, around)
    assert found == [("shape", "issue rrrrrrrr must depend on an issue matching the target selector but does not")]
    broken = blockers(parse_rules(SHAPE % "may", "rules.toml"), release, "done", now, around)
    assert broken == [
        (
            "shape",
            "rule 'shape' is misconfigured: config error: key 'mode' must be 'must' or 'should', got 'may'; "
            "fix the rule or use --force",
        )
    ]


def test_one_issues_config_error_leaves_the_others_findings_as_jit_goes_issue_by_issue() -> None:
    from datetime import UTC, datetime

    from jit_dispatch.domain.rules import blockers

    rules = parse_rules(
        "[[rules]]\nname = 'c'\nwhen = { type = 'epic', state = 'done' }\nseverity = 'error'\nenforce = true\n"
        "assert = { criteria-to-check = { gate-prefix = 'v{x}:' } }\n",
        "rules.toml",
    )
    epic = {"id": "e" * 36, "state": "in_progress", "labels": ["type:epic"], "dependencies": ["h" * 36],
            "description": "## Success Criteria\n\n- REQ-1 a\n"}  # fmt: skip
    html = {"id": "h" * 36, "state": "done", "labels": ["type:epic"], "dependencies": [], "content_format": "html"}
    found = blockers(rules, epic, "done", datetime(2026, 1, 1, tzinfo=UTC), lambda issue: [issue, html])
    assert [message.split(":")[0] for _, message in found] == [
        "criterion 'REQ-1' has no verification",
        "rule 'c' is misconfigured",
    ]
    assert found[0][1].endswith("expected gate 'v{x}:REQ-1'")


def test_a_coverage_kind_expands_to_its_declared_triple_or_names_the_rule() -> None:
    text = "[[rules]]\nname = 'k'\nassert = { label-coverage = { kind = 'risk', child-state = 'done' } }\n"
    kinds = {"risk": {"section": "risks", "id-pattern": "RISK-[0-9]+", "markers": []}}
    (rule,) = parse_rules(text, "rules.toml", kinds)
    assert rule.config == {"child-state": "done", "criteria-section": "risks", "id-pattern": "RISK-[0-9]+"}
    with pytest.raises(RulesError, match="rule 'k': label-coverage kind 'risk' is not declared"):
        parse_rules(text, "rules.toml", {})
    inert = text.replace("kind = 'risk'", "kind = 'risk', marker = '[hard]'")
    assert parse_rules(inert, "rules.toml")[0].config["kind"] == "risk"  # beside a triple key: left alone
