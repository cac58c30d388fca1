"""Every local rule kind the newest jit checks when it writes an issue, against the real binary
(docs/jit-format.md#local-rules): on a copy of each store jit itself refuses (or allows) the
`done`, and jit-dispatch ends the same way, the rule and jit's own words in its reason."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import clean_env, read_events, read_issue
from jit_dispatch.trackers.jit.rules import StoreRules
from rule_repos import CRITERIA, Repo, assert_allowed_as_jit_allows, assert_refused_as_jit_refuses, dispatch_once


def _local(name: str, assertion: str, when: str = 'type = "task", state = "done"') -> str:
    """An enforced local rule written for `done`: jit checks it when it writes the issue (exit 4, no
    event); `jit validate` passes before (the rule selects no ready issue) and after a `gated`."""
    return (
        f'\n[[rules]]\nname = "{name}"\nwhen = {{ {when} }}\nseverity = "error"\nenforce = true\nassert = {assertion}\n'
    )


RESOLVED = _local("done-needs-resolution", '{ require-label = { label = "resolution:*", min = 1 } }')
ONE_CORE = _local("one-core-component", '{ require-label = { label = "component:core", max = 1 } }')
REQ_FORMAT = _local("req-format", '{ label-value-pattern = { namespace = "req", regex = "^REQ-[0-9]+$" } }')
SECTION = _local("needs-criteria", '{ require-section = { heading = "Success Criteria" } }')
DESIGN = _local("needs-design", '{ require-doc-type = { doc-type = "design" } }')
SCHEMA = _local("team-and-short", '{ json-schema = "schemas/team.json" }')
TEAM_SCHEMA = {"type": "object", "properties": {"labels": {"required": ["team"]}, "raw_labels": {"maxItems": 3}}}


def _resolved(repo: Repo, refused: bool) -> str:
    return repo.issue("task", "type:task", *(() if refused else ("resolution:fixed",)))


def _core(repo: Repo, refused: bool) -> str:
    return repo.issue("task", "type:task", "component:ui" if refused else "component:core")


def _req_format(repo: Repo, refused: bool) -> str:
    return repo.issue("task", "type:task", "req:REQ-1", "req:bad.one" if refused else "req:REQ-2")


def _section(repo: Repo, refused: bool) -> str:
    return repo.issue("task", "type:task", body="## Success Criteria\n\nprose only\n" if refused else CRITERIA)


def _misspelt(repo: Repo, refused: bool) -> str:
    return repo.issue("task", "type:task", body="## Sucess Criteria\n\n- REQ-1\n" if refused else CRITERIA)


def _design(repo: Repo, refused: bool) -> str:
    issue_id = repo.issue("task", "type:task")
    (repo.path / "design.md").write_text("# Design\n")
    doc_type = "notes" if refused else "design"
    assert repo.jit("doc", "add", issue_id, "design.md", "--doc-type", doc_type, "--skip-scan").returncode == 0
    return issue_id


def _schema(repo: Repo, refused: bool) -> str:
    (repo.path / ".jit" / "schemas").mkdir(exist_ok=True)
    (repo.path / ".jit" / "schemas" / "team.json").write_text(json.dumps(TEAM_SCHEMA))
    if refused:
        return repo.issue("task", "type:task", "component:a", "component:b", "epic:x")
    return repo.issue("task", "type:task", "team:core")


CASES: dict[str, tuple[str, Callable[[Repo, bool], str]]] = {
    "require-label": (RESOLVED, _resolved),
    "require-label-exact": (ONE_CORE, _core),
    "label-value-pattern": (REQ_FORMAT, _req_format),
    "require-section": (SECTION, _section),
    "require-section-misspelt": (SECTION, _misspelt),
    "require-doc-type": (DESIGN, _design),
    "json-schema": (SCHEMA, _schema),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_done_jit_refuses_ends_gated_with_the_rule_and_jits_words(kind: str, tmp_path: Path) -> None:
    rules, build = CASES[kind]
    repo = Repo(tmp_path, rules)
    assert_refused_as_jit_refuses(repo, build(repo, True), tmp_path)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_done_jit_allows_ends_done(kind: str, tmp_path: Path) -> None:
    rules, build = CASES[kind]
    repo = Repo(tmp_path, rules)
    assert_allowed_as_jit_allows(repo, build(repo, False), tmp_path)


@pytest.mark.parametrize("satisfied", [False, True])
def test_a_local_rule_is_judged_before_the_graph_rules(satisfied: bool, tmp_path: Path) -> None:
    """jit validates the written issue before the transition: a local refusal (exit 4) logs no
    `transition_blocked` and no graph rule is reached; a satisfied one lets the graph rules judge."""
    recency = 'assert = { gate-recency = { max-age-days = 7, gates = ["code-review"] } }'
    graph = RESOLVED.replace("done-needs-resolution", "fresh").split("assert =")[0] + recency + "\n"
    repo = Repo(tmp_path, RESOLVED + graph)
    issue_id = _resolved(repo, not satisfied)
    code, jits, target = repo.jit_blockers(issue_id, tmp_path)
    assert (code, target, [rule for rule, _ in jits]) == (
        4,
        "done",
        ["fresh" if satisfied else "done-needs-resolution"],
    )
    result = dispatch_once(repo, issue_id)
    assert result["outcome"] == "gated", result
    assert result["reason"] == "; ".join(f"rule '{rule}' blocks done: {message}" for rule, message in jits)
    blocked = [(e["target"], e["rule"]) for e in read_events(repo.path / ".jit") if e["type"] == "transition_blocked"]
    assert blocked == [(e["target"], e["rule"]) for e in repo.jits_events if e["type"] == "transition_blocked"]
    assert blocked == ([("done", "fresh")] if satisfied else [])
    assert repo.jit("validate").returncode == 0


def test_a_local_rule_refusing_done_and_gated_parks_without_an_event(tmp_path: Path) -> None:
    """A local rule written for `done` and `gated`: jit refuses both writes (exit 4, no event);
    jit-dispatch parks the issue, both named in jit's words, and the newest `jit validate` passes."""
    repo = Repo(tmp_path, RESOLVED.replace('state = "done"', 'state = ["gated", "done"]'))
    issue_id = _resolved(repo, True)
    code, jits, target = repo.jit_blockers(issue_id, tmp_path)
    assert (code, target) == (4, "done") and jits, (code, target)
    again = repo.jit("issue", "update", issue_id, "--state", "gated", where=tmp_path / "copy")
    assert again.returncode == 4 and not [e for e in read_events(tmp_path / "copy" / ".jit") if "rule" in e]
    result = dispatch_once(repo, issue_id)
    ((rule, message),) = jits
    assert (result["outcome"], result["reason"]) == (
        "parked",
        f"rule '{rule}' blocks done: {message}; rule '{rule}' blocks gated: {message}; "
        "parked: fix what the rule finds, then unpark it",
    )
    root = repo.path / ".jit"
    assert read_issue(root, issue_id)["state"] == "ready"
    assert not [e for e in read_events(root) if e["type"] == "transition_blocked"]
    validate = repo.jit("validate")
    assert validate.returncode == 0, validate.stdout + validate.stderr


PROBE = """\
import json, sys
from jit_dispatch.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": sorted(m for m in ("jsonschema", "markdown_it") if m in sys.modules)}))
"""


@pytest.mark.parametrize("selected", [False, True])
def test_jsonschema_is_imported_only_when_an_enforced_local_rule_applies(selected: bool, tmp_path: Path) -> None:
    """The README's hot path: a store whose rules select none of the run's issue pays no import."""
    repo = Repo(tmp_path, SECTION.replace('type = "task"', f'type = "{"task" if selected else "epic"}"'))
    issue_id = repo.issue("task", "type:task", body=CRITERIA)
    args = ("once", "--agent", "w1", "--command", "true", "--jit-dir", str(repo.path / ".jit"), "--issue", issue_id)
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=repo.path, env=clean_env(),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "loaded": ["jsonschema", "markdown_it"] if selected else []}, proc.stderr
    assert read_issue(repo.path / ".jit", issue_id)["state"] == "done"


def test_a_changed_schema_file_is_read_again_as_jit_reads_it_on_every_write(tmp_path: Path) -> None:
    """A pool lives long; jit reads `.jit/schemas/*.json` afresh at each write, so a fixed schema
    must not keep refusing (nor a broken one keep passing) until `rules.toml` changes."""
    repo = Repo(tmp_path, SCHEMA)
    issue_id = _schema(repo, True)
    root = repo.path / ".jit"
    store_rules = StoreRules(root, lambda: {})
    raw = read_issue(root, issue_id)
    assert store_rules.blockers(raw, "done")  # no `team:` label
    (root / "schemas" / "team.json").write_text(json.dumps({"type": "object"}))
    assert store_rules.blockers(raw, "done") == []
    assert repo.jit("issue", "update", issue_id, "--state", "done").returncode == 0  # as jit now judges it
