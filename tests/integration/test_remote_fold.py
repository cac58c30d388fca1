"""A runner leaves once its result ref is durable while others hold claims; the last one folds
(remote mode, real git; docs/remote-mode.md#leaving-the-fold-to-the-next-runner).

A settle pushes the result ref (with the lock's deletion, leased) and lists the remote: while
another runner holds a lock, that runner settles later and folds what is pending then, so this one
exits. The view counts a pending result as settled: nobody runs the command again, its dependents
are ready, and the next claim's fold carries it. `--wait-for-fold` keeps the old behaviour: the
runner exits only once its result is on the branch.

A "holder" runner keeps a claim on an issue of its own (its command waits for a file); where the
branch must refuse folds for a while, a pre-receive hook declines every update of `main` while a
flag file exists, in words no refusal row knows (transient). Over file:// and `git daemon`.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from helpers import Remote, clean_env, git, make_remote, run_cli
from jit_dispatch.trackers.jit.store import JitStore, NewIssue
from remote_runs import assert_remote_store_valid, finish, held_command, install_hook, start, wait_for

RESULTS = "refs/jit-dispatch/results/"
LOCKS = "refs/jit-dispatch/claims/"


def hold_the_branch(remote: Remote, flag: Path) -> None:
    """While `flag` exists the remote declines every push that moves `main`; locks and results land."""
    install_hook(
        remote,
        f"while read -r old new ref; do\n"
        f'  if [ "$ref" = refs/heads/main ] && [ -f {flag} ]; then echo "busy, try again later" >&2; exit 1; fi\n'
        f"done\nexit 0\n",
    )


def with_dependent(tmp_path: Path) -> tuple[Remote, str, str, str]:
    """A remote whose `main` holds `first`, `second` (depending on `first`) and `other` (the holder's)."""
    remote = make_remote(tmp_path, [NewIssue("first"), NewIssue("other", "low")])
    seed = tmp_path / "seed"
    (second,) = JitStore(seed / ".jit").create_issues([NewIssue("second", dependencies=(remote.ids[0],))])
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "a dependent")
    git(seed, "push", "-q", str(remote.bare), "main")
    return remote, remote.ids[0], second, remote.ids[1]


def clone_from(url: str, dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", "--depth", "1", url, str(dest)], check=True, capture_output=True)
    return dest


def start_holder(clone: Path, tmp_path: Path, issue: str) -> tuple[subprocess.Popen, Path]:
    """A runner holding `issue`'s claim until the returned file exists."""
    command, started, go = held_command(tmp_path)
    proc = start(clone, "holder", command, "--issue", issue)
    wait_for(started.exists, 60, "the holder's command to start")
    return proc, go


@pytest.mark.parametrize("transport", ["file", "git-daemon"])
def test_a_runner_exits_before_the_fold_and_the_last_runner_folds_its_result(
    tmp_path: Path, transport: str, request: pytest.FixtureRequest
) -> None:
    remote, first, second, other = with_dependent(tmp_path)
    url = request.getfixturevalue("daemon") + "/remote.git" if transport == "git-daemon" else remote.url
    holder, a, b, watcher = (clone_from(url, tmp_path / name) for name in ("holder", "a", "b", "watcher"))
    log = tmp_path / "runs.log"
    holding, go = start_holder(holder, tmp_path, other)
    try:
        code, result, stderr = finish(start(a, "a", f"echo $JIT_ISSUE_ID >> {log}"))
        assert (code, result["outcome"], result["issue_id"]) == (0, "done", first), (result, stderr)
        assert remote.issue(first)["state"] != "done", "the runner did not wait for a fold"
        assert len(remote.refs(RESULTS)) == 1, "its result is durable as a ref"
        assert remote.refs(LOCKS) == [LOCKS + other], "its lock went with the result push"

        status = run_cli("status", "--sync", "git", "--json", cwd=watcher)
        assert status.returncode == 0 and status.json["counts"].get("done") == 1, status.stdout
        ready = run_cli("ready", "--sync", "git", "--json", cwd=watcher)
        assert [i["issue_id"] for i in ready.json["dispatchable"]] == [second], "the dependent is ready, not first"
        reap = run_cli("reap", "--older-than", "1h", "--sync", "git", "--json", cwd=watcher)
        assert reap.returncode == 0 and reap.json["reaped"] == [], reap.stdout + reap.stderr
        assert remote.issue(first)["state"] == "done", "reap folded the pending result"

        code, result, stderr = finish(start(b, "b", f"echo $JIT_ISSUE_ID >> {log}"))
        assert (code, result["outcome"], result["issue_id"]) == (0, "done", second), (result, stderr)
        assert remote.issue(second)["state"] != "done" and len(remote.refs(RESULTS)) == 1, "left for the holder"
    finally:
        go.touch()
    code, result, stderr = finish(holding)
    assert (code, result["outcome"], result["issue_id"]) == (0, "done", other), (result, stderr)
    assert log.read_text().split() == [first, second], "each command ran once"
    raw = remote.issue(first)
    assert (raw["state"], raw["assignee"]) == ("done", "agent:a")
    assert remote.issue(second)["state"] == "done" and remote.issue(other)["state"] == "done", "the last one folded"
    assert remote.refs() == [], "no jit-dispatch ref left once every runner settled"
    assert_remote_store_valid(remote)


def test_the_next_claim_folds_a_pending_dependency_with_it(tmp_path: Path) -> None:
    remote, first, second, other = with_dependent(tmp_path)
    holder, a, b = (remote.clone(tmp_path / name) for name in ("holder", "a", "b"))
    holding, go = start_holder(holder, tmp_path, other)
    try:
        summary = tmp_path / "summary.md"
        env = {**clean_env(), "GITHUB_STEP_SUMMARY": str(summary)}
        run = run_cli("once", "--agent", "a", "--command", "true", "--sync", "git", cwd=a, env=env)
        assert run.returncode == 0, run.stderr
        assert "result pending as a ref: a runner settling later folds it" in summary.read_text()
        (tmp_path / "b-run").mkdir()
        command, started, go_b = held_command(tmp_path / "b-run")
        proc = start(b, "b", command)
        wait_for(started.exists, 60, "b's command")
        raw = remote.issue(first)
        assert (raw["state"], remote.issue(second)["state"]) == ("done", "in_progress"), "b's claim fold carried it"
        assert remote.refs(RESULTS) == []
        go_b.touch()
        assert finish(proc)[1]["outcome"] == "done"
    finally:
        go.touch()
    assert finish(holding)[1]["outcome"] == "done"
    assert remote.refs() == []


def test_wait_for_fold_waits_until_the_result_is_on_the_branch(tmp_path: Path) -> None:
    remote, first, _, other = with_dependent(tmp_path)
    holder, a = remote.clone(tmp_path / "holder"), remote.clone(tmp_path / "a")
    holding, go = start_holder(holder, tmp_path, other)
    flag = tmp_path / "hold"
    flag.touch()
    hold_the_branch(remote, flag)
    try:
        proc = start(a, "a", "true", "--wait-for-fold")
        wait_for(lambda: bool(remote.refs(RESULTS)), 60, "the result ref")
        time.sleep(1.5)  # not an assertion on time: the runner keeps trying the fold the hook declines
        assert proc.poll() is None, "with --wait-for-fold the runner waits for its fold, another claim or not"
        flag.unlink()
        code, result, stderr = finish(proc)
        assert (code, result["outcome"]) == (0, "done"), (result, stderr)
        assert remote.issue(first)["state"] == "done" and remote.refs(RESULTS) == []
    finally:
        go.touch()
    assert finish(holding)[1]["outcome"] == "done"


def test_wait_for_fold_from_dispatch_toml_and_the_environment(tmp_path: Path) -> None:
    """The key and the variable reach the runner as the flag does (it waits, so the budget runs out)."""
    remote, _, _, other = with_dependent(tmp_path)
    holder = remote.clone(tmp_path / "holder")
    holding, go = start_holder(holder, tmp_path, other)
    flag = tmp_path / "hold"
    flag.touch()
    hold_the_branch(remote, flag)
    try:
        toml_clone, env_clone = remote.clone(tmp_path / "toml"), remote.clone(tmp_path / "env")
        (toml_clone / "dispatch.toml").write_text('sync = "git"\nwait_for_fold = true\npush_budget = "2s"\n')
        code, result, stderr = finish(start(toml_clone, "t", "true"))
        assert code == 3 and "pending as refs/jit-dispatch/results/" in result["reason"], (result, stderr)
        env = {**clean_env(), "JIT_DISPATCH_WAIT_FOR_FOLD": "true"}
        code, result, stderr = finish(start(env_clone, "e", "true", "--push-budget", "2s", env=env))
        assert code == 3 and "pending as refs/jit-dispatch/results/" in result["reason"], (result, stderr)
    finally:
        go.touch()
        flag.unlink()
    assert finish(holding)[1]["outcome"] == "done"
    assert remote.refs() == []


def test_a_dependents_result_pending_beside_its_dependencys_folds_after_it(tmp_path: Path) -> None:
    """Both results pending (the branch held), the dependent's id sorting first: the fold replays the
    dependency's `done` first, so the dependent's `done` is not dropped (and run again)."""
    remote = make_remote(tmp_path, [NewIssue("other", "low")])
    other, seed = remote.ids[0], tmp_path / "seed"
    (dependency,) = JitStore(seed / ".jit").create_issues([NewIssue("dependency")])
    dependent = "~"
    while dependent > dependency:  # ids are random: the dependent must sort before its dependency
        (dependent,) = JitStore(seed / ".jit").create_issues([NewIssue("dependent", dependencies=(dependency,))])
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "a dependency and dependents")
    git(seed, "push", "-q", str(remote.bare), "main")
    holder, a, b = (remote.clone(tmp_path / name) for name in ("holder", "a", "b"))
    holding, go = start_holder(holder, tmp_path, other)
    flag = tmp_path / "hold"
    flag.touch()
    hold_the_branch(remote, flag)
    log = tmp_path / "runs.log"
    try:
        code, result, stderr = finish(start(a, "a", f"echo $JIT_ISSUE_ID >> {log}", "--issue", dependency))
        assert (code, result["outcome"]) == (0, "done"), (result, stderr)
        code, result, stderr = finish(start(b, "b", f"echo $JIT_ISSUE_ID >> {log}", "--issue", dependent))
        assert (code, result["outcome"]) == (0, "done"), (result, stderr)
        assert len(remote.refs(RESULTS)) == 2 and remote.issue(dependent)["state"] == "backlog", "nothing folded"
    finally:
        flag.unlink(missing_ok=True)
        go.touch()
    assert finish(holding)[1]["outcome"] == "done"
    raw = remote.issue(dependent)
    assert (raw["state"], raw["assignee"]) == ("done", "agent:b"), raw
    assert remote.issue(dependency)["state"] == "done"
    assert log.read_text().split() == [dependency, dependent]
    assert remote.refs() == []
    assert_remote_store_valid(remote)
