"""Remote mode holds a jit lease in the runner clone's own `.git/jit/` for its claim, so the agent's
own `jit` calls under `enforce_leases = "strict"` can write (docs/remote-mode.md#jit-leases); the
lock ref stays the claim between runners. Real git, a bare remote, the real newest jit as the agent's tool."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers import GIT_IDENTITY, Remote, clean_env, git, make_remote, read_issue, run_cli
from jit_dispatch.trackers.jit.store import NewIssue
from real_jit import jit_binary

STATE = "jit-state"


def _strict_remote(tmp_path: Path, title: str) -> tuple[Remote, str, Path]:
    """A remote whose state branch enforces leases strictly, and a runner's clone of it."""
    remote = make_remote(tmp_path, [NewIssue(title)])
    (only,) = remote.ids
    seed = tmp_path / "state-seed"
    subprocess.run(["git", "clone", "-q", remote.url, str(seed)], check=True, capture_output=True)
    git(seed, "checkout", "-q", "-b", STATE)
    (seed / ".jit" / "config.toml").write_text('[worktree]\nenforce_leases = "strict"\n')
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "strict leases")
    git(seed, "push", "-q", "origin", STATE)
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", remote.url, str(work)], check=True, capture_output=True)
    return remote, only, work


def test_the_agents_jit_writes_its_issue_under_strict_leases_in_its_clone(tmp_path: Path) -> None:
    binary = jit_binary("newest")
    remote, only, work = _strict_remote(tmp_path, "lease me")
    listed = tmp_path / "claims.txt"
    command = (  # ordinary jit work on its own issue: every write needs the lease
        f'"$AGENT_JIT" claim list > {listed} && '
        '"$AGENT_JIT" issue update "$JIT_ISSUE_ID" --label "team:core" && '
        'sub=$("$AGENT_JIT" issue create "subtask of $JIT_ISSUE_SHORT_ID" -q) && '
        '"$AGENT_JIT" dep add "$JIT_ISSUE_ID" "$sub" > /dev/null && sleep 3'  # past a few heartbeats
    )
    run = run_cli(
        "once", "--agent", "agent:bot", "--command", command, "--sync", "git", "--state-branch", STATE, "--json",
        "--heartbeat", "1", cwd=work, env=clean_env(**GIT_IDENTITY, AGENT_JIT=str(binary)), timeout=120,
    )  # fmt: skip
    result = json.loads(run.stdout)
    assert (run.returncode, result["outcome"]) == (0, "done"), run.stdout + run.stderr
    assert only[:8] in listed.read_text() and "agent:bot" in listed.read_text(), listed.read_text()

    view = tmp_path / "state-view"
    subprocess.run(["git", "clone", "-q", "-b", STATE, remote.url, str(view)], check=True, capture_output=True)
    issue = read_issue(view / ".jit", only)
    assert issue["state"] == "done" and "team:core" in issue["labels"], issue
    subs = [json.loads(p.read_text()) for p in (view / ".jit" / "issues").glob("*.json") if p.stem != only]
    assert len(subs) == 1 and issue["dependencies"] == [subs[0]["id"]], (issue, subs)

    # the clone's lease: taken for the claim, released with it, as jit logs both
    shared = work / ".git" / "jit"
    assert json.loads((shared / "claims.index.json").read_text())["leases"] == []
    log = [json.loads(line) for line in (shared / "claims.jsonl").read_text().splitlines()]
    assert [(e["op"], e.get("issue_id"), e.get("agent_id")) for e in log][:1] == [("acquire", only, "agent:bot")]
    ops = [e["op"] for e in log]
    assert ops[0] == "acquire" and ops[-1] == "release" and set(ops[1:-1]) == {"renew"}, ops  # renewed by heartbeats
    assert git(work, "status", "--porcelain") == ""  # jit's worktree identity kept out of the checkout


def test_another_agents_lease_in_the_clone_refuses_the_claim_and_drops_the_lock(tmp_path: Path) -> None:
    binary = jit_binary("newest")
    remote = make_remote(tmp_path, [NewIssue("leased here")])
    (only,) = remote.ids
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", remote.url, str(work)], check=True, capture_output=True)
    env = {**clean_env(), "JIT_AGENT_ID": "agent:person"}
    taken = subprocess.run([str(binary), "claim", "acquire", only], cwd=work, env=env, capture_output=True, text=True)
    assert taken.returncode == 0, taken.stderr
    run = run_cli(
        "once", "--agent", "agent:bot", "--command", "true", "--sync", "git", "--json",
        cwd=work, env=clean_env(**GIT_IDENTITY), timeout=120,
    )  # fmt: skip
    result = json.loads(run.stdout)
    assert result["outcome"] == "idle", result
    assert git(work, "ls-remote", "origin", "refs/jit-dispatch/claims/*") == ""  # no lock left behind


@pytest.mark.parametrize(
    "command",
    [
        '"$AGENT_JIT" claim release "$JIT_ISSUE_ID" && sleep 2',  # past a heartbeat: not re-taken
        '"$AGENT_JIT" issue update "$JIT_ISSUE_ID" --state ready && "$AGENT_JIT" claim release "$JIT_ISSUE_ID"',
        '"$AGENT_JIT" issue update "$JIT_ISSUE_ID" --state backlog',  # its lease kept: still the evidence
    ],
)
def test_the_agents_own_release_in_its_clone_is_the_agents_as_in_local_mode(command: str, tmp_path: Path) -> None:
    """docs/jit-format.md#agents-that-settle: the clone's claims log says our own agent released it."""
    binary = jit_binary("newest")
    remote, only, work = _strict_remote(tmp_path, "give me back")
    run = run_cli(
        "once", "--agent", "agent:bot", "--command", command, "--sync", "git", "--state-branch", STATE, "--json",
        "--heartbeat", "1", cwd=work, env=clean_env(**GIT_IDENTITY, AGENT_JIT=str(binary)), timeout=120,
    )  # fmt: skip
    result = json.loads(run.stdout)
    assert (run.returncode, result["outcome"], result["reason"]) == (1, "released", "released by the agent"), (
        run.stdout + run.stderr
    )
    view = tmp_path / "state-view"
    subprocess.run(["git", "clone", "-q", "-b", STATE, remote.url, str(view)], check=True, capture_output=True)
    issue = read_issue(view / ".jit", only)
    assert (issue["state"], issue["assignee"]) == ("ready", None), issue
    assert issue["context"]["dispatch.attempts"] == "1" and "dispatch.parked_at" not in issue["context"]
    assert issue["context"]["dispatch.last_reason"] == "released by the agent"
    assert json.loads((work / ".git" / "jit" / "claims.index.json").read_text())["leases"] == []
    validate = subprocess.run([str(binary), "validate"], cwd=view, capture_output=True, text=True)
    assert validate.returncode == 0, validate.stdout + validate.stderr
