"""Every graph-rule kind the newest jit enforces at a transition, against the real binary
(docs/jit-format.md#graph-rules): on a copy of each store jit itself refuses (or allows) the
transition, and jit-dispatch ends the same way, the rule and jit's own words in its reason.

Rules come from jit's own examples (docs/examples/*/rules.toml of jit's repository), enforced and
keyed on `done` where the example has them apply in every state.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from delivery_runs import once
from helpers import git, make_remote, read_events, read_issue, run_cli
from jit_dispatch.trackers.jit.store import NewIssue
from real_jit import jit, jit_binary
from rule_repos import CRITERIA, Repo, assert_allowed_as_jit_allows, assert_refused_as_jit_refuses, dispatch_once

COVERED = """
[[rules]]
name = "sdd-hard-criteria-covered"
when = { type = "epic", state = "done" }
severity = "error"
enforce = true
[rules.assert.label-coverage]
criteria-section = "success_criteria"
marker = "[hard]"
id-pattern = "REQ-[0-9]+"
satisfies-namespace = "satisfies"
child-state = "done"
child-link = "dependencies"
child-type-exclude = ["planning", "breakdown"]
"""
COVERED_BY_KIND = """
[[rules]]
name = "requirements-covered"
when = { type = "epic", state = "done" }
severity = "error"
enforce = true
assert = { label-coverage = { kind = "requirement", child-state = "done", child-link = "dependencies" } }
"""  # the triple of config.toml's [item_kinds.requirement], as `jit init` writes it
SATISFIED = """
[[rules]]
name = "sdd-req-is-satisfied"
when = { type = "epic", state = "done" }
severity = "error"
enforce = true
assert = { label-reference = { from = "req", to = "satisfies", scope = "linked" } }
"""
QA_SIGNOFF = """
[[rules]]
name = "release-depends-on-qa-signoff"
when = { type = "release", state = "done" }
severity = "error"
enforce = true
assert = { dependency-shape = { target = { type = "qa-signoff" }, mode = "must", transitive = true } }
"""
VERIFIED = """
[[rules]]
name = "nyquist-criteria-verified-at-done"
when = { type = "epic", state = "done" }
severity = "error"
enforce = true
assert = { criteria-to-check = { marker = "[hard]", gate-prefix = "verify:", check-namespace = "checks" } }
"""
HYPOTHESES = """
[[rules]]
name = "research-hyp-label-matches-hypothesis"
when = { type = "goal", state = "done" }
severity = "error"
enforce = true
assert = { criteria-label-match = { namespace = "hyp", criteria-section = "hypotheses", id-pattern = 'H-[0-9]+' } }
"""
PREVIEW = """
[[rules]]
name = "sdd-coverage-preview"
when = { type = "breakdown", state = ["in_progress", "gated", "done"] }
severity = "error"
enforce = true
[rules.assert.label-coverage]
criteria-section = "success_criteria"
marker = "[hard]"
id-pattern = "REQ-[0-9]+"
satisfies-namespace = "satisfies"
child-link = "dependencies"
child-type-exclude = ["planning", "breakdown"]
container-from-label = "brackets"
"""


@dataclass(frozen=True)
class Case:
    rules: str
    build: Callable[[Repo, bool], str]  # (repo, refused?) → the issue to take


def _coverage(repo: Repo, refused: bool) -> str:
    task = repo.issue("task", "type:task", "satisfies:REQ-2" if refused else "satisfies:REQ-1", done=True)
    return repo.issue("epic", "type:epic", body=CRITERIA, deps=(task,))


def _reference(repo: Repo, refused: bool) -> str:
    task = repo.issue("task", "type:task", "satisfies:REQ-9" if refused else "satisfies:REQ-1", done=True)
    return repo.issue("epic", "type:epic", "req:REQ-1", deps=(task,))


def _shape(repo: Repo, refused: bool) -> str:
    qa = repo.issue("qa", "type:qa-signoff" if not refused else "type:task", done=True)
    middle = repo.issue("build", "type:task", deps=(qa,), done=True)  # transitive: through a task
    return repo.issue("release", "type:release", deps=(middle,))


def _verified(repo: Repo, refused: bool) -> str:
    return repo.issue("epic", "type:epic", *(() if refused else ("checks:REQ-1",)), body=CRITERIA)


def _hypotheses(repo: Repo, refused: bool) -> str:
    body = "## Hypotheses\n\n- H-1 caching halves latency\n"
    return repo.issue("goal", "type:goal", "hyp:H-7" if refused else "hyp:H-1", body=body)


CASES = {
    "label-coverage": Case(COVERED, _coverage),
    "label-coverage-kind": Case(COVERED_BY_KIND, _coverage),
    "label-reference": Case(SATISFIED, _reference),
    "dependency-shape": Case(QA_SIGNOFF, _shape),
    "criteria-to-check": Case(VERIFIED, _verified),
    "criteria-label-match": Case(HYPOTHESES, _hypotheses),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_done_jit_refuses_ends_gated_with_the_rule_and_jits_words(kind: str, tmp_path: Path) -> None:
    repo = Repo(tmp_path, CASES[kind].rules)
    assert_refused_as_jit_refuses(repo, CASES[kind].build(repo, True), tmp_path)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_done_jit_allows_ends_done(kind: str, tmp_path: Path) -> None:
    repo = Repo(tmp_path, CASES[kind].rules)
    assert_allowed_as_jit_allows(repo, CASES[kind].build(repo, False), tmp_path)


def test_a_broken_rule_that_applies_holds_the_claim_as_jit_refuses_it(tmp_path: Path) -> None:
    """A `container-from-label` pointer that is missing: jit's `config-error` blocks the claim."""
    repo = Repo(tmp_path, PREVIEW)
    epic = repo.issue("epic", "type:epic", body=CRITERIA, deps=(repo.issue("task", "satisfies:REQ-1"),))
    issue_id = repo.issue("breakdown", "type:breakdown")
    assert repo.jit("dep", "add", epic, issue_id).returncode == 0
    code, jits, target = repo.jit_blockers(issue_id, tmp_path)
    assert (code, target) == (4, "in_progress"), (code, target)
    ((rule, message),) = jits
    ready = run_cli("ready", "--all", "--json", "--jit-dir", str(repo.path / ".jit"), cwd=repo.path)
    (held,) = ready.json["held"]
    assert held["reason"] == f"rule '{rule}' refuses in_progress: {message}"
    assert dispatch_once(repo, issue_id)["outcome"] != "done"
    assert read_issue(repo.path / ".jit", issue_id)["state"] == "ready"
    # with its container named, the breakdown may start (a finding about the container blocks not it)
    other = repo.issue("breakdown", "type:breakdown", f"brackets:{epic[:8]}")
    assert repo.jit("dep", "add", epic, other).returncode == 0  # the container is in its neighbourhood
    assert repo.jit_blockers(other, tmp_path / "again")[0] == 0
    assert dispatch_once(repo, other)["outcome"] == "done"
    assert repo.jit("validate").returncode == 0


TRICKY = (  # what a CommonMark parser must read as pulldown-cmark does: ids found, missed, first of an item
    "## Hypotheses\n\n- ![H-4 pic](x.png)\n- <b>H-6</b>\n- `H-7` code\n- *H-8*\n- a\n  - H-10 nested\n"
    "- multi\n  line H-11\n\n  para H-12\n\nSetext Heading\n---\n- H-13\n\n## Hypotheses\n1. H-14\n"
)


def test_criteria_sections_are_read_as_jits_markdown_parser_reads_them(tmp_path: Path) -> None:
    repo = Repo(tmp_path, HYPOTHESES)
    labels = [f"hyp:H-{n}" for n in (4, 6, 7, 8, 10, 11, 12, 13, 14)]
    issue_id = repo.issue("goal", "type:goal", *labels, body=TRICKY)
    code, jits, _ = repo.jit_blockers(issue_id, tmp_path)
    assert code == 4 and [m.split("'")[1] for _, m in jits] == ["hyp:H-10", "hyp:H-12", "hyp:H-13"], jits
    result = dispatch_once(repo, issue_id)
    assert result["reason"] == "; ".join(f"rule '{rule}' blocks done: {message}" for rule, message in jits)


STRAY_AT_GATED = HYPOTHESES.replace('state = "done"', 'state = ["gated", "done"]')


def test_a_done_refused_whose_gated_is_refused_too_is_parked_and_the_store_validates(tmp_path: Path) -> None:
    """docs/jit-format.md#refused-gated: jit keeps the issue `in_progress`; jit-dispatch cannot hold a
    finished run's claim, and a `gated` issue the rule selects fails the newest `jit validate`."""
    repo = Repo(tmp_path, STRAY_AT_GATED)
    issue_id = _hypotheses(repo, True)
    code, jits, target = repo.jit_blockers(issue_id, tmp_path)
    assert (code, target) == (4, "done") and jits, (code, target)
    assert repo.jit("issue", "update", issue_id, "--state", "gated", where=tmp_path / "copy").returncode == 4
    result = dispatch_once(repo, issue_id)
    assert result["outcome"] == "parked", result
    ((rule, message),) = jits
    assert result["reason"] == (
        f"rule '{rule}' blocks done: {message}; rule '{rule}' blocks gated: {message}; "
        "parked: fix what the rule finds, then unpark it"
    )
    root = repo.path / ".jit"
    issue = read_issue(root, issue_id)
    assert (issue["state"], issue["assignee"]) == ("ready", None) and "dispatch.parked_at" in issue["context"]
    blocked = [(e["target"], e["rule"]) for e in read_events(root) if e["type"] == "transition_blocked"]
    assert blocked == [("done", rule), ("gated", rule)]
    validate = repo.jit("validate")
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert dispatch_once(repo, issue_id)["outcome"] == "idle"  # parked: not run again until a person unparks it


def test_a_gated_for_an_open_gate_that_a_rule_refuses_is_parked(tmp_path: Path) -> None:
    """A manual gate still open turns a `done` into `gated`; a rule refusing `gated` parks it."""
    repo = Repo(tmp_path, STRAY_AT_GATED.replace('["gated", "done"]', '"gated"'))
    issue_id = _hypotheses(repo, True)
    assert (
        repo.jit("gate", "define", "sign-off", "--title", "s", "--description", "s", "--mode", "manual").returncode == 0
    )
    assert repo.jit("gate", "add", issue_id, "sign-off").returncode == 0
    code, jits, target = repo.jit_blockers(issue_id, tmp_path)
    jit_state = read_issue(tmp_path / "copy" / ".jit", issue_id)["state"]
    assert (code, target, jit_state) == (4, "done", "in_progress") and jits, (code, target, jit_state)
    result = dispatch_once(repo, issue_id)
    assert result["outcome"] == "parked", result
    assert result["reason"].startswith(f"rule '{jits[0][0]}' blocks gated: {jits[0][1]}")
    assert read_issue(repo.path / ".jit", issue_id)["state"] == "ready"
    validate = repo.jit("validate")
    assert validate.returncode == 0, validate.stdout + validate.stderr


def test_a_delivery_whose_wait_for_the_merge_a_rule_refuses_is_parked_its_branch_kept(tmp_path: Path) -> None:
    """`--deliver branch` waits `gated` for the merge; a rule refusing `gated` parks it instead, the
    work branch recorded so the next run continues it (docs/jit-format.md#refused-gated)."""
    binary = jit_binary("newest")
    remote = make_remote(tmp_path, [NewIssue("goal", labels=("type:goal", "hyp:H-7"))])
    (only,) = remote.ids
    seed = tmp_path / "seed-rules"
    subprocess.run(["git", "clone", "-q", remote.url, str(seed)], check=True, capture_output=True)
    (seed / ".jit" / "rules.toml").write_text(HYPOTHESES.replace('state = "done"', 'state = "gated"'))
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "rules")
    git(seed, "push", "-q", "origin", "main")
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", remote.url, str(work)], check=True, capture_output=True)
    run = once(work, "echo w > w.txt")
    assert run.json["outcome"] == "parked", run.stdout + run.stderr
    message = f"label 'hyp:H-7' on issue {only[:8]} names no criterion in section 'Hypotheses' (stray or invented)"
    assert run.json["reason"].startswith(f"rule 'research-hyp-label-matches-hypothesis' blocks gated: {message}")
    issue = read_issue(work / ".jit", only)
    assert issue["state"] == "ready" and "dispatch.parked_at" in issue["context"]
    assert issue["context"]["dispatch.branch"] == run.json["branch"] and "dispatch.delivered_at" not in issue["context"]
    validate = jit(binary, work, "validate")
    assert validate.returncode == 0, validate.stdout + validate.stderr


def test_a_promotion_jit_refuses_leaves_the_dependent_backlog_as_jit_does(tmp_path: Path) -> None:
    """After a `done`, jit promotes each unblocked dependent through its rules: one a rule refuses in
    `ready` stays `backlog`, `transition_blocked` logged (found by bench/rules_differential.py).
    jit stops promoting at that refusal; jit-dispatch promotes the others (docs/jit-format.md#refused-gated)."""
    repo = Repo(tmp_path, HYPOTHESES.replace('state = "done"', 'state = "ready"'))
    issue_id = repo.issue("task", "type:task")
    refused = repo.issue("goal", "type:goal", "hyp:H-7", body="## Hypotheses\n\n- H-1 x\n", deps=(issue_id,))
    allowed = repo.issue("goal", "type:goal", "hyp:H-1", body="## Hypotheses\n\n- H-1 x\n", deps=(issue_id,))
    code, _, _ = repo.jit_blockers(issue_id, tmp_path)
    copy = tmp_path / "copy" / ".jit"
    assert (code, read_issue(copy, issue_id)["state"], read_issue(copy, refused)["state"]) == (4, "done", "backlog")
    result = dispatch_once(repo, issue_id)
    assert (result["outcome"], result["promoted"]) == ("done", [allowed]), result
    root = repo.path / ".jit"
    assert [read_issue(root, i)["state"] for i in (issue_id, refused, allowed)] == ["done", "backlog", "ready"]
    ours = [(e["issue_id"], e["target"], e["rule"]) for e in read_events(root) if e["type"] == "transition_blocked"]
    jits = [(e["issue_id"], e["target"], e["rule"]) for e in read_events(copy) if e["type"] == "transition_blocked"]
    assert ours == jits == [(refused, "ready", "research-hyp-label-matches-hypothesis")]
