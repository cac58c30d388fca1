"""jit's projection, desugaring and finding messages for local rules (docs/jit-format.md#local-rules).

The expected words are the newest jit's own (`jit issue update --state done`, exit 4), copied from
its refusals; tests/integration/test_jit_local_rules.py compares with the binary itself."""

from __future__ import annotations

from dataclasses import replace

import pytest

from jit_dispatch.domain import local_rules, rules
from jit_dispatch.domain.schema_messages import findings, humanize

RAW = {
    "id": "9f0d4f78-db5a-4511-8c75-01bab4ed707c",
    "state": "in_progress",
    "priority": "normal",
    "labels": ["type:task", "req:A", "req:bad.one", "NoColon", "type:bug"],
    "description": "## Success Criteria\n\nprose\n\n## Other\n- x\n\n## Success  criteria\n- y\n",
    "documents": [{"path": "a.md", "doc_type": "notes"}, {"path": "b.md", "doc_type": "notes"}, {"path": "c.md"}],
}


def _rule(kind: str, config: object, when: str = 'state = "done"') -> rules.Rule:
    text = f'[[rules]]\nname = "r"\nwhen = {{ {when} }}\nseverity = "error"\nenforce = true\n'
    (rule,) = rules.parse_rules(text + f"[rules.assert]\n{kind} = {_toml(config)}\n", "rules.toml")
    return rule


def _toml(value: object) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return f'"{value}"' if isinstance(value, str) else str(value)


def _messages(kind: str, config: object) -> list[str]:
    return [text for _, text in local_rules.blockers([_rule(kind, config)], RAW, "done", lambda: "markdown")]


def test_the_projection_holds_only_what_rules_can_see() -> None:
    assert local_rules.project(RAW, "done") == {
        "type": "task",  # the first type: label
        "state": "done",
        "priority": "normal",
        "labels": {"req": ["A", "bad.one"], "type": ["task", "bug"]},  # valid labels only, by namespace
        "raw_labels": RAW["labels"],
        "doc_types": ["notes"],
    }
    assert local_rules.sections_view(RAW, "markdown") == {
        "other": {"heading": "Other", "level": 2, "items": ["x"]},
        "success_criteria": {"heading": "Success Criteria", "level": 2, "items": ["y"]},  # merged, first kept
    }


@pytest.mark.parametrize(
    ("kind", "config", "message"),
    [
        ("require-label", {"label": "req:*", "min": 3}, 'at labels.req: ["A","bad.one"] has less than 3 items'),
        ("require-label", {"label": "req:*", "max": 1}, 'at labels.req: ["A","bad.one"] has more than 1 item'),
        (
            "require-label",
            {"label": "req:A", "max": 0},
            "at labels.req: items must include at least one matching entry",
        ),
        ("require-label", {"label": "zz:*"}, 'at labels: "zz" is a required property'),
        (
            "label-value-pattern",
            {"namespace": "req", "regex": "^[A-Z]+$"},
            'at labels.req.1: "bad.one" is not valid under the given pattern (expected to match ^[A-Z]+$)',
        ),
        (
            "require-section",
            {"heading": "Succes Criteria"},
            "at sections: \"succes_criteria\" is a required property; did you mean 'Success Criteria'?",
        ),
        ("require-doc-type", {"doc-type": "design"}, "at doc_types: items must include at least one matching entry"),
    ],
)
def test_a_refused_shorthand_is_worded_as_jit_words_it(kind: str, config: object, message: str) -> None:
    assert _messages(kind, config) == [f"rule 'r' blocks done: {message}"]


def test_an_empty_section_is_named_by_its_heading() -> None:
    raw = {**RAW, "description": "## Success Criteria\n\nprose\n"}
    found = local_rules.blockers(
        [_rule("require-section", {"heading": "Success Criteria"})], raw, "done", lambda: "markdown"
    )
    assert found == [
        (
            None,
            "rule 'r' blocks done: at sections.success_criteria.items: section 'Success Criteria' has no list "
            "items; items must be Markdown bullets (lines starting with '- ')",
        )
    ]


def test_satisfied_unselected_and_unenforced_rules_refuse_nothing() -> None:
    assert _messages("require-label", {"label": "req:*", "min": 2}) == []
    unselected = _rule("require-label", {"label": "zz:*"}, 'type = "epic"')
    assert local_rules.blockers([unselected], RAW, "done", lambda: "markdown") == []
    read: list[str] = []  # nor is the body parsed, nor config.toml read, when no rule needs sections

    def repo_format() -> str:
        read.append("config")
        return "markdown"

    assert local_rules.blockers([_rule("require-label", {"label": "zz:*"})], RAW, "done", repo_format)
    assert read == []


def test_a_json_schema_rule_uses_its_loaded_schema_and_the_crates_words() -> None:
    rule = _rule("json-schema", "schemas/x.json")
    schema = {"properties": {"priority": {"enum": ["high"]}, "type": {"const": "epic"}, "state": {"type": "integer"}}}
    found = local_rules.blockers([replace(rule, schema=schema)], RAW, "done", lambda: "markdown")
    assert [text.removeprefix("rule 'r' blocks done: ") for _, text in found] == [
        'at priority: "normal" is not one of ["high"]',  # in jit's (sorted) order
        'at state: "done" is not of type "integer"',
        'at type: "epic" was expected',
    ]


@pytest.mark.parametrize("reference", ["/abs/x.json", "schemas/../x.json", "other/x.json", "schemas/x.toml"])
def test_a_schema_reference_jit_refuses_to_load_is_refused(reference: str) -> None:
    with pytest.raises(rules.RulesError, match="invalid schema reference"):
        _rule("json-schema", reference)


def test_a_schema_that_does_not_compile_fails_the_write() -> None:
    rule = replace(_rule("json-schema", "schemas/x.json"), schema={"type": 12})
    ((name, text),) = local_rules.blockers([rule], RAW, "done", lambda: "markdown")
    assert name is None and text.startswith("rule evaluation failed: rule 'r': ")


def test_invisible_characters_of_a_regex_are_shown() -> None:
    assert humanize("a\tb\u200bc\x01") == "a\\tb\\u{200b}c\\u{0001}"
    assert findings({"type": "string"}, 3) == ['3 is not of type "string"']
