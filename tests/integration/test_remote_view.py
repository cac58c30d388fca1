"""What a runner reads of the remote: an exact view after winning a lock, with real git.

`git ls-remote` is no snapshot of an atomic push: it reads `refs/heads/main` before
`refs/jit-dispatch/…`, so a fold landing in between shows the old tip with the folded result refs
already gone. Here an upload-pack wrapper serves exactly such torn listings (the old tip, the
current jit-dispatch refs) to a runner, deterministically; bench/remote_torn.py runs the
choreography of issue 18 (every session that could be torn, up to the first after the lock a
`post-receive` hook marks, torn at random) 500 times, and a few of its trials run here.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import PROJECT_ROOT, clean_env, git, make_remote, run_cli
from jit_dispatch.trackers.jit.store import NewIssue
from remote_runs import finish, held_command, start, wait_for


def serve_torn_listings(clone: Path, bare: Path, old_tip: str, count: int) -> None:
    """The clone's first `count` upload-pack sessions see `old_tip` as main beside the remote's
    current `refs/jit-dispatch/` refs (a torn listing); later ones see the remote as it is."""
    counter, torn = clone.parent / f"{clone.name}-reads", clone.parent / f"{clone.name}-torn.git"
    wrapper = clone.parent / f"{clone.name}-upload-pack"
    wrapper.write_text(
        f"""#!/bin/sh
n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}
[ $n -gt {count} ] && exec git-upload-pack "$@"
rm -rf {torn}; git init -q --bare -b main {torn}; echo {bare}/objects > {torn}/objects/info/alternates
git --git-dir={bare} for-each-ref --format='create %(refname) %(objectname)' refs/jit-dispatch/ |
  git --git-dir={torn} update-ref --stdin
git --git-dir={torn} update-ref refs/heads/main {old_tip}
exec git-upload-pack {torn}
"""
    )
    wrapper.chmod(0o755)
    git(clone, "config", "remote.origin.uploadpack", str(wrapper))


def test_a_torn_listing_after_the_lock_never_runs_a_finished_issue_again(tmp_path: Path) -> None:
    """Runner A finishes the issue. Runner B's listings before and right after its lock show the old
    tip (issue ready) and no result ref (folded): B wins a lock on a finished issue. B must re-read
    the branch after the listing, see `done`, give the lock back and never run the command."""
    remote = make_remote(tmp_path, [NewIssue("finished once")])
    target = remote.ids[0]
    old_tip = git(remote.bare, "rev-parse", "main").strip()
    first, second = remote.clone(tmp_path / "first"), remote.clone(tmp_path / "second")
    log = tmp_path / "runs.log"
    code, result, stderr = finish(start(first, "a", f"echo start >> {log}"))
    assert (code, result["outcome"]) == (0, "done"), (result, stderr)
    serve_torn_listings(second, remote.bare, old_tip, count=2)

    code, result, stderr = finish(start(second, "b", f"echo start >> {log}"))
    assert (code, result["outcome"]) == (0, "idle"), (result, stderr)
    assert log.read_text().split().count("start") == 1, "the finished issue's command ran again"
    assert remote.issue(target)["state"] == "done"
    assert remote.refs() == [], "no jit-dispatch ref left"


def test_torn_listings_up_to_the_lock_never_run_the_command_twice_in_a_few_trials() -> None:
    """bench/remote_torn.py's trials (a handful; the bench runs 500): runner B, served listings torn
    by a fold that landed before its lock, never runs the finished issue's command again."""
    proc = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "bench" / "remote_torn.py"), "--trials", "4", "--parallel", "1"],
        env=clean_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "**double runs 0**" in proc.stdout and "B's outcomes {'idle': 4}" in proc.stdout, proc.stdout


def test_status_judges_silence_by_the_locks_movement_as_reap_does(tmp_path: Path) -> None:
    """A command running longer than `--stale-after` whose lock keeps moving is not STALE (text,
    JSON); once its runner is killed and the lock stands still for two intervals, it is."""
    remote = make_remote(tmp_path, [NewIssue("long run")])
    target = remote.ids[0]
    runner, watcher = remote.clone(tmp_path / "runner"), remote.clone(tmp_path / "watcher")
    command, started, go = held_command(tmp_path)
    proc = start(runner, "w", command, "--heartbeat", "1s")
    try:
        wait_for(started.exists, 60, "the command to start")
        time.sleep(3)  # not an assertion: the claim is now older than --stale-after
        status = run_cli("status", "--stale-after", "2s", "--sync", "git", "--json", cwd=watcher)
        assert status.returncode == 0, status.stderr
        assert [(c["issue_id"], c["stale"]) for c in status.json["in_progress"]] == [(target, False)], status.stdout
        text = run_cli("status", "--stale-after", "2s", "--sync", "git", cwd=watcher)
        assert text.returncode == 0 and "STALE" not in text.stdout, text.stdout
        proc.send_signal(signal.SIGKILL)  # the runner dies; its lock stops moving
        proc.wait(timeout=10)
        time.sleep(3)  # not an assertion: the last beat is now older than --stale-after
        status = run_cli("status", "--stale-after", "2s", "--sync", "git", "--json", cwd=watcher)
        assert [(c["issue_id"], c["stale"]) for c in status.json["in_progress"]] == [(target, True)], status.stdout
    finally:
        go.touch()
        if proc.poll() is None:
            proc.kill()
