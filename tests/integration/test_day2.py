"""Day-2 commands act on the copy the fleet uses: dispatch.toml's store keys (`sync = "git"`) are
followed by every command; a clone whose history shows remote-mode state commits is never changed
silently in place (one line names the flag); a person's commits carry their git identity.
A bare repository plays GitHub, clones play the runner and the person; the real CLI throughout."""

from __future__ import annotations

import os
from pathlib import Path

from helpers import Remote, git, make_remote, run_cli
from jit_dispatch.trackers.jit.store import NewIssue


def person_env(**extra: str) -> dict[str, str]:
    """A person's shell: no Actions variables, no git identity forced by the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "JIT_", "RUNNER_", "GIT_"))}
    return {**env, **extra}


def parked_remote(tmp_path: Path) -> tuple[Remote, str]:
    """A remote whose one issue a runner parked (one failed attempt of one allowed)."""
    remote = make_remote(tmp_path, [NewIssue("flaky", "high")])
    runner = remote.clone(tmp_path / "runner")
    git(runner, "config", "user.name", "Runner")
    git(runner, "config", "user.email", "runner@example.invalid")
    result = run_cli("once", "--sync", "git", "--agent", "r1", "--command", "exit 3", "--max-attempts", "1",
                     "--json", cwd=runner, env=person_env())  # fmt: skip
    assert result.json["outcome"] == "parked", result.stderr
    [issue] = remote.ids
    assert "dispatch.parked_at" in remote.issue(issue)["context"]
    return remote, issue


def person_clone(remote: Remote, dest: Path) -> Path:
    clone = remote.clone(dest)
    git(clone, "config", "user.name", "Ada Lovelace")
    git(clone, "config", "user.email", "ada@example.invalid")
    return clone


def test_a_clone_with_remote_mode_history_refuses_to_act_on_the_working_copy(tmp_path: Path) -> None:
    remote, issue = parked_remote(tmp_path)
    clone = person_clone(remote, tmp_path / "laptop")
    before = git(clone, "status", "--porcelain")
    for args in (["unpark", issue], ["status"], ["reap", "--older-than", "1h"], ["release", issue, "stuck"]):
        result = run_cli(*args, cwd=clone, env=person_env())
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        [line] = result.stderr.strip().splitlines()
        assert "--sync git" in line and "remote-mode state commit" in line, line
    assert git(clone, "status", "--porcelain") == before, "the working copy was not touched"
    assert "dispatch.parked_at" in remote.issue(issue)["context"], "nor the remote"
    # An explicit choice is respected: the working copy only, as asked.
    local = run_cli("unpark", issue, "--sync", "none", cwd=clone, env=person_env())
    assert local.returncode == 0, local.stderr
    assert "dispatch.parked_at" in remote.issue(issue)["context"]


def test_sync_git_in_dispatch_toml_is_followed_with_the_persons_identity(tmp_path: Path) -> None:
    remote, issue = parked_remote(tmp_path)
    clone = person_clone(remote, tmp_path / "laptop")
    (clone / "dispatch.toml").write_text('sync = "git"\npush_budget = "30s"\n')
    result = run_cli("unpark", issue, cwd=clone, env=person_env())
    assert result.returncode == 0, result.stderr
    assert "dispatch.parked_at" not in remote.issue(issue)["context"], "unparked on the state branch"
    author = git(remote.bare, "log", "-1", "--format=%an <%ae>", "main").strip()
    assert author == "Ada Lovelace <ada@example.invalid>"
    status = run_cli("status", "--json", cwd=clone, env=person_env())
    assert status.returncode == 0, status.stderr
    assert [i["issue_id"] for i in status.json["dispatchable"]] == [issue], "status reads the remote too"


def test_the_environment_variable_and_commit_author_beat_the_defaults(tmp_path: Path) -> None:
    remote, issue = parked_remote(tmp_path)
    clone = person_clone(remote, tmp_path / "laptop")
    env = person_env(JIT_DISPATCH_SYNC="git")
    result = run_cli("unpark", issue, "--commit-author", "Ops Bot <ops@example.invalid>", cwd=clone, env=env)
    assert result.returncode == 0, result.stderr
    assert "dispatch.parked_at" not in remote.issue(issue)["context"]
    author = git(remote.bare, "log", "-1", "--format=%an <%ae>", "main").strip()
    assert author == "Ops Bot <ops@example.invalid>"


def test_in_actions_the_bot_stays_the_author(tmp_path: Path) -> None:
    remote, issue = parked_remote(tmp_path)
    clone = person_clone(remote, tmp_path / "runner2")
    env = person_env(GITHUB_ACTIONS="true", JIT_DISPATCH_SYNC="git")
    result = run_cli("unpark", issue, cwd=clone, env=env)
    assert result.returncode == 0, result.stderr
    assert git(remote.bare, "log", "-1", "--format=%an", "main").strip() == "github-actions[bot]"


def test_a_fresh_store_without_remote_history_works_in_place(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("first", "normal")])
    clone = person_clone(remote, tmp_path / "laptop")
    result = run_cli("status", "--json", cwd=clone, env=person_env())
    assert result.returncode == 0, result.stderr


def test_a_bad_store_key_in_dispatch_toml_is_one_line(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("first", "normal")])
    clone = person_clone(remote, tmp_path / "laptop")
    for text, needle in (('sync = "svn"\n', "sync"), ('push_budget = "soon"\n', "push_budget")):
        (clone / "dispatch.toml").write_text(text)
        result = run_cli("status", cwd=clone, env=person_env())
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert "dispatch.toml" in line and needle in line, line
