"""The real jit of both eras reads everything jit-dispatch writes: after done, gated, a gate
failure's release and a park, `jit validate` passes and jit shows the gate runs.

Runs when JIT_DISPATCH_JIT_BIN names the directory holding the real binaries (`jit-seed-*`,
`jit-head-*`); `.ci/run` sets it when they are at hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gate_stores import gate, gate_runs, gated_repo
from helpers import clean_env, read_issue, run_cli
from jit_dispatch.trackers.jit.store import NewIssue
from real_jit import jit, jit_binary


@pytest.mark.parametrize("era", ["seed", "newest"])
def test_real_jit_reads_the_store_after_done_gated_released_and_parked(tmp_path: Path, era: str) -> None:
    binary = jit_binary(era)
    gates = [
        gate(era, "pre", "precheck", "true"),
        gate(era, "tests", "postcheck", 'test "$JIT_ISSUE_ID" != "$FAIL_FOR"'),
        gate(era, "code-review", "postcheck"),
    ]
    issues = [
        NewIssue("done one", "critical", labels=("type:task",), gates_required=("pre", "tests")),
        NewIssue("gated one", "high", labels=("type:task",), gates_required=("tests", "code-review")),
        NewIssue("released one", "normal", labels=("type:task",), gates_required=("pre", "tests")),
        NewIssue("parked one", "low", labels=("type:task", "component:db"), gates_required=("tests",)),
    ]

    def jit_init(repo: Path) -> None:
        assert jit(binary, repo, "init").returncode == 0

    root, (done, gated, released, parked) = gated_repo(tmp_path, era, gates, *issues, before_store=jit_init)
    repo = root.parent
    config_before = (root / "config.toml").read_bytes()

    def cycle(*extra: str, fail_for: str = "none") -> dict:
        result = run_cli(
            "once", "--agent", "w1", "--command", "true", "--json", "--jit-dir", str(root), *extra,
            cwd=repo, env=clean_env(FAIL_FOR=fail_for),
        )  # fmt: skip
        return result.json

    assert cycle()["outcome"] == "done"
    assert cycle()["outcome"] == "gated"
    assert cycle(fail_for=released)["outcome"] == "released"
    assert cycle("--issue", parked, "--max-attempts", "1", fail_for=parked)["outcome"] == "parked"
    assert "dispatch.parked_at" in read_issue(root, parked)["context"]
    assert (root / "config.toml").read_bytes() == config_before

    validate = jit(binary, repo, "validate")
    assert validate.returncode == 0, validate.stdout + validate.stderr
    events = jit(binary, repo, "events", "tail", "-n", "100")
    assert events.returncode == 0 and "gate_failed" in events.stdout, events.stderr
    query = "available" if era == "seed" else "ready"
    available = jit(binary, repo, "query", query, "--json")
    assert available.returncode == 0, available.stderr
    assert released in available.stdout and parked in available.stdout  # jit itself knows nothing of parking
    for issue_id in (done, gated, released, parked):
        shown = jit(binary, repo, "issue", "show", issue_id, "--json")
        assert shown.returncode == 0, shown.stderr
    data = json.loads(jit(binary, repo, "issue", "show", released, "--json").stdout)
    if era == "newest":
        runs = {r["gate_key"]: r for r in gate_runs(root) if r["issue_id"] == released}
        by_key = {g["key"]: g for g in data["gates"]}
        assert (by_key["tests"]["status"], by_key["tests"]["exit_code"]) == ("failed", 1)
        assert by_key["tests"]["last_run_at"] is not None and by_key["pre"]["exit_code"] == 0
        assert set(runs) == {"pre", "tests"}
    else:
        assert data["gates_status"]["tests"]["status"] == "failed"
    checked = jit(binary, repo, "gate", "check", gated, "tests")
    assert checked.returncode == 0, checked.stdout + checked.stderr
