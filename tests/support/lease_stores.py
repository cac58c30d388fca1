"""Stores the newest real jit made, in git repositories, with leases enforced (`[worktree]`)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from real_jit import jit

GIT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip


def jit_as(binary: Path, repo: Path, agent: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real jit acting as `agent` (JIT_AGENT_ID), as another agent beside the dispatcher would."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("JIT_")}, "JIT_AGENT_ID": agent}
    return subprocess.run([str(binary), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=60)


def strict_repo(tmp_path: Path, binary: Path, count: int = 1) -> tuple[Path, list[str]]:
    """A git repository whose store the real jit made, leases enforced (`[worktree]`); `count` tasks under an epic."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m", "init"], check=True, env={**os.environ, **GIT}
    )
    assert jit(binary, repo, "init").returncode == 0
    with (repo / ".jit" / "config.toml").open("a") as config:
        config.write('\n[worktree]\nenforce_leases = "strict"\n')
    ids = []
    for n in range(count):
        made = jit(binary, repo, "issue", "create", "--title", f"task {n}", "--label", "type:task", "--json")
        assert made.returncode == 0, made.stderr
        ids.append(json.loads(made.stdout)["id"])
    if count > 1:  # jit validate rejects issues outside the dependency graph
        epic = json.loads(
            jit(binary, repo, "issue", "create", "--title", "epic", "--label", "type:epic", "--json").stdout
        )
        assert jit_as(binary, repo, "agent:setup", "claim", "acquire", epic["id"]).returncode == 0
        for issue_id in ids:
            assert jit_as(binary, repo, "agent:setup", "dep", "add", epic["id"], issue_id).returncode == 0
        assert jit_as(binary, repo, "agent:setup", "claim", "release", epic["id"]).returncode == 0
    return repo / ".jit", ids
