"""Delivery tests' parts: a clone of a bare remote that `once --deliver` runs in, merges made the
four ways people make them, and both real jit binaries reading the store at every step."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from helpers import GIT_IDENTITY, CliRun, Remote, clean_env, git, run_cli
from real_jit import BIN_VARIABLE, ERA_BINARIES, jit


def once(clone: Path, command: str, *extra: str, remote_mode: bool = False) -> CliRun:
    args = ["once", "--agent", "bot", "--command", command, "--deliver", "branch", "--json", *extra]
    if remote_mode:
        args += ["--sync", "git"]
    return run_cli(*args, cwd=clone, env=clean_env(**GIT_IDENTITY), timeout=120)


def work_branches(remote: Remote) -> dict[str, str]:
    out = git(remote.bare, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads/jit/")
    return dict(line.split() for line in out.splitlines())


def merge(remote: Remote, tmp_path: Path, branch: str, how: str) -> str:
    """Merge `branch` into the remote's main `how` (merge, squash, rebase, hand), in a clone of
    its own, and push main; the new main."""
    where = tmp_path / f"merger-{how}-{branch.replace('/', '-')}"
    if not where.exists():
        subprocess.run(["git", "clone", "-q", remote.url, str(where)], check=True, capture_output=True)
    git(where, "fetch", "-q", "origin")
    git(where, "reset", "-q", "--hard", "origin/main")
    other = f"origin/{branch}"
    if how == "merge":  # GitHub's merge commit: its message names the PR, not the issue
        git(where, "merge", "-q", "--no-ff", "-m", f"Merge pull request #1 from o/{branch}", other)
    elif how == "squash":  # GitHub's squash: every squashed message in the body
        body = git(where, "log", "--reverse", "--format=* %B", f"HEAD..{other}")
        git(where, "merge", "-q", "--squash", other)
        git(where, "commit", "-q", "-m", f"Work of {branch} (#1)", "-m", body)
    elif how == "rebase":  # GitHub's rebase: the commits replayed with a new committer
        git(where, "checkout", "-q", "-b", "tmp", other)
        git(where, "rebase", "-q", "main")
        git(where, "checkout", "-q", "main")
        git(where, "merge", "-q", "--ff-only", "tmp")
        git(where, "branch", "-q", "-D", "tmp")
    elif how == "hand":  # a person: plain git, fast-forward when it can
        git(where, "merge", "-q", other)
    else:
        raise ValueError(how)
    git(where, "push", "-q", "origin", "main")
    return git(where, "rev-parse", "HEAD").strip()


def real_jit_eras() -> list[Path]:
    where = os.environ.get(BIN_VARIABLE)
    if not where:
        return []
    found = [sorted(Path(where).glob(prefix + "*")) for prefix in ERA_BINARIES.values()]
    return [binaries[-1] for binaries in found if binaries]


def assert_jit_sees(repo: Path, available: set[str], states: dict[str, str]) -> None:
    """Both real jit eras (when JIT_DISPATCH_JIT_BIN is set): `validate` passes, `query available`
    lists exactly `available`, `issue show` reads every issue in the state given."""
    for binary in real_jit_eras():
        validate = jit(binary, repo, "validate")
        assert validate.returncode == 0, f"{binary.name} validate: {validate.stdout}{validate.stderr}"
        query = jit(binary, repo, "query", "available", "--json")
        assert query.returncode == 0, f"{binary.name} query: {query.stderr}"
        assert {i["id"] for i in json.loads(query.stdout)["issues"]} == available, binary.name
        for issue_id, state in states.items():
            shown = jit(binary, repo, "issue", "show", issue_id, "--json")
            assert shown.returncode == 0, f"{binary.name} issue show: {shown.stderr}"
            data = json.loads(shown.stdout)
            data = data.get("data", data)
            assert data["state"] == state, (binary.name, issue_id, data["state"])


def remote_state(remote: Remote, tmp_path: Path) -> Path:
    """The remote's main checked out fresh (remote mode's state lives there)."""
    where = tmp_path / "state-view"
    if where.exists():
        git(where, "fetch", "-q", "origin")
        git(where, "reset", "-q", "--hard", "origin/main")
    else:
        subprocess.run(["git", "clone", "-q", remote.url, str(where)], check=True, capture_output=True)
    return where
