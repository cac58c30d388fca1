"""The newest jit's enforced graph rules (docs/jit-format.md#graph-rules), against the real binary:
a `done` jit would refuse ends `gated` with the rule named and jit's own `transition_blocked`
event; a claim jit would refuse is held; a rules file jit cannot load holds every issue."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from helpers import read_events, read_issue, run_cli
from lease_stores import jit_as, strict_repo
from real_jit import jit, jit_binary

# jit's own example (docs/examples/fresh-evidence/rules.toml of jit's repository)
FRESH_EVIDENCE = """
[[rules]]
name = "fresh-evidence-before-done"
when = { state = "done" }
severity = "error"
enforce = true
assert = { gate-recency = { max-age-days = 7, gates = ["code-review"] } }
"""


def _store(tmp_path: Path, rules: str, count: int = 2) -> tuple[Path, Path, list[str]]:
    binary = jit_binary("newest")
    root, ids = strict_repo(tmp_path, binary, count)
    with (root / "rules.toml").open("a") as file:
        file.write(rules)
    return binary, root, ids


def _once(root: Path, *extra: str) -> dict:
    result = run_cli(
        "once", "--agent", "w1", "--command", "true", "--json", "--jit-dir", str(root), *extra, cwd=root.parent
    )
    return result.json


def test_a_done_the_rule_refuses_ends_gated_as_jit_refuses_it(tmp_path: Path) -> None:
    binary, root, (ours, theirs) = _store(tmp_path, FRESH_EVIDENCE)
    repo = root.parent
    # jit itself, on the twin issue: refused, one transition_blocked event, the issue kept in_progress
    assert jit_as(binary, repo, "agent:j", "claim", "acquire", theirs).returncode == 0
    assert jit_as(binary, repo, "agent:j", "issue", "update", theirs, "--state", "in_progress").returncode == 0
    refused = jit_as(binary, repo, "agent:j", "issue", "update", theirs, "--state", "done")
    assert refused.returncode == 4 and "fresh-evidence-before-done" in refused.stderr, refused.stderr
    jits = [e for e in read_events(root) if e["type"] == "transition_blocked"]

    result = _once(root, "--issue", ours)
    assert result["outcome"] == "gated", result
    reason = "rule 'fresh-evidence-before-done' blocks done: gate 'code-review' has no recorded result"
    assert result["reason"] == reason
    issue = read_issue(root, ours)
    assert issue["state"] == "gated" and issue["context"]["dispatch.last_reason"] == reason
    blocked = [e for e in read_events(root) if e["type"] == "transition_blocked"]
    (mine,) = [e for e in blocked if e["issue_id"] == ours]
    assert list(mine) == list(jits[0]) and (mine["target"], mine["rule"]) == ("done", jits[0]["rule"])
    validate = jit(binary, repo, "validate")
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert jit(binary, repo, "events", "tail", "-n", "50").returncode == 0


def test_a_fresh_enough_gate_result_lets_done_through_and_a_stale_one_names_its_age(tmp_path: Path) -> None:
    binary, root, (fresh, stale) = _store(tmp_path, FRESH_EVIDENCE)
    for issue_id, age in ((fresh, timedelta(days=1)), (stale, timedelta(days=10))):
        path = root / "issues" / f"{issue_id}.json"
        issue = json.loads(path.read_text())
        at = (datetime.now(UTC) - age).strftime("%Y-%m-%dT%H:%M:%S.000000000Z")
        issue["gates_status"] = {"code-review": {"status": "passed", "updated_by": "human:r", "updated_at": at}}
        path.write_text(json.dumps(issue, indent=2))
    assert _once(root, "--issue", fresh)["outcome"] == "done"
    result = _once(root, "--issue", stale)
    assert result["outcome"] == "gated" and "result is 10 days old (max 7)" in result["reason"], result
    assert jit(binary, root.parent, "validate").returncode == 0


def test_a_claim_the_rule_refuses_is_held_with_the_rule_named(tmp_path: Path) -> None:
    rule = FRESH_EVIDENCE.replace('state = "done"', 'state = "in_progress"').replace("before-done", "before-start")
    binary, root, (issue_id,) = _store(tmp_path, rule, count=1)
    held = run_cli("ready", "--all", "--json", "--jit-dir", str(root), cwd=root.parent).json["held"]
    assert [h["reason"] for h in held] == [
        "rule 'fresh-evidence-before-start' refuses in_progress: gate 'code-review' has no recorded result"
    ]
    assert _once(root)["outcome"] == "idle"
    assert read_issue(root, issue_id)["state"] == "ready"
    # jit itself refuses that claim too
    assert jit_as(binary, root.parent, "agent:j", "claim", "acquire", issue_id).returncode == 0
    assert jit_as(binary, root.parent, "agent:j", "issue", "update", issue_id, "--state", "in_progress").returncode == 4


def test_a_rule_of_a_kind_nobody_knows_holds_every_issue_with_one_line(tmp_path: Path) -> None:
    unknown = '\n[[rules]]\nname = "mystery"\nseverity = "error"\nenforce = true\nassert = { frobnicate = { x = 1 } }\n'
    _, root, (issue_id,) = _store(tmp_path, unknown, count=1)
    ready = run_cli("ready", "--all", "--json", "--jit-dir", str(root), cwd=root.parent)
    assert ready.returncode == 0, ready.stderr
    (held,) = ready.json["held"]
    assert "rule 'mystery': unknown assertion kind 'frobnicate'" in held["reason"], held
    assert "\n" not in held["reason"]
    assert _once(root)["outcome"] == "idle"
    assert read_issue(root, issue_id)["state"] == "ready"


def test_an_enforced_dependency_shape_rule_refuses_done_by_name(tmp_path: Path) -> None:
    # jit's own example (docs/examples/release-checklist), enforced
    shape = (
        '\n[[rules]]\nname = "release-depends-on-qa-signoff"\nwhen = { state = "done" }\nseverity = "error"\n'
        'enforce = true\nassert = { dependency-shape = { target = { type = "qa-signoff" }, mode = "must", '
        "transitive = true } }\n"
    )
    binary, root, (issue_id,) = _store(tmp_path, shape, count=1)
    result = _once(root)
    assert result["outcome"] == "gated" and "release-depends-on-qa-signoff" in result["reason"], result
    assert read_issue(root, issue_id)["state"] == "gated"
    assert jit(binary, root.parent, "validate").returncode == 0
