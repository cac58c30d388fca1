"""A command that settles its own issue with the real jit is recorded as the agent's outcome, never `lost`
(docs/jit-format.md#agents-that-settle)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import clean_env, read_issue, run_cli
from lease_stores import strict_repo
from real_jit import jit, jit_binary


def _repo_with_gate(tmp_path: Path, binary: Path, *gate: str) -> tuple[Path, str]:
    root, (issue_id,) = strict_repo(tmp_path, binary)
    if gate:
        key = gate[0]
        assert (
            jit(binary, root.parent, "gate", "define", key, "--title", key, "--description", key, *gate[1:]).returncode
            == 0
        )
        issue = json.loads((root / "issues" / f"{issue_id}.json").read_text())
        issue["gates_required"] = [key]
        (root / "issues" / f"{issue_id}.json").write_text(json.dumps(issue, indent=2))
    return root, issue_id


def _once(root: Path, command: str, binary: Path) -> tuple[int, dict]:
    result = run_cli(
        "once", "--agent", "w1", "--json", "--command", command, "--jit-dir", str(root),
        cwd=root.parent, env=clean_env(J=str(binary)),
    )  # fmt: skip
    return result.returncode, result.json


@pytest.mark.parametrize(
    ("jit_call", "outcome", "code"),
    [
        ('$J issue update "$JIT_ISSUE_ID" --state done', "done", 0),
        ('$J issue update "$JIT_ISSUE_ID" --state rejected', "rejected", 0),
        ('$J issue release "$JIT_ISSUE_ID" "not for me"', "released", 1),
    ],
)
def test_an_agent_that_settles_its_own_issue_is_recorded_as_the_agents(
    tmp_path: Path, jit_call: str, outcome: str, code: int
) -> None:
    binary = jit_binary("newest")
    root, issue_id = _repo_with_gate(tmp_path, binary)
    returncode, result = _once(root, jit_call, binary)
    assert (returncode, result["outcome"]) == (code, outcome), result
    assert result["reason"].startswith(f"{outcome} by the agent"), result["reason"]
    issue = read_issue(root, issue_id)
    assert issue["state"] == {"done": "done", "rejected": "rejected", "released": "ready"}[outcome], issue
    assert issue["context"]["dispatch.attempts"] == ("1" if outcome == "released" else "0")
    assert json.loads((root.parent / ".git/jit/claims.index.json").read_text())["leases"] == []
    validate = jit(binary, root.parent, "validate")
    assert validate.returncode == 0, validate.stdout + validate.stderr


def test_an_agents_done_that_jit_gated_is_finished_by_the_open_postcheck(tmp_path: Path) -> None:
    binary = jit_binary("newest")
    root, issue_id = _repo_with_gate(tmp_path, binary, "tests", "--stage", "postcheck", "--mode", "auto",
                                     "--checker-command", "true")  # fmt: skip
    done = '$J issue update "$JIT_ISSUE_ID" --state done || test $? -eq 4'  # jit: exit 4, gated
    returncode, result = _once(root, done, binary)
    assert (returncode, result["outcome"]) == (0, "done"), result  # jit made it gated; our postcheck passed it
    assert [g["key"] for g in result["gates"]] == ["tests"], result["gates"]
    assert read_issue(root, issue_id)["gates_status"]["tests"]["status"] == "passed"
    assert jit(binary, root.parent, "validate").returncode == 0


def test_an_agents_done_on_a_manual_gate_stays_gated(tmp_path: Path) -> None:
    binary = jit_binary("newest")
    root, issue_id = _repo_with_gate(tmp_path, binary, "review", "--stage", "postcheck", "--mode", "manual")
    returncode, result = _once(root, '$J issue update "$JIT_ISSUE_ID" --state done', binary)
    assert (returncode, result["outcome"], result["reason"]) == (0, "gated", "gated by the agent; exit code 4"), (
        result
    )  # jit exits 4
    assert read_issue(root, issue_id)["state"] == "gated"


@pytest.mark.parametrize(
    ("jit_call", "state"),
    [
        ('$J claim release "$JIT_ISSUE_ID"', "ready"),  # the lease given back; the issue left in_progress
        ('$J issue update "$JIT_ISSUE_ID" --state ready', "ready"),  # moved back, the assignee kept
        ('$J issue update "$JIT_ISSUE_ID" --state backlog', "backlog"),
        # given back, then still busy past a few heartbeats: the agent's, not a lost claim
        ('$J claim release "$JIT_ISSUE_ID" && sleep 4', "ready"),
    ],
)
def test_an_agent_that_gives_its_issue_back_under_strict_leases_released_it(
    tmp_path: Path, jit_call: str, state: str
) -> None:
    """The agent's own release (docs/jit-format.md#agents-that-settle): released, its attempt counted, never lost."""
    binary = jit_binary("newest")
    root, issue_id = _repo_with_gate(tmp_path, binary)
    result = run_cli(
        "once", "--agent", "w1", "--json", "--heartbeat", "1", "--command", jit_call, "--jit-dir", str(root),
        cwd=root.parent, env=clean_env(J=str(binary)),
    )  # fmt: skip
    assert (result.returncode, result.json["outcome"]) == (1, "released"), result.json
    assert result.json["reason"].startswith("released by the agent"), result.json["reason"]
    issue = read_issue(root, issue_id)
    assert (issue["state"], issue["assignee"]) == (state, None), issue
    assert issue["context"]["dispatch.attempts"] == "1"
    assert issue["context"]["dispatch.last_reason"] == "released by the agent"  # as a settle's release leaves it
    assert json.loads((root.parent / ".git/jit/claims.index.json").read_text())["leases"] == []
    validate = jit(binary, root.parent, "validate")
    assert validate.returncode == 0, validate.stdout + validate.stderr
