"""Remote mode (docs/remote-mode.md) against real git: a bare repository plays GitHub, shallow clones play
the runners, and every dispatcher is a real `jit-dispatch once --sync git` process.

What must hold, whatever the interleaving: the remote accepts each claim lock once, so no issue is
claimed (or worked on) twice; the state branch stays valid jit (every file parses, one
`issue_claimed` per claim); the runner's clone (working tree, index, HEAD, refs) is never touched;
no lock ref is left once every runner has settled.

To force two runners onto the same lock at the same moment, a `pre-receive` hook in the bare
repository holds each lock push until both have arrived (a barrier), so both pass git's client-side
lease check and race in the server's ref transaction.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from helpers import GIT_IDENTITY, Remote, clean_env, git, make_remote, run_cli
from jit_dispatch.trackers.jit.store import JitStore, NewIssue
from remote_runs import LOCKS, assert_remote_store_valid, finish, held_command, install_hook, start, wait_for

EMPTY_TREE_INPUT = b""
ZERO = "0" * 40


def once(
    clone: Path, agent: str, command: str, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, dict, str]:
    return finish(start(clone, agent, command, *extra, env=env))


def head_of(clone: Path) -> str:
    return git(clone, "rev-parse", "HEAD").strip()


def assert_clone_untouched(clone: Path, head: str) -> None:
    """Working tree and index clean, HEAD where it was, no private ref left behind."""
    assert git(clone, "status", "--porcelain") == "", f"{clone.name}: working tree or index changed"
    assert head_of(clone) == head, f"{clone.name}: HEAD moved"
    assert git(clone, "symbolic-ref", "HEAD").strip() == "refs/heads/main", f"{clone.name}: branch switched"
    assert git(clone, "for-each-ref", "refs/jit-dispatch/") == "", f"{clone.name}: private refs left behind"


def claims_per_issue(remote: Remote) -> Counter:
    return Counter(e["issue_id"] for e in remote.events() if e["type"] == "issue_claimed")


def subjects(remote: Remote, count: int) -> list[str]:
    """The last `count` commit subjects on the remote's main, oldest first."""
    return git(remote.bare, "log", f"-{count}", "--reverse", "--format=%s", "main").splitlines()


def lock_barrier(remote: Remote, issue_id: str, room: Path, parties: int = 2) -> None:
    """Hold every push creating `issue_id`'s lock until `parties` of them are waiting, then let all through."""
    room.mkdir()
    install_hook(
        remote,
        f"""while read -r old new ref; do
  if [ "$ref" = "{LOCKS}{issue_id}" ] && [ "$old" = {ZERO} ]; then
    touch "{room}/$$"
    for _ in $(seq 500); do
      [ "$(ls "{room}" | wc -l)" -ge {parties} ] && break
      sleep 0.02
    done
  fi
done
exit 0
""",
    )


def push_lock(remote: Remote, admin: Path, issue_id: str, *, age_seconds: int = 0, message: str = "x") -> str:
    """A lock ref made by hand: an empty-tree commit `age_seconds` old, pushed to the issue's lock."""
    tree = (
        subprocess.run(
            ["git", "-C", str(admin), "hash-object", "-t", "tree", "-w", "--stdin"],
            input=EMPTY_TREE_INPUT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    stamp = f"@{int(time.time()) - age_seconds} +0000"
    env = {**os.environ, **GIT_IDENTITY, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
    sha = subprocess.run(
        ["git", "-C", str(admin), "commit-tree", tree, "-m", message],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    git(admin, "push", "-q", str(remote.bare), f"{sha}:{LOCKS}{issue_id}")
    return sha


def clones(remote: Remote, tmp_path: Path, count: int) -> list[tuple[Path, str]]:
    made = [remote.clone(tmp_path / f"runner{i}") for i in range(count)]
    return [(clone, head_of(clone)) for clone in made]


# ---------------------------------------------------------------- fan-out
RUNNERS = 10
# Long enough that no runner finishes a whole claim-run-settle cycle while another is still between
# its snapshot and its lock pushes (a known bug, test_a_lock_taken_after_the_issue_was_finished_...);
# it costs little, since the runners record their claims on the branch while their commands run.
WORK = "sleep 4"


@pytest.mark.parametrize("spread", [True, False], ids=["spread-like-the-action", "strict-order"])
def test_concurrent_runners_each_claim_a_different_issue(tmp_path: Path, spread: bool) -> None:
    remote = make_remote(tmp_path, [NewIssue(f"task {n}") for n in range(14)])
    runners = clones(remote, tmp_path, RUNNERS)
    main_before = git(remote.bare, "rev-parse", "main").strip()

    procs = []
    for i, (clone, _) in enumerate(runners):
        spread_args = ["--spread-index", str(i), "--spread-total", str(RUNNERS)] if spread else []
        procs.append(start(clone, f"w{i}", WORK, "--state-branch", "main", *spread_args))
    results = [finish(proc) for proc in procs]

    claimed: dict[str, str] = {}
    for i, (code, result, stderr) in enumerate(results):
        assert (code, result["outcome"]) == (0, "done"), (result["reason"], stderr)
        assert result["agent"] == f"agent:w{i}"
        assert result["issue_id"] not in claimed, f"{result['issue_id']} dispatched to two runners"
        claimed[result["issue_id"]] = result["agent"]
    assert len(claimed) == RUNNERS
    if not spread:
        # Each runner takes the first candidate whose lock it wins: together, the first ten in order.
        assert set(claimed) == set(remote.ids[:RUNNERS])

    issues = assert_remote_store_valid(remote)
    assert set(issues) == set(remote.ids)
    for issue_id, raw in issues.items():
        if issue_id in claimed:
            assert (raw["state"], raw["assignee"]) == ("done", claimed[issue_id])
        else:
            assert (raw["state"], raw["assignee"]) == ("ready", None)
    assert claims_per_issue(remote) == Counter(claimed.keys()), "exactly one issue_claimed per claimed issue"
    for event in remote.events():
        if event["type"] == "issue_claimed":
            assert event["assignee"] == claimed[event["issue_id"]]
    # Folds carry several claims and results each: at most a claim and a settle commit per issue,
    # each on top of the last (nothing merged); every subject names what it carries.
    history = git(remote.bare, "log", "--format=%s", f"{main_before}..main").splitlines()
    assert 1 <= len(history) <= 2 * RUNNERS, history
    assert {s.split()[1] for s in history} <= {"claim", "done", "fold"}, history
    assert git(remote.bare, "rev-list", "--merges", f"{main_before}..main") == ""

    assert remote.refs() == [], "no lock or result ref left once every runner settled"
    for clone, head in runners:
        assert_clone_untouched(clone, head)


def test_runners_without_an_issue_end_idle(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue(f"task {n}") for n in range(3)])
    runners = clones(remote, tmp_path, 6)

    procs = [start(clone, f"w{i}", WORK) for i, (clone, _) in enumerate(runners)]
    results = [finish(proc) for proc in procs]

    outcomes = Counter(result["outcome"] for _, result, _ in results)
    assert outcomes == Counter({"done": 3, "idle": 3}), [(r["outcome"], r["reason"], e) for _, r, e in results]
    for code, result, stderr in results:
        assert code == 0, stderr
        if result["outcome"] == "idle":
            assert result["issue_id"] is None and result["reason"], result
    done = {result["issue_id"] for _, result, _ in results if result["outcome"] == "done"}
    assert done == set(remote.ids)
    assert claims_per_issue(remote) == Counter(remote.ids)
    assert_remote_store_valid(remote)
    assert remote.refs() == [], "no jit-dispatch ref left"
    for clone, head in runners:
        assert_clone_untouched(clone, head)


# ---------------------------------------------------------------- two runners, one lock
def test_two_runners_forced_onto_one_issue_only_one_runs_it(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("contested"), NewIssue("other")])
    target = remote.ids[0]
    lock_barrier(remote, target, tmp_path / "barrier")
    runners = clones(remote, tmp_path, 2)
    ran = tmp_path / "ran.txt"

    command = f'echo "$JIT_AGENT_ID" >> {ran}'
    procs = [start(clone, f"w{i}", command, "--issue", target) for i, (clone, _) in enumerate(runners)]
    results = [finish(proc) for proc in procs]

    assert len(list((tmp_path / "barrier").iterdir())) == 2, "both lock pushes reached the server together"
    by_outcome = {result["outcome"]: (code, result) for code, result, _ in results}
    assert set(by_outcome) == {"done", "idle"}, [(r["outcome"], r["reason"], e) for _, r, e in results]
    winner_code, winner = by_outcome["done"]
    loser_code, loser = by_outcome["idle"]
    assert winner_code == loser_code == 0
    assert winner["issue_id"] == target and loser["issue_id"] is None
    assert "taken by another runner" in loser["reason"]
    assert ran.read_text().split() == [winner["agent"]], "the command ran once, for the lock's winner"
    assert claims_per_issue(remote) == Counter([target])
    assert remote.issue(target)["assignee"] == winner["agent"]
    assert remote.issue(remote.ids[1])["state"] == "ready", "--issue kept the loser off the other issue"
    assert remote.refs() == [], "no jit-dispatch ref left"
    for clone, head in runners:
        assert_clone_untouched(clone, head)


def test_the_runner_that_loses_a_lock_takes_the_next_candidate(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("first", "high"), NewIssue("second", "high"), NewIssue("third")])
    lock_barrier(remote, remote.ids[0], tmp_path / "barrier")
    runners = clones(remote, tmp_path, 2)

    results = [finish(p) for p in [start(clone, f"w{i}", "true") for i, (clone, _) in enumerate(runners)]]

    assert len(list((tmp_path / "barrier").iterdir())) == 2, "both went for the top issue at once"
    assert [(code, result["outcome"]) for code, result, _ in results] == [(0, "done"), (0, "done")], results
    assert sorted(result["issue_id"] for _, result, _ in results) == sorted(remote.ids[:2])
    assert claims_per_issue(remote) == Counter(remote.ids[:2])
    assert remote.issue(remote.ids[2])["state"] == "ready"
    assert remote.refs() == [], "no jit-dispatch ref left"


def test_a_fresh_lock_holds_its_issue_back(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("locked", "high"), NewIssue("free")])
    locked, free = remote.ids
    admin = remote.clone(tmp_path / "admin", shallow=False)
    seed = git(admin, "rev-parse", "main").strip()
    git(admin, "push", "-q", str(remote.bare), f"{seed}:{LOCKS}{locked}")  # some commit, just now
    clone, head = clones(remote, tmp_path, 1)[0]

    listing = run_cli("ready", "--sync", "git", "--all", cwd=clone)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].startswith(free[:8]) and "held" not in lines[0], lines
    assert lines[1].startswith(locked[:8]) and "[held: being claimed by another runner (remote lock)]" in lines[1]
    as_json = run_cli("ready", "--sync", "git", "--all", "--json", cwd=clone).json
    assert [i["issue_id"] for i in as_json["dispatchable"]] == [free]
    assert [(h["issue_id"], "remote lock" in h["reason"]) for h in as_json["held"]] == [(locked, True)]

    marker = tmp_path / "ran"
    code, result, stderr = once(clone, "w", f"touch {marker}", "--issue", locked[:8])
    assert (code, result["outcome"]) == (0, "idle"), stderr
    assert "remote lock" in result["reason"], result["reason"]
    assert not marker.exists()

    code, result, stderr = once(clone, "w", "true")
    assert (code, result["outcome"], result["issue_id"]) == (0, "done", free), (result["reason"], stderr)
    assert remote.issue(locked)["state"] == "ready" and remote.issue(locked)["assignee"] is None
    assert claims_per_issue(remote) == Counter([free])
    assert git(remote.bare, "rev-parse", f"{LOCKS}{locked}").strip() == seed, "another runner's lock is not ours"
    assert remote.refs(LOCKS) == [f"{LOCKS}{locked}"]
    assert_clone_untouched(clone, head)


def test_a_lock_from_an_older_version_holds_its_issue_until_reaped(tmp_path: Path) -> None:
    """Migration: a lock written by the previous version (agent, run, time; no heartbeat) whose runner
    died before recording its claim. No runner takes it over by its age any more; `reap` sees it as
    a claim (timestamps are the only evidence such a lock gives) and releases it; then it runs."""
    remote = make_remote(tmp_path, [NewIssue("orphaned", "high"), NewIssue("other")])
    target = remote.ids[0]
    admin = remote.clone(tmp_path / "admin", shallow=False)
    message = f"jit-dispatch lock {target}\n\nagent: agent:old\nrun: host:1\nat: 2020-01-01T00:00:00.000000000Z\n"
    push_lock(remote, admin, target, age_seconds=3600, message=message)
    clone, head = clones(remote, tmp_path, 1)[0]

    listing = run_cli("ready", "--sync", "git", "--all", "--json", cwd=clone).json
    assert [i["issue_id"] for i in listing["dispatchable"]] == [remote.ids[1]]
    assert listing["held"] == [], "the view shows the lock as what it is: a claim (in progress)"
    board = run_cli("status", "--sync", "git", "--json", cwd=clone)
    assert board.returncode == 0, board.stderr
    assert target in board.stdout and "agent:old" in board.stdout

    reaped = run_cli("reap", "--older-than", "10m", "--sync", "git", "--json", cwd=clone)
    assert reaped.returncode == 0, reaped.stderr
    assert [(r["issue_id"], r["outcome"]) for r in reaped.json["reaped"]] == [(target, "released")]
    assert remote.refs() == [], "no jit-dispatch ref left"
    raw = remote.issue(target)
    assert (raw["state"], raw["assignee"], raw["context"]["dispatch.attempts"]) == ("ready", None, "1")
    types = [e["type"] for e in remote.events() if e["issue_id"] == target]
    assert types.count("issue_claimed") == 1 and types.index("issue_claimed") < types.index("issue_released"), types

    code, result, stderr = once(clone, "w", "true")
    assert (code, result["outcome"], result["issue_id"]) == (0, "done", target), (result["reason"], stderr)
    assert claims_per_issue(remote) == Counter([target, target])
    assert remote.refs() == [], "no jit-dispatch ref left"
    assert_clone_untouched(clone, head)


def test_a_lock_taken_after_the_issue_was_finished_does_not_run_it_again(tmp_path: Path) -> None:
    """Runner `slow` snapshots (issue ready, no lock) and pushes its lock; the push is held on the server
    while runner `fast` claims, runs, completes the issue and drops its lock. Then `slow`'s lock lands:
    the ref does not exist, so the lease holds. The branch already says `done`: `slow` must not run it."""
    remote = make_remote(tmp_path, [NewIssue("finished meanwhile")])
    target = remote.ids[0]
    room = tmp_path / "held"
    install_hook(
        remote,
        f"""while read -r old new ref; do
  if [ "${{ref#{LOCKS}}}" != "$ref" ] && git cat-file -p "$new" | grep -q '^agent: agent:slow$'; then
    touch "{room}.waiting"
    for _ in $(seq 500); do [ -f "{room}.go" ] && break; sleep 0.02; done
  fi
done
exit 0
""",
    )
    (slow_clone, _), (fast_clone, _) = clones(remote, tmp_path, 2)
    marker = tmp_path / "slow-ran"
    slow = start(slow_clone, "slow", f"touch {marker}")
    try:
        wait_for(Path(f"{room}.waiting").exists, 30, "slow's lock push to reach the server")
        code, fast, stderr = once(fast_clone, "fast", "true")
        assert (code, fast["outcome"]) == (0, "done"), stderr
    finally:
        Path(f"{room}.go").touch()
    code, result, stderr = finish(slow)

    assert remote.issue(target)["assignee"] == "agent:fast"
    assert remote.refs() == [], "no jit-dispatch ref left"
    assert not marker.exists(), f"the command ran again for a finished issue (outcome {result['outcome']})"
    assert (code, result["outcome"]) == (0, "idle"), (result, stderr)


# ---------------------------------------------------------------- settle, cancel
def test_a_claim_taken_away_while_running_ends_lost_and_overwrites_nothing(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("reassigned")])
    target = remote.ids[0]
    clone, head = clones(remote, tmp_path, 1)[0]
    command, started, go = held_command(tmp_path)
    proc = start(clone, "w", command)
    try:
        wait_for(started.exists, 30, "the command to start")
        wait_for(lambda: remote.issue(target)["assignee"] == "agent:w", 30, "the claim to be recorded")
        admin = remote.clone(tmp_path / "admin", shallow=False)
        path = admin / ".jit" / "issues" / f"{target}.json"
        raw = json.loads(path.read_text())
        raw["assignee"] = "agent:someone-else"
        path.write_text(json.dumps(raw, indent=2) + "\n")
        git(admin, "commit", "-q", "-am", "reassign by hand")
        git(admin, "push", "-q", "origin", "main")
        reassigned = git(admin, "rev-parse", "HEAD").strip()
    finally:
        go.touch()
    code, result, stderr = finish(proc)

    assert (code, result["outcome"]) == (1, "lost"), (result["reason"], stderr)
    issue = remote.issue(target)
    assert (issue["state"], issue["assignee"]) == ("in_progress", "agent:someone-else")
    assert git(remote.bare, "rev-parse", "main").strip() == reassigned, "nothing written after the reassignment"
    assert remote.refs() == [], "no jit-dispatch ref left"
    assert_clone_untouched(clone, head)


def test_sigterm_releases_the_issue_on_the_remote_within_7_seconds(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("cancelled")])
    target = remote.ids[0]
    clone, head = clones(remote, tmp_path, 1)[0]
    started = tmp_path / "started"
    proc = start(clone, "w", f"echo $$ > {started}.pid; touch {started}; exec sleep 60")
    try:
        wait_for(started.exists, 30, "the command to start")
        child = int(Path(f"{started}.pid").read_text())
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)

        def released() -> bool:
            issue = remote.issue(target)
            return issue["state"] == "ready" and issue["context"].get("dispatch.last_reason") == "cancelled (SIGTERM)"

        wait_for(released, 7, "the release on the remote")
        elapsed = time.monotonic() - signalled
        code, result, stderr = finish(proc, timeout=7)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert elapsed < 7
    assert (code, result["outcome"]) == (143, "released"), (result["reason"], stderr)
    issue = remote.issue(target)
    assert issue["assignee"] is None and issue["context"]["dispatch.attempts"] == "1"
    assert claims_per_issue(remote) == Counter([target])
    released_events = [e for e in remote.events() if e["type"] == "issue_released"]
    assert [(e["issue_id"], e["reason"]) for e in released_events] == [(target, "cancelled (SIGTERM)")]
    assert remote.refs() == [], "no jit-dispatch ref left"
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the command's group was stopped too
    assert_clone_untouched(clone, head)


# ---------------------------------------------------------------- failures before the command
def assert_one_line_error(code: int, stderr: str, *words: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 3, stderr
    assert len(lines) == 1 and lines[0].startswith("jit-dispatch: error:"), stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_an_unreachable_remote_is_a_tracker_error_and_nothing_runs(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("unreachable")])
    clone, head = clones(remote, tmp_path, 1)[0]
    git(clone, "remote", "set-url", "origin", str(tmp_path / "no-such-remote.git"))
    marker = tmp_path / "ran"

    result = run_cli("once", "--agent", "w", "--command", f"touch {marker}", "--sync", "git", cwd=clone)

    # The line says why (git's own reason), not only git's closing "Could not read from remote repository".
    assert_one_line_error(result.returncode, result.stderr, "origin", "no-such-remote.git")
    assert not marker.exists()
    assert remote.issue(remote.ids[0])["state"] == "ready"
    assert git(clone, "status", "--porcelain") == "" and head_of(clone) == head


def test_a_push_the_remote_refuses_is_a_tracker_error_and_nothing_runs(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("denied")])
    install_hook(remote, 'echo "permission denied" >&2\nexit 1\n')
    clone, head = clones(remote, tmp_path, 1)[0]
    main_before = git(remote.bare, "rev-parse", "main").strip()
    marker = tmp_path / "ran"

    result = run_cli("once", "--agent", "w", "--command", f"touch {marker}", "--sync", "git", "--json", cwd=clone)

    # The server's words, not git's closing "failed to push some refs".
    assert_one_line_error(result.returncode, result.stderr, "push", "origin", "permission denied")
    assert not marker.exists()
    assert git(remote.bare, "rev-parse", "main").strip() == main_before
    assert remote.refs() == [], "no jit-dispatch ref left"
    assert_clone_untouched(clone, head)


# ---------------------------------------------------------------- the record
BOT = "github-actions[bot] <41898282+github-actions[bot]@users.noreply.github.com>"


def test_state_commits_name_the_operation_and_the_author(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("done", "high"), NewIssue("released"), NewIssue("parked", "low")])
    done, released, parked = remote.ids
    clone, head = clones(remote, tmp_path, 1)[0]
    authors = ["--format=%an <%ae>|%cn <%ce>", "main"]
    actions = clean_env(GITHUB_ACTIONS="true")  # in Actions the bot authors; elsewhere the person (test_day2.py)

    code, result, stderr = once(clone, "bot", "true", "--issue", done, env=actions)
    assert (code, result["outcome"]) == (0, "done"), stderr
    assert subjects(remote, 2) == [
        f"jit-dispatch: claim {done[:8]} (agent:bot) [skip ci]",
        f"jit-dispatch: done {done[:8]} (agent:bot) [skip ci]",
    ]
    assert git(remote.bare, "log", "-2", *authors).split("\n")[:2] == [f"{BOT}|{BOT}"] * 2

    custom = ["--no-skip-ci", "--commit-author", "Bot <bot@example.com>"]
    code, result, stderr = once(clone, "bot", "exit 7", "--issue", released, *custom)
    assert (code, result["outcome"]) == (1, "released"), stderr
    assert subjects(remote, 2) == [
        f"jit-dispatch: claim {released[:8]} (agent:bot)",
        f"jit-dispatch: release {released[:8]} (agent:bot)",
    ]
    expected = "Bot <bot@example.com>|Bot <bot@example.com>"
    assert git(remote.bare, "log", "-2", *authors).split("\n")[:2] == [expected] * 2

    code, result, stderr = once(clone, "bot", "exit 7", "--issue", parked, "--max-attempts", "1", env=actions)
    assert (code, result["outcome"]) == (1, "parked"), stderr
    assert subjects(remote, 2) == [
        f"jit-dispatch: claim {parked[:8]} (agent:bot) [skip ci]",
        f"jit-dispatch: park {parked[:8]} (agent:bot) [skip ci]",
    ]
    assert "dispatch.parked_at" in remote.issue(parked)["context"]
    assert remote.refs() == [], "no jit-dispatch ref left"
    assert_clone_untouched(clone, head)


def test_a_large_repository_costs_only_its_jit_directory(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("in a big repo")], other_files=2000)
    clone, head = clones(remote, tmp_path, 1)[0]
    files_before = git(remote.bare, "ls-tree", "-r", "--name-only", "main").split()
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    seen = tmp_path / "scratch-files.txt"

    env = clean_env(RUNNER_TEMP=str(runner_temp))
    code, result, stderr = once(clone, "w", f'find "$RUNNER_TEMP" -type f > {seen}', env=env)

    assert (code, result["outcome"]) == (0, "done"), (result["reason"], stderr)
    scratch = [Path(line).relative_to(runner_temp).parts[1:] for line in seen.read_text().split()]
    private = [parts for parts in scratch if parts[0] == "git"]  # the dispatcher's own repository
    scratch = [parts for parts in scratch if parts[0] != "git"]
    assert scratch and len(scratch) < 20, scratch
    assert len(private) < 30, private  # it reads the checkout's objects; it holds only what it wrote
    parked = f"workspace-{remote.ids[0]}"  # the checkout's own .jit/, moved aside while the command runs
    for parts in scratch:  # the store's scratch checkout, fast-import's marks, the command's issue file,
        # the clone's jit worktree identity of its lease (docs/remote-mode.md#jit-leases)
        assert parts[0] in ("jit", "marks", parked, "identity") or parts == (f"{remote.ids[0]}.json",), parts
    assert list(runner_temp.iterdir()) == [], "scratch directories removed"
    for rev in ("main~1", "main"):
        changed = git(remote.bare, "diff", "--name-only", f"{rev}~1", rev).split()
        assert changed and all(name.startswith(".jit/") for name in changed), changed
    assert git(remote.bare, "ls-tree", "-r", "--name-only", "main").split() == files_before
    assert_clone_untouched(clone, head)


def make_sub_remote(tmp_path: Path, specs: list[NewIssue]) -> Remote:
    """Like make_remote, with the store at `sub/.jit` and other files around it."""
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    seed = tmp_path / "seed"
    subprocess.run(["git", "init", "-q", "-b", "main", str(seed)], check=True)
    ids = JitStore.init(seed / "sub" / ".jit").create_issues(specs)
    (seed / ".gitignore").write_text("*.lock\n")
    (seed / "README.md").write_text("top\n")
    (seed / "sub" / "notes.txt").write_text("beside the store\n")
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "seed")
    git(seed, "push", "-q", str(bare), "main")
    return Remote(bare, ids)


def test_a_store_in_a_subdirectory(tmp_path: Path) -> None:
    remote = make_sub_remote(tmp_path, [NewIssue("first", "high"), NewIssue("second")])
    clone, head = clones(remote, tmp_path, 1)[0]
    files_before = git(remote.bare, "ls-tree", "-r", "--name-only", "main").split()

    code, result, stderr = once(clone, "w", "true", "--jit-dir", "sub/.jit")
    assert (code, result["outcome"], result["issue_id"]) == (0, "done", remote.ids[0]), (result["reason"], stderr)
    assert result["store"] == "origin/main:sub/.jit"
    # From inside the subdirectory, the same store.
    code, result, stderr = once(clone / "sub", "w", "true", "--jit-dir", ".jit")
    assert (code, result["outcome"], result["issue_id"]) == (0, "done", remote.ids[1]), (result["reason"], stderr)

    issues = assert_remote_store_valid(remote, "sub/.jit")
    assert {i: raw["state"] for i, raw in issues.items()} == dict.fromkeys(remote.ids, "done")
    changed = git(remote.bare, "diff", "--name-only", "main~4", "main").split()
    assert changed and all(name.startswith("sub/.jit/") for name in changed), changed
    assert git(remote.bare, "ls-tree", "-r", "--name-only", "main").split() == files_before
    assert claims_per_issue_at(remote, "sub/.jit") == Counter(remote.ids)
    listing = run_cli("ready", "--sync", "git", "--jit-dir", "sub/.jit", cwd=clone)
    assert listing.returncode == 0 and listing.stdout == "", listing
    assert remote.refs() == [], "no jit-dispatch ref left"
    assert_clone_untouched(clone, head)


def claims_per_issue_at(remote: Remote, jit_path: str) -> Counter:
    events = git(remote.bare, "show", f"main:{jit_path}/events.jsonl").splitlines()
    return Counter(e["issue_id"] for e in map(json.loads, events) if e["type"] == "issue_claimed")


def test_a_protected_state_branch_fails_before_the_command_runs(tmp_path: Path) -> None:
    """Lock refs are accepted but the branch refuses the claim commit: exit 3, nothing ran, no lock left."""
    remote = make_remote(tmp_path, [NewIssue("protected")])
    install_hook(
        remote,
        'while read -r old new ref; do\n  if [ "$ref" = refs/heads/main ]; then\n'
        '    echo "protected branch: main"; exit 1\n  fi\ndone\n',
    )
    clone = remote.clone(tmp_path / "clone")
    marker = tmp_path / "ran"
    proc = start(clone, "w1", f"touch {marker}")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    assert "protected branch" in stderr and len(stderr.strip().splitlines()) == 1
    assert not marker.exists(), "the command never ran"
    assert remote.refs("refs/jit-dispatch/claims/") == [], "the lock was given back"
    assert remote.issue(remote.ids[0])["state"] == "ready"


def test_a_lock_that_vanishes_between_listing_and_reading_does_not_fail_the_run(tmp_path: Path) -> None:
    """Found at 32 runners: a lock listed by ls-remote is deleted (its runner settled) before it is read."""
    from jit_dispatch.trackers.remote.git import Git
    from jit_dispatch.trackers.remote.tracker import RemoteJitTracker, RemoteSettings

    remote = make_remote(tmp_path, [NewIssue("listed with a lock"), NewIssue("still locked")])
    admin = remote.clone(tmp_path / "admin", shallow=False)
    kept = push_lock(remote, admin, remote.ids[1], message="jit-dispatch lock\n\nagent: agent:a\nheartbeat: 7\n")
    clone = remote.clone(tmp_path / "clone")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    tracker = RemoteJitTracker(Git(clone), RemoteSettings(branch="main"), scratch)
    try:
        listed = {remote.ids[0]: "1" * 40, remote.ids[1]: kept}  # the first: no such ref on the remote now
        infos = tracker.read_locks(listed)
        assert list(infos) == [remote.ids[1]] and infos[remote.ids[1]].heartbeat == 7.0
    finally:
        tracker.close()
