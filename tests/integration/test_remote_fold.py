"""A runner leaves once its result ref is durable; the fold is the next runner's (remote mode, real git).

docs/remote-mode.md#leaving-the-fold-to-the-next-runner: a settle pushes the result ref (with the
lock's deletion, leased), tries one fold, and exits whether or not that fold landed. The view
counts a pending result as settled, so nobody runs the command again, its dependents are ready,
and the next claim's fold carries it. `--wait-for-fold` keeps today's behaviour: the runner exits
only once its result is on the branch.

The fold is held off by a pre-receive hook that declines every update of `refs/heads/main` while a
flag file exists, in words no refusal row knows (transient), over file:// and `git daemon`.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from helpers import Remote, clean_env, git, make_remote, run_cli
from jit_dispatch.trackers.jit.store import JitStore, NewIssue
from remote_runs import assert_remote_store_valid, finish, install_hook, start, wait_for

RESULTS = "refs/jit-dispatch/results/"


def hold_the_branch(remote: Remote, flag: Path) -> None:
    """While `flag` exists the remote declines every push that moves `main`; locks and results land."""
    install_hook(
        remote,
        f"while read -r old new ref; do\n"
        f'  if [ "$ref" = refs/heads/main ] && [ -f {flag} ]; then echo "busy, try again later" >&2; exit 1; fi\n'
        f"done\nexit 0\n",
    )


def held_with_dependent(tmp_path: Path) -> tuple[Remote, str, str, Path]:
    """A remote whose `main` holds `first` and `second` (depending on `first`), held (the flag)."""
    remote = make_remote(tmp_path, [NewIssue("first")])
    seed = tmp_path / "seed"
    (second,) = JitStore(seed / ".jit").create_issues([NewIssue("second", dependencies=(remote.ids[0],))])
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "a dependent")
    git(seed, "push", "-q", str(remote.bare), "main")
    flag = tmp_path / "hold"
    flag.touch()
    hold_the_branch(remote, flag)
    return remote, remote.ids[0], second, flag


def clone_from(url: str, dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", "--depth", "1", url, str(dest)], check=True, capture_output=True)
    return dest


@pytest.mark.parametrize("transport", ["file", "git-daemon"])
def test_a_runner_exits_before_the_fold_and_the_next_runner_folds_its_result(
    tmp_path: Path, transport: str, request: pytest.FixtureRequest
) -> None:
    remote, first, second, flag = held_with_dependent(tmp_path)
    url = request.getfixturevalue("daemon") + "/remote.git" if transport == "git-daemon" else remote.url
    a, b, watcher = (clone_from(url, tmp_path / name) for name in ("a", "b", "watcher"))
    log = tmp_path / "runs.log"

    code, result, stderr = finish(start(a, "a", f"echo $JIT_ISSUE_ID >> {log}"))
    assert (code, result["outcome"], result["issue_id"]) == (0, "done", first), (result, stderr)
    assert remote.issue(first)["state"] == "ready", "the runner did not wait for its fold"
    assert len(remote.refs(RESULTS)) == 1, "its result is durable as a ref"
    assert remote.refs("refs/jit-dispatch/claims/") == [], "the lock went with the result push"

    status = run_cli("status", "--sync", "git", "--json", cwd=watcher)
    assert status.returncode == 0 and status.json["counts"].get("done") == 1, status.stdout
    ready = run_cli("ready", "--sync", "git", "--json", cwd=watcher)
    assert [i["issue_id"] for i in ready.json["dispatchable"]] == [second], "the dependent is ready, not first"
    reap = run_cli("reap", "--older-than", "1s", "--sync", "git", "--push-budget", "1s", "--json", cwd=watcher)
    assert reap.returncode == 3 and "busy, try again later" in reap.stderr, "reap tries the fold (held off here)"

    flag.unlink()
    code, result, stderr = finish(start(b, "b", f"echo $JIT_ISSUE_ID >> {log}", "--wait-for-fold"))
    assert (code, result["outcome"], result["issue_id"]) == (0, "done", second), (result, stderr)
    assert log.read_text().split() == [first, second], "each command ran once"
    raw = remote.issue(first)
    assert (raw["state"], raw["assignee"]) == ("done", "agent:a"), "the next runner folded the first result"
    assert remote.issue(second)["state"] == "done"
    assert remote.refs() == [], "no jit-dispatch ref left"
    assert_remote_store_valid(remote)


def test_the_summary_says_the_result_is_left_for_the_next_run(tmp_path: Path) -> None:
    remote, first, _, _ = held_with_dependent(tmp_path)
    clone = remote.clone(tmp_path / "a")
    summary = tmp_path / "summary.md"
    env = {**clean_env(), "GITHUB_STEP_SUMMARY": str(summary)}
    run = run_cli("once", "--agent", "a", "--command", "true", "--sync", "git", cwd=clone, env=env)
    assert run.returncode == 0, run.stderr
    assert "result pending as a ref: the next run folds it" in summary.read_text()
    assert remote.issue(first)["state"] == "ready" and len(remote.refs(RESULTS)) == 1


def test_wait_for_fold_waits_until_the_result_is_on_the_branch(tmp_path: Path) -> None:
    remote, first, _, flag = held_with_dependent(tmp_path)
    clone = remote.clone(tmp_path / "a")

    proc = start(clone, "a", "true", "--wait-for-fold")
    wait_for(lambda: bool(remote.refs(RESULTS)), 60, "the result ref")
    time.sleep(1.5)  # not an assertion on time: the runner keeps trying the fold the hook declines
    assert proc.poll() is None, "with --wait-for-fold the runner waits for its fold"
    flag.unlink()
    code, result, stderr = finish(proc)
    assert (code, result["outcome"]) == (0, "done"), (result, stderr)
    assert remote.issue(first)["state"] == "done"
    assert remote.refs() == [], "no jit-dispatch ref left"


def test_wait_for_fold_from_dispatch_toml_and_the_environment(tmp_path: Path) -> None:
    """The key and the variable reach the runner as the flag does (it waits, so the budget runs out)."""
    remote, _, _, _ = held_with_dependent(tmp_path)
    toml_clone, env_clone = remote.clone(tmp_path / "toml"), remote.clone(tmp_path / "env")
    (toml_clone / "dispatch.toml").write_text('sync = "git"\nwait_for_fold = true\npush_budget = "2s"\n')
    code, result, stderr = finish(start(toml_clone, "t", "true"))
    assert code == 3 and "pending as refs/jit-dispatch/results/" in result["reason"], (result, stderr)
    env = {**clean_env(), "JIT_DISPATCH_WAIT_FOR_FOLD": "true"}
    code, result, stderr = finish(start(env_clone, "e", "true", "--push-budget", "2s", env=env))
    assert code == 3 and "pending as refs/jit-dispatch/results/" in result["reason"], (result, stderr)
