"""The state survives a careless agent (docs/remote-mode.md#careless-agents), with real git."""

from __future__ import annotations

from pathlib import Path

from helpers import GIT_IDENTITY, clean_env, git, make_remote, run_cli
from jit_dispatch.trackers.jit.store import NewIssue
from remote_runs import finish, start


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
