"""Gate run records as the newest jit writes them, field by field against its own `jit gate pass`
of an auto gate (docs/gates.md#decisions): a signal, stderr kept apart, a timeout killed on jit's schedule, a
prompt_file jit refuses, and the context file's `issue` in `issue show --json` shape."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gate_stores import gate, gate_runs, gated_repo
from helpers import clean_env, read_issue, run_cli
from jit_dispatch.trackers.jit.store import NewIssue
from real_jit import jit, jit_binary

COMPARED = (
    "schema_version",
    "gate_key",
    "stage",
    "commit",
    "branch",
    "status",
    "exit_code",
    "stdout",
    "stderr",
    "command",
    "by",
    "message",
)


def _twins(tmp_path: Path, checker: str, stage: str = "postcheck", **extra: object) -> tuple[Path, Path, str, str]:
    """A newest-era store with two issues needing gate `g`: one for jit's `gate pass`, one for us."""
    binary = jit_binary("newest")

    def jit_init(repo: Path) -> None:
        assert jit(binary, repo, "init").returncode == 0

    gates = [gate("newest", "g", stage, checker, **extra)]  # type: ignore[arg-type]
    specs = (NewIssue("jits", gates_required=("g",)), NewIssue("ours", gates_required=("g",)))
    root, (theirs, ours) = gated_repo(tmp_path, "newest", gates, *specs, before_store=jit_init)
    return binary, root, theirs, ours


def _ours(root: Path, issue_id: str) -> dict:
    only = ("--issue", issue_id, "--jit-dir", str(root))
    result = run_cli("once", "--agent", "w1", "--command", "true", "--json", *only, cwd=root.parent, env=clean_env())
    return result.json


def _records(root: Path, issue_id: str) -> list[dict]:
    return [run for run in gate_runs(root) if run["issue_id"] == issue_id]


def _compare(binary: Path, root: Path, theirs: str, ours: str) -> tuple[dict, dict, dict]:
    jit(binary, root.parent, "gate", "pass", theirs, "g")
    (jits,) = _records(root, theirs)
    result = _ours(root, ours)
    (mine,) = _records(root, ours)
    assert list(mine) == list(jits)
    assert {k: mine[k] for k in COMPARED} == {k: jits[k] for k in COMPARED}
    return jits, mine, result


def test_a_checker_killed_by_a_signal_is_an_error_without_exit_code(tmp_path: Path) -> None:
    binary, root, theirs, ours = _twins(tmp_path, "echo before; kill -9 $$")
    jits, _, result = _compare(binary, root, theirs, ours)
    assert (jits["status"], jits["exit_code"]) == ("error", None)
    assert result["reason"] == "gate 'g' failed (killed by SIGKILL)", result


@pytest.mark.parametrize("stage", ["postcheck", "precheck"])
def test_stdout_and_stderr_are_kept_apart(tmp_path: Path, stage: str) -> None:
    binary, root, theirs, ours = _twins(tmp_path, "echo found a bug; echo banner >&2; exit 1", stage=stage)
    jits, _, _ = _compare(binary, root, theirs, ours)
    assert (jits["stdout"], jits["stderr"]) == ("found a bug\n", "banner\n")
    shown = jit(binary, root.parent, "gate", "check", ours, "g", "--stderr")  # jit shows our record like its own
    assert "banner" in shown.stdout, shown.stdout + shown.stderr


def test_a_timed_out_checker_is_killed_at_the_timeout_as_jit_kills_it(tmp_path: Path) -> None:
    slow = "trap '' TERM; echo waiting; sleep 30"
    binary, root, theirs, ours = _twins(tmp_path, slow, timeout=2)
    started = time.monotonic()
    _, mine, result = _compare(binary, root, theirs, ours)
    assert (mine["status"], mine["exit_code"], mine["message"]) == ("error", None, None)
    assert mine["duration_ms"] < 8000, mine["duration_ms"]  # SIGKILL at 2 s, not SIGTERM and a 10 s grace
    assert result["reason"] == "gate 'g' timed out after 2s"
    assert time.monotonic() - started < 30


def test_a_prompt_file_jit_refuses_fails_the_check_without_a_record(tmp_path: Path) -> None:
    binary, root, theirs, ours = _twins(tmp_path, "true", pass_context=True, prompt_file="prompts/review.md")
    refused = jit(binary, root.parent, "gate", "pass", theirs, "g")
    assert refused.returncode != 0 and _records(root, theirs) == []
    result = _ours(root, ours)
    assert _records(root, ours) == []
    assert (
        result["reason"]
        == "gate 'g' failed (prompt_file 'prompts/review.md' cannot be read: No such file or directory)"
    )
    assert str(root.parent) not in result["reason"]
    assert "g" not in read_issue(root, ours)["gates_status"]
    (root.parent / "prompts").mkdir()
    (root.parent / "prompts" / "review.md").write_text("x" * 100_001)
    big = jit(binary, root.parent, "gate", "pass", theirs, "g")
    assert "exceeds size limit (100001 bytes > 100000 byte limit)" in big.stderr + big.stdout
    result = _ours(root, ours)
    assert result["reason"] == (
        "gate 'g' failed (prompt_file 'prompts/review.md' exceeds size limit (100001 bytes > 100000 byte limit))"
    )
    assert _records(root, ours) == [] and _records(root, theirs) == []


def test_the_context_files_issue_is_jits_issue_show(tmp_path: Path) -> None:
    binary, root, _theirs, ours = _twins(tmp_path, 'cp "$JIT_CONTEXT_FILE" context.json', pass_context=True)
    result = _ours(root, ours)
    assert result["outcome"] == "done", result
    context = json.loads((root.parent / "context.json").read_text())
    # jit's own view of the issue, at the moment the checker ran (in_progress, the gate not run yet)
    shown = json.loads(jit(binary, root.parent, "issue", "show", ours, "--json").stdout)
    shown.pop("message", None)
    expected = {**shown, "state": "in_progress", "updated_at": context["issue"]["updated_at"]}
    expected["gates"] = [{"exit_code": None, "key": "g", "last_run_at": None, "status": "pending"}]
    expected["context"] = context["issue"]["context"]
    expected["assignee"] = "agent:w1"
    assert context["issue"] == expected
    assert list(context["issue"]) == sorted(context["issue"])
    assert list(context["gate"]) == ["description", "key", "stage", "title"]
