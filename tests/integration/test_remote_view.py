"""What a runner reads of the remote: an exact view after winning a lock, with real git.

`git ls-remote` is no snapshot of an atomic push: it reads `refs/heads/main` before
`refs/jit-dispatch/…`, so a fold landing in between shows the old tip with the folded result refs
already gone. Here an upload-pack wrapper serves exactly such torn listings (the old tip, the
current jit-dispatch refs) to a runner, deterministically; bench/remote_torn.py races real folds.
"""

from __future__ import annotations

from pathlib import Path

from helpers import git, make_remote
from jit_dispatch.trackers.jit.store import NewIssue
from remote_runs import finish, start


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
