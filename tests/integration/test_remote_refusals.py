"""Refusals classified by cause (docs/remote-mode.md#refusals), each with a real remote: a
pre-receive hook printing the server's words, a remote moved away, a closed port."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from helpers import make_remote, run_cli
from jit_dispatch.trackers.jit.store import NewIssue
from jit_dispatch.trackers.remote.git import Git, GitError
from jit_dispatch.trackers.remote.plumbing import Plumbing, RemoteSettings
from jit_dispatch.trackers.remote.refusals import REFUSALS, UNRECOGNISED, Refusal
from remote_runs import finish, install_hook, start

# What each cause looks like, as the server or git words it (sources in docs/remote-mode.md#refusals).
SAID = {
    "branch protection": "error: GH006: Protected branch update failed for refs/heads/main.\n"
    "error: Changes must be made through a pull request.",
    "repository ruleset": "error: GH013: Repository rule violations found for refs/heads/main.\n"
    "Review all repository rules at https://github.com/o/r/rules?ref=refs%2Fheads%2Fmain\n\n"
    "- Changes must be made through a pull request.",
    "protected branch": "GitLab: You are not allowed to push code to protected branches on this project.",
    "archived repository": "This repository was archived so it is read-only.",
    "no write access": "Permission to o/r.git denied to github-actions[bot].",
    "permission denied": "fatal: unable to access 'https://github.com/o/r.git/': The requested URL returned error: 403",
    "credentials": "remote: Invalid username or password.\nfatal: Authentication failed for 'https://github.com/o/r.git/'",
    "repository not found (or not visible to these credentials)": "Repository not found.",
    "not a repository (yet, or not now)": "fatal: '/srv/git/r.git' does not appear to be a git repository",
    "unreachable host": "fatal: unable to access 'https://github.com/o/r.git/': Could not resolve host: github.com",
    "network": "Failed to connect to github.com port 443 after 2 ms: Connection refused",
    "server error": "error: RPC failed; HTTP 503 curl 22 The requested URL returned error: 503",
    "connection lost": "fatal: the remote end hung up unexpectedly",
    UNRECOGNISED.cause: "busy, try again later",
}


def plumbing_for(clone: Path, tmp_path: Path) -> Plumbing:
    return Plumbing(Git(clone), RemoteSettings(branch="main"), tmp_path / "scratch")


def test_every_row_has_an_example() -> None:
    assert {row.cause for row in REFUSALS} | {UNRECOGNISED.cause} == set(SAID)


@pytest.mark.parametrize("row", [*REFUSALS, UNRECOGNISED], ids=lambda row: row.cause.split(" (")[0])
def test_a_refusal_printed_by_the_server_is_classified_by_its_cause(tmp_path: Path, row: Refusal) -> None:
    remote = make_remote(tmp_path, [NewIssue("x")])
    words = SAID[row.cause].replace("'", "'\\''")
    install_hook(remote, f"printf '%s\\n' '{words}' >&2\nexit 1\n")
    plumbing = plumbing_for(remote.clone(tmp_path / "clone"), tmp_path)
    sha = plumbing.note_commit("a lock\n")
    with pytest.raises(GitError) as refused:
        plumbing.push((sha, "refs/jit-dispatch/claims/x"), leases={"refs/jit-dispatch/claims/x": ""})
    assert refused.value.transient is not row.permanent
    assert f"({row.cause}: {'permanent' if row.permanent else 'transient'})" in str(refused.value)


def test_a_remote_moved_away_is_transient_and_a_closed_port_too(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("x")])
    plumbing = plumbing_for(remote.clone(tmp_path / "clone"), tmp_path)
    remote.bare.rename(tmp_path / "away.git")
    with pytest.raises(GitError, match="not a repository") as moved:
        plumbing.list_remote()
    assert moved.value.transient
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the probe is: nobody listens there
    closed = Plumbing(plumbing.git, RemoteSettings(branch="main", remote=f"git://127.0.0.1:{port}/r.git"), tmp_path)
    with pytest.raises(GitError, match="network") as refused:
        closed.list_remote()
    assert refused.value.transient


def test_a_ruleset_on_the_branch_fails_before_the_command_runs(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("ruled")])
    words = SAID["repository ruleset"].replace("'", "'\\''")
    refuse_main = f"if [ \"$ref\" = refs/heads/main ]; then printf '%s\\n' '{words}' >&2; exit 1; fi"
    install_hook(remote, f"while read -r old new ref; do\n  {refuse_main}\ndone\nexit 0\n")
    runner = remote.clone(tmp_path / "runner")
    ran = tmp_path / "ran"
    proc = run_cli("once", "--agent", "w", "--command", f"touch {ran}", "--sync", "git", cwd=runner)
    assert proc.returncode == 3 and "(repository ruleset: permanent)" in proc.stderr, proc.stderr
    assert not ran.exists(), "the command ran although the branch refuses every fold"
    assert remote.refs() == [], "the lock was given back"


def test_an_outage_saying_not_a_repository_during_the_settle_is_waited_out(tmp_path: Path) -> None:
    """The remote disappears while the command runs and comes back 3 s later: git says "does not
    appear to be a git repository" meanwhile. The settle retries and the run ends `done`."""
    remote = make_remote(tmp_path, [NewIssue("outage")])
    runner, away, ended = remote.clone(tmp_path / "runner"), tmp_path / "away.git", tmp_path / "ended"
    proc = start(runner, "w", f"mv {remote.bare} {away} && touch {ended}", "--heartbeat", "60s")

    def restore() -> None:
        deadline = time.monotonic() + 60
        while not ended.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(3)
        away.rename(remote.bare)

    restorer = threading.Thread(target=restore)
    restorer.start()
    code, result, stderr = finish(proc)
    restorer.join()
    assert (code, result["outcome"]) == (0, "done"), (result, stderr)
    assert remote.issue(remote.ids[0])["state"] == "done"
    assert remote.refs() == [], "no jit-dispatch ref left"
