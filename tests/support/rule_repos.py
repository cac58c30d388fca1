"""A git repository whose store the newest jit made, with rules, for judging jit-dispatch's rule
evaluation against the binary (tests/integration/test_jit_rule_kinds.py, test_jit_local_rules.py):
jit takes an issue to `done` on a copy, jit-dispatch runs it on the original, and both end alike."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from helpers import read_events, read_issue, run_cli
from lease_stores import GIT
from real_jit import jit, jit_binary

CRITERIA = "## Success Criteria\n\n- [hard] REQ-1 it works\n- REQ-2 nice to have\n"


class Repo:
    """A git repository whose store the newest jit made (leases not enforced: rules only)."""

    def __init__(self, tmp_path: Path, rules: str) -> None:
        self.binary = jit_binary("newest")
        self.path = tmp_path / "repo"
        subprocess.run(["git", "init", "-q", "-b", "main", str(self.path)], check=True)
        subprocess.run(["git", "-C", str(self.path), "commit", "-q", "--allow-empty", "-m", "i"], check=True, env=GIT)
        assert self.jit("init").returncode == 0
        (self.path / ".jit" / "rules.toml").write_text(rules)  # present, it is all jit enforces

    def jit(self, *args: str, where: Path | None = None) -> subprocess.CompletedProcess[str]:
        return jit(self.binary, where or self.path, *args)

    def issue(self, title: str, *labels: str, body: str = "", deps: tuple[str, ...] = (), done: bool = False) -> str:
        args = ["issue", "create", "--title", title, "-d", body, "--json"]
        made = self.jit(*args, *[a for label in labels for a in ("--label", label)])
        assert made.returncode == 0, made.stderr
        issue_id = str(json.loads(made.stdout)["id"])
        for dep in deps:
            assert self.jit("dep", "add", issue_id, dep).returncode == 0
        if done:
            finished = self.jit("issue", "update", issue_id, "--state", "done")
            assert finished.returncode == 0, finished.stderr
        return issue_id

    def jit_blockers(self, issue_id: str, tmp_path: Path) -> tuple[int, list[tuple[str, str]], str]:
        """On a copy of the repository, jit itself takes the issue to done: (its exit code, its
        blockers as (rule, message), the target it refused); its events in `self.jits_events`."""
        copy = tmp_path / "copy"
        shutil.copytree(self.path, copy, symlinks=True)
        self.jits_events = read_events(copy / ".jit")
        for target in ("in_progress", "done"):
            moved = self.jit("issue", "update", issue_id, "--state", target, where=copy)
            if moved.returncode != 0:
                found = re.findall(r"^  - \[([^\]]+)\] (.*)$", moved.stderr, re.MULTILINE)
                self.jits_events = read_events(copy / ".jit")
                return moved.returncode, found, target
        return 0, [], ""


def dispatch_once(repo: Repo, issue_id: str) -> dict:
    root = repo.path / ".jit"
    args = ("once", "--agent", "w1", "--command", "true", "--json", "--jit-dir", str(root), "--issue", issue_id)
    return run_cli(*args, cwd=repo.path).json


def assert_refused_as_jit_refuses(repo: Repo, issue_id: str, tmp_path: Path) -> None:
    """jit refuses the `done` (exit 4): jit-dispatch ends `gated`, jit's rules and words in its
    reason, jit's `transition_blocked` events (none for a local rule), and `jit validate` passes."""
    assert repo.jit("validate").returncode == 0
    code, jits, target = repo.jit_blockers(issue_id, tmp_path)
    assert (code, target) == (4, "done") and jits, (code, target)
    result = dispatch_once(repo, issue_id)
    assert result["outcome"] == "gated", result
    reason = "; ".join(f"rule '{rule}' blocks done: {message}" for rule, message in jits)
    assert result["reason"] == reason
    root = repo.path / ".jit"
    assert read_issue(root, issue_id)["context"]["dispatch.last_reason"] == reason
    blocked = [e for e in read_events(root) if e["type"] == "transition_blocked" and e["issue_id"] == issue_id]
    jits_blocked = [e for e in repo.jits_events if e["type"] == "transition_blocked"]
    assert [(e["target"], e["rule"]) for e in blocked] == [(e["target"], e["rule"]) for e in jits_blocked]
    assert [list(e) for e in blocked] == [list(e) for e in jits_blocked]  # jit's shape, key for key
    validate = repo.jit("validate")
    assert validate.returncode == 0, validate.stdout + validate.stderr


def assert_allowed_as_jit_allows(repo: Repo, issue_id: str, tmp_path: Path) -> None:
    assert repo.jit_blockers(issue_id, tmp_path)[0] == 0
    result = dispatch_once(repo, issue_id)
    assert result["outcome"] == "done", result
    assert read_issue(repo.path / ".jit", issue_id)["state"] == "done"
    validate = repo.jit("validate")
    assert validate.returncode == 0, validate.stdout + validate.stderr
