"""The state survives a careless agent (docs/remote-mode.md#careless-agents), with real git."""

from __future__ import annotations

from pathlib import Path

from helpers import GIT_IDENTITY, clean_env, git, make_remote, run_cli
from jit_dispatch.trackers.jit.store import NewIssue
from remote_runs import assert_remote_store_valid, finish, held_command, start, wait_for


def test_a_workspace_left_on_another_branch_says_what_to_do(tmp_path: Path) -> None:
    """A command checks out (and pushes) a branch of its own. The next `once` in that workspace must
    not take that branch for the state branch: one line, exit 2, naming both; back on the state
    branch it runs as before."""
    remote = make_remote(tmp_path, [NewIssue("first"), NewIssue("second")])
    clone = remote.clone(tmp_path / "workspace")
    wander = "git checkout -q -b feature && git push -q origin feature"
    code, result, stderr = finish(start(clone, "w", wander, env=clean_env(**GIT_IDENTITY)))
    assert (code, result["outcome"]) == (0, "done"), (result, stderr)
    assert git(clone, "rev-parse", "--abbrev-ref", "HEAD").strip() == "feature"
    feature = git(remote.bare, "rev-parse", "feature")

    refused = run_cli("once", "--agent", "w", "--command", "true", "--sync", "git", cwd=clone)
    assert refused.returncode == 2, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "'main'" in refused.stderr and "'feature'" in refused.stderr and "git checkout main" in refused.stderr
    assert git(remote.bare, "rev-parse", "feature") == feature, "the agent's branch untouched"

    git(clone, "checkout", "-q", "main")
    code, result, stderr = finish(start(clone, "w", "true"))
    assert (code, result["outcome"]) == (0, "done"), (result, stderr)
    assert {remote.issue(i)["state"] for i in remote.ids} == {"done"}


def test_a_force_push_from_a_stale_checkout_is_detected_and_the_lost_results_restored(tmp_path: Path) -> None:
    """Y is done and folded; A holds X. An agent force-pushes the branch from a checkout taken before
    all that (with a code commit of its own). A's settle sees the tip's events no longer extend the
    tip it folded on: it restores the lost `.jit/` files, folds its own result on top, keeps the
    agent's code and says so; Y never runs again."""
    remote = make_remote(tmp_path, [NewIssue("X", "high"), NewIssue("Y")])
    x, y = remote.ids
    stale = remote.clone(tmp_path / "stale")  # the careless agent's checkout, taken first
    runner, other, later = (remote.clone(tmp_path / name) for name in ("runner", "other", "later"))
    log = tmp_path / "runs.log"
    code, result, stderr = finish(start(other, "b", f"echo $JIT_ISSUE_ID >> {log}", "--issue", y))
    assert (code, result["outcome"]) == (0, "done"), (result, stderr)
    command, started, go = held_command(tmp_path)
    proc = start(runner, "a", f"echo $JIT_ISSUE_ID >> {log}; {command}", "--issue", x)
    try:
        wait_for(started.exists, 60, "A's command to start")
        wait_for(lambda: remote.issue(x)["state"] == "in_progress", 60, "A's claim on the branch")
        (stale / "code.txt").write_text("the agent's work\n")
        git(stale, "add", "code.txt")
        git(stale, "commit", "-qm", "agent work from a stale checkout")
        git(stale, "push", "-q", "--force", "origin", "HEAD:main")
        assert remote.issue(y)["state"] == "ready", "the force-push erased Y's folded result"
    finally:
        go.touch()
    code, result, stderr = finish(proc)
    assert (code, result["outcome"]) == (0, "done"), (result, stderr)
    assert any("lost folded results" in w for w in result["warnings"]), result["warnings"]
    assert (remote.issue(x)["state"], remote.issue(y)["state"]) == ("done", "done")
    assert "code.txt" in git(remote.bare, "ls-tree", "--name-only", "main").split(), "the agent's work kept"
    code, result, stderr = finish(start(later, "c", f"echo $JIT_ISSUE_ID >> {log}"))
    assert (code, result["outcome"]) == (0, "idle"), (result, stderr)
    assert sorted(log.read_text().split()) == sorted([x, y]), "each command ran once"
    assert_remote_store_valid(remote)
    assert remote.refs() == [], "no jit-dispatch ref left"
