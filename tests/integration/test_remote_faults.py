"""Remote mode under hostile conditions, with real git: a runner whose clock is 20 minutes behind
(libfaketime) and whose pushes are slow, a server refusing 30% of pushes at random (over file://
and over `git daemon`), SIGKILL at each step, a reaper with a tiny threshold, a late result.

The promise under test: each issue's command runs at most once at a time, never again after a
success whose result was accepted, and no result is lost.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from helpers import Remote, clean_env, git, make_remote, run_cli
from jit_dispatch.process import runlock
from jit_dispatch.trackers.jit.store import NewIssue
from remote_runs import (
    LOCKS,
    assert_remote_store_valid,
    finish,
    held_command,
    install_hook,
    start,
    wait_for,
)

FAKETIME = shutil.which("faketime")


def clone_from(url: str, dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", "--depth", "1", url, str(dest)], check=True, capture_output=True)
    return dest


def slow_pushes(clone: Path, seconds: float) -> None:
    """Every push from this clone waits `seconds` before the server even sees it."""
    wrapper = clone.parent / f"{clone.name}-slow-receive-pack"
    wrapper.write_text(f'#!/bin/sh\nsleep {seconds}\nexec git-receive-pack "$@"\n')
    wrapper.chmod(0o755)
    git(clone, "config", "remote.origin.receivepack", str(wrapper))


def logging_command(log: Path) -> str:
    """Appends `start <issue>` and `end <issue>` around a short piece of work."""
    return f'echo "start $JIT_ISSUE_ID" >> {log}; sleep 0.3; echo "end $JIT_ISSUE_ID" >> {log}'


def assert_never_overlapped(log: Path) -> Counter:
    """Per issue, runs never overlap; returns how often each issue's command ran to its end."""
    running: set[str] = set()
    ended: Counter = Counter()
    for line in log.read_text().splitlines() if log.exists() else []:
        what, issue_id = line.split()
        if what == "start":
            assert issue_id not in running, f"{issue_id[:8]} ran twice at once"
            running.add(issue_id)
        elif what == "killed":  # died with its SIGKILLed runner (the test saw its run lock freed)
            running.discard(issue_id)
        else:
            running.discard(issue_id)
            ended[issue_id] += 1
    return ended


# ---------------------------------------------------------------- clocks
@pytest.mark.skipif(FAKETIME is None, reason="libfaketime not installed (apt-get install -y faketime)")
def test_a_runner_20_minutes_behind_with_slow_pushes_keeps_its_claim(tmp_path: Path) -> None:
    """Its lock looks 20 minutes old to everyone else. Another runner does not take it over; a reaper
    with a 1 s threshold watches it move and leaves it alone; it ends `done` and ran once."""
    remote = make_remote(tmp_path, [NewIssue("contested")])
    target = remote.ids[0]
    behind, other, reaper = (remote.clone(tmp_path / name) for name in ("behind", "other", "reaper"))
    slow_pushes(behind, 0.5)
    log, go = tmp_path / "runs.log", tmp_path / "go"
    env = clean_env(FAKETIME="-20m", LD_PRELOAD=_libfaketime())
    wait_for_go = f"while [ ! -f {go} ]; do sleep 0.05; done"
    command = f'echo "start $JIT_ISSUE_ID" >> {log}; {wait_for_go}; echo "end $JIT_ISSUE_ID" >> {log}'
    proc = start(behind, "behind", command, "--heartbeat", "3s", env=env)  # pushes: a sixth of it
    try:
        wait_for(lambda: log.exists(), 60, "the skewed runner's command to start")
        code, result, stderr = finish(start(other, "other", logging_command(log), "--issue", target))
        assert (code, result["outcome"]) == (0, "idle"), (result, stderr)
        for _ in range(2):
            reaped = run_cli("reap", "--older-than", "1s", "--sync", "git", "--json", cwd=reaper)
            assert reaped.returncode == 0, reaped.stderr
            assert [(r["issue_id"], r["outcome"].split()[0]) for r in reaped.json["reaped"]] == [(target, "skipped")]
    finally:
        go.touch()
    code, result, stderr = finish(proc)
    assert (code, result["outcome"]) == (0, "done"), (result, stderr)
    assert assert_never_overlapped(log) == Counter([target])
    assert remote.issue(target)["state"] == "done"
    assert remote.refs() == [], "no jit-dispatch ref left"


def _libfaketime() -> str:
    for candidate in Path("/usr/lib").rglob("libfaketime.so.1"):
        return str(candidate)
    pytest.skip("libfaketime.so.1 not found")


def test_reap_with_a_tiny_threshold_never_releases_a_live_claim(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("long run")])
    target = remote.ids[0]
    runner, reaper = remote.clone(tmp_path / "runner"), remote.clone(tmp_path / "reaper")
    command, started, go = held_command(tmp_path)
    proc = start(runner, "w", command, "--heartbeat", "1s")
    try:
        wait_for(started.exists, 60, "the command to start")
        wait_for(lambda: remote.issue(target)["state"] == "in_progress", 60, "the claim on the branch")
        time.sleep(1.1)  # not an assertion: lets the claim's timestamps pass the 1 s threshold
        reaped = run_cli("reap", "--older-than", "1s", "--sync", "git", "--json", cwd=reaper)
        assert reaped.returncode == 0, reaped.stderr
        # A beat younger than 1 s spares the claim the watch; an older one is watched and moves.
        assert {(r["issue_id"], r["outcome"].split()[0]) for r in reaped.json["reaped"]} <= {(target, "skipped")}
        assert remote.issue(target)["state"] == "in_progress"
    finally:
        go.touch()
    code, result, stderr = finish(proc)
    assert (code, result["outcome"]) == (0, "done"), (result, stderr)
    assert remote.refs() == [], "no jit-dispatch ref left"


@pytest.mark.skipif(FAKETIME is None, reason="libfaketime not installed (apt-get install -y faketime)")
def test_a_reaper_looping_with_a_tiny_threshold_during_a_fan_out_releases_nothing(tmp_path: Path) -> None:
    """The runners' clocks are 20 minutes behind: every claim looks stale, so every reap watches them."""
    remote = make_remote(tmp_path, [NewIssue(f"task {n}") for n in range(6)])
    runners = [remote.clone(tmp_path / f"runner{i}") for i in range(5)]
    reaper = remote.clone(tmp_path / "reaper")
    log = tmp_path / "runs.log"
    work = f'echo "start $JIT_ISSUE_ID" >> {log}; sleep 3; echo "end $JIT_ISSUE_ID" >> {log}'
    env = clean_env(FAKETIME="-20m", LD_PRELOAD=_libfaketime())
    procs = [start(clone, f"w{i}", work, "--heartbeat", "1s", env=env) for i, clone in enumerate(runners)]
    outcomes: Counter = Counter()
    deadline = time.monotonic() + 60
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        reaped = run_cli("reap", "--older-than", "1s", "--sync", "git", "--json", cwd=reaper)
        assert reaped.returncode == 0, reaped.stderr
        outcomes.update(r["outcome"].split()[0] for r in reaped.json["reaped"])
    results = [finish(p) for p in procs]
    assert [r["outcome"] for _, r, _ in results] == ["done"] * 5, results
    assert set(outcomes) == {"skipped"}, outcomes
    assert assert_never_overlapped(log) == Counter({r["issue_id"]: 1 for _, r, _ in results})
    assert remote.refs() == [], "no jit-dispatch ref left"


def test_refused_heartbeats_are_retried_and_do_not_stop_the_command(tmp_path: Path) -> None:
    """A remote refusing every other heartbeat push, the first included: a refused beat is not a
    verdict; the runner retries it soon and its command runs to the end. (Refusals alternate
    rather than fall at random, so a loaded machine never sees a run of refusals that outlasts
    the fence: what is proven is the retry, every time.)"""
    remote = make_remote(tmp_path, [NewIssue("long run on a flaky remote")])
    refusals, attempts = tmp_path / "refusals", tmp_path / "attempts"
    install_hook(
        remote,
        f"""while read -r old new ref; do
  if [ "${{ref#{LOCKS}}}" != "$ref" ] && [ "$old" != {"0" * 40} ] && [ "$new" != {"0" * 40} ]; then
    echo attempt >> {attempts}
    if [ $(($(wc -l < {attempts}) % 2)) -eq 1 ]; then
      echo x >> {refusals}; echo "busy, try again" >&2; exit 1
    fi
  fi
done
exit 0
""",
    )
    runner = remote.clone(tmp_path / "runner")
    # 9 s at 4 s beats: two beats, each refused once and retried.
    code, result, stderr = finish(start(runner, "w", "sleep 9", "--heartbeat", "4s"))
    assert (code, result["outcome"]) == (0, "done"), (result, stderr)
    assert refusals.exists(), "no heartbeat was refused: the retry went untested"
    assert len(attempts.read_text().splitlines()) >= 2, "a refused beat was never retried"
    assert remote.refs() == [], "no jit-dispatch ref left"


def test_a_late_result_of_a_runner_whose_claim_was_taken_back_is_refused(tmp_path: Path) -> None:
    """A person releases the running issue (the lock goes with it); the runner's result then finds
    its lock gone: `lost`, and nothing it would have written reaches the branch."""
    remote = make_remote(tmp_path, [NewIssue("taken back")])
    target = remote.ids[0]
    runner, admin = remote.clone(tmp_path / "runner"), remote.clone(tmp_path / "admin")
    command, started, go = held_command(tmp_path)
    proc = start(runner, "w", command, "--heartbeat", "10m")
    try:
        wait_for(started.exists, 60, "the command to start")
        released = run_cli("release", target[:8], "taken back by hand", "--sync", "git", cwd=admin)
        assert released.returncode == 0, released.stderr
        tip = git(remote.bare, "rev-parse", "main").strip()
    finally:
        go.touch()
    code, result, stderr = finish(proc)
    assert (code, result["outcome"]) == (1, "lost"), (result, stderr)
    assert git(remote.bare, "rev-parse", "main").strip() == tip, "the late result wrote nothing"
    assert remote.issue(target)["state"] == "ready"
    assert remote.refs() == [], "no jit-dispatch ref left"


def test_a_runner_whose_claim_is_taken_away_stops_its_command_before_another_runs_it(tmp_path: Path) -> None:
    """At most once at a time: the next heartbeat finds the lock gone and stops the command; only
    then can another runner's command start (the log shows no overlap)."""
    remote = make_remote(tmp_path, [NewIssue("taken back")])
    target = remote.ids[0]
    first, second, admin = (remote.clone(tmp_path / name) for name in ("first", "second", "admin"))
    log = tmp_path / "runs.log"
    endless = f'echo "start $JIT_ISSUE_ID" >> {log}; trap \'echo "end $JIT_ISSUE_ID" >> {log}; exit 1\' TERM; '
    endless += "while :; do sleep 0.05; done"
    proc = start(first, "first", endless, "--heartbeat", "1s")
    try:
        wait_for(lambda: log.exists(), 60, "the command to start")
        released = run_cli("release", target[:8], "taken back by hand", "--sync", "git", cwd=admin)
        assert released.returncode == 0, released.stderr
        code, result, stderr = finish(proc, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (code, result["outcome"]) == (1, "lost"), (result, stderr)
    assert "taken away while the command ran: taken back by hand" in result["reason"], "the person's reason"
    assert remote.issue(target)["context"]["dispatch.attempts"] == "0", "a person's release is no failed attempt"
    code, result, stderr = finish(start(second, "second", logging_command(log)))
    assert (code, result["outcome"]) == (0, "done"), (result, stderr)
    assert assert_never_overlapped(log) == Counter({target: 2})
    assert remote.refs() == [], "no jit-dispatch ref left"


def test_a_claim_folded_by_another_runner_before_its_holder_looks_again_is_kept(tmp_path: Path) -> None:
    """Found at 64 runners: runner A's lock lands; before A re-reads the view, runner B's fold carries
    A's claim onto the branch. A must see its own claim there and run, not give the issue up."""
    remote = make_remote(tmp_path, [NewIssue("A's", "high"), NewIssue("B's")])
    first, second = remote.ids
    room = tmp_path / "room"
    room.mkdir()
    hook = remote.bare / "hooks" / "post-receive"
    hook.write_text(
        "#!/usr/bin/env bash\nwhile read -r old new ref; do\n"
        f'  if [ "$ref" = {LOCKS}{first} ] && [ "$old" = {"0" * 40} ]; then\n'
        f"    touch {room}/held; for _ in $(seq 500); do [ -f {room}/go ] && break; sleep 0.02; done\n"
        "  fi\ndone\n"
    )
    hook.chmod(0o755)
    a_clone, b_clone = remote.clone(tmp_path / "a"), remote.clone(tmp_path / "b")
    log = tmp_path / "runs.log"
    proc = start(a_clone, "a", logging_command(log), "--issue", first)
    try:
        wait_for((room / "held").exists, 60, "A's lock to land")
        code, result, stderr = finish(start(b_clone, "b", logging_command(log), "--issue", second))
        assert (code, result["outcome"]) == (0, "done"), (result, stderr)
        assert remote.issue(first)["assignee"] == "agent:a", "B's fold carried A's claim"
    finally:
        (room / "go").touch()
    code, result, stderr = finish(proc)
    assert (code, result["outcome"], result["issue_id"]) == (0, "done", first), (result, stderr)
    assert assert_never_overlapped(log) == Counter(remote.ids)
    assert remote.refs() == [], "no jit-dispatch ref left"


# ---------------------------------------------------------------- SIGKILL at each step
HOLD = """while read -r old new ref; do
  if {{ [ "$ref" = refs/heads/main ] && git log -1 --format=%s "$new" | grep -q '^jit-dispatch: {verb} '; }} ||
     {{ [ "{verb}" = lock ] && [ "${{ref#{locks}}}" != "$ref" ]; }} ||
     {{ [ "{verb}" = result ] && [ "${{ref#refs/jit-dispatch/results/}}" != "$ref" ]; }}; then
    touch "{room}/held"
    for _ in $(seq 300); do [ -f "{room}/go" ] && break; sleep 0.02; done
  fi
done
exit 0
"""


HELD_PUSH = {"during-lock-push": "lock", "after-lock": "claim", "during-result-push": "result", "during-fold": "done"}
POINTS = ["during-lock-push", "after-lock", "during-command", "during-result-push", "during-fold"]


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_each_step_is_recovered_without_running_a_success_again(tmp_path: Path, point: str) -> None:
    remote = make_remote(tmp_path, [NewIssue("victim")])
    target = remote.ids[0]
    room = tmp_path / "room"
    room.mkdir()
    if point in HELD_PUSH:
        install_hook(remote, HOLD.format(verb=HELD_PUSH[point], room=room, locks=LOCKS))
    runner, rescuer = remote.clone(tmp_path / "runner"), remote.clone(tmp_path / "rescuer")
    log = tmp_path / "runs.log"
    proc = start(runner, "victim", logging_command(log), "--heartbeat", "1s")
    try:
        if point in HELD_PUSH:
            wait_for((room / "held").exists, 60, f"the runner to reach {point}")
        else:
            wait_for(lambda: log.exists(), 60, "the command to start")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if (
            point == "during-command"
        ):  # the command dies with its runner (docs/service.md#no-command-outlives-its-dispatcher)
            wait_for(lambda: not runlock.alive(target), 10, "the killed runner's command to end")
            with log.open("a") as handle:
                handle.write(f"killed {target}\n")
    finally:
        (room / "go").touch()
        if proc.poll() is None:
            proc.kill()
    # Accepted: on the branch, or pending as a result ref (a later fold writes it).
    accepted = remote.issue(target)["state"] == "done" or bool(remote.refs("refs/jit-dispatch/results/"))
    # Recovery: a reaper (it waits two of the dead runner's 1 s heartbeats), then the next runner.
    install_hook(remote, "exit 0\n")
    deadline = time.monotonic() + 60
    while remote.issue(target)["state"] != "done" and time.monotonic() < deadline:
        reaped = run_cli("reap", "--older-than", "1s", "--sync", "git", "--json", cwd=rescuer)
        assert reaped.returncode == 0, reaped.stderr
        code, result, stderr = finish(start(rescuer, "rescuer", logging_command(log)))
        assert code == 0 and result["outcome"] in ("done", "idle"), (result, stderr)
    ended = assert_never_overlapped(log)
    assert remote.issue(target)["state"] == "done"
    if accepted:
        assert ended[target] == 1, "a success whose result was accepted ran again"
    assert remote.refs() == [], "no jit-dispatch ref left"
    assert_remote_store_valid(remote)


# ---------------------------------------------------------------- a flaky server
FLAKY = """if [ $((RANDOM % 10)) -lt 3 ]; then echo "flaky: server busy, try again later" >&2; exit 1; fi
exit 0
"""


@pytest.mark.parametrize("transport", ["file", "git-daemon"])
def test_a_server_refusing_30_percent_of_pushes_loses_no_result(
    tmp_path: Path, transport: str, request: pytest.FixtureRequest
) -> None:
    remote = make_remote(tmp_path, [NewIssue(f"task {n}") for n in range(8)])
    url = request.getfixturevalue("daemon") + "/remote.git" if transport == "git-daemon" else remote.url
    install_hook(remote, FLAKY)
    runners = [clone_from(url, tmp_path / f"runner{i}") for i in range(6)]
    log = tmp_path / "runs.log"

    procs = [
        start(clone, f"w{i}", logging_command(log), "--spread-index", str(i), "--spread-total", "6")
        for i, clone in enumerate(runners)
    ]
    results = [finish(proc, timeout=240) for proc in procs]
    for code, result, stderr in results:
        assert (code, result["outcome"]) in ((0, "done"), (0, "idle")), (result["reason"], stderr)
    done = {result["issue_id"] for _, result, _ in results if result["outcome"] == "done"}
    assert {i for i in remote.ids if remote.issue(i)["state"] == "done"} == done, "every accepted result is there"

    install_hook(remote, "exit 0\n")  # the faults stop: nothing is stuck
    assert remote.refs() == [], "no jit-dispatch ref left"
    for n in range(len(remote.ids) - len(done)):
        code, result, stderr = finish(start(runners[n % len(runners)], "after", logging_command(log)))
        assert (code, result["outcome"]) == (0, "done"), (result["reason"], stderr)
    assert {remote.issue(i)["state"] for i in remote.ids} == {"done"}
    assert assert_never_overlapped(log) == Counter(remote.ids), "each command ran once"
    assert remote.refs() == [], "no jit-dispatch ref left"
    assert_remote_store_valid(remote)


def test_remote_mode_over_git_daemon(tmp_path: Path, daemon: str) -> None:
    remote: Remote = make_remote(tmp_path, [NewIssue(f"task {n}") for n in range(3)])
    clones = [clone_from(f"{daemon}/remote.git", tmp_path / f"runner{i}") for i in range(3)]
    log = tmp_path / "runs.log"
    results = [finish(p) for p in [start(c, f"w{i}", logging_command(log)) for i, c in enumerate(clones)]]
    assert sorted(r["outcome"] for _, r, _ in results) == ["done"] * 3, results
    assert assert_never_overlapped(log) == Counter(remote.ids)
    assert remote.refs() == [], "no jit-dispatch ref left"


# ---------------------------------------------------------------- pending results
def test_results_pending_while_the_branch_refuses_are_folded_in_order_later(tmp_path: Path) -> None:
    """The branch refuses every push for a while (transient): a failed attempt and the next, successful
    one both stay pending as refs (their runners exit 3 when the push budget runs out, saying so); the
    view shows them meanwhile; the first run after the fault folds both, in order."""
    remote = make_remote(tmp_path, [NewIssue("flaky work")])
    target = remote.ids[0]
    refuse_branch = 'if [ "$ref" = refs/heads/main ]; then echo "busy, retry later" >&2; exit 1; fi'
    install_hook(remote, f"while read -r old new ref; do\n  {refuse_branch}\ndone\nexit 0\n")
    first, second, third = (remote.clone(tmp_path / name) for name in ("first", "second", "third"))
    log = tmp_path / "runs.log"

    wait = ("--wait-for-fold", "--push-budget", "2s")  # as before it was an option: the runner waits for its fold
    code, result, stderr = finish(start(first, "first", f"{logging_command(log)}; exit 7", *wait))
    assert code == 3 and "pending as refs/jit-dispatch/results/" in result["reason"], (result, stderr)
    assert "stays claimed" not in result["reason"] and "instead" not in result["reason"], "nothing to give back"
    listing = run_cli("ready", "--sync", "git", "--json", cwd=third)
    assert [i["issue_id"] for i in listing.json["dispatchable"]] == [target], "the view shows the release"
    code, result, stderr = finish(start(second, "second", logging_command(log), *wait))
    assert code == 3 and result["attempt"] == 2, (result, stderr)
    assert remote.issue(target)["state"] == "ready" and remote.issue(target)["assignee"] is None, "nothing folded"
    assert len(remote.refs("refs/jit-dispatch/results/")) == 2
    status = run_cli("status", "--sync", "git", "--json", cwd=third)
    assert status.returncode == 0 and status.json["counts"].get("done") == 1, status.stdout

    install_hook(remote, "exit 0\n")
    code, result, stderr = finish(start(third, "third", logging_command(log)))
    assert (code, result["outcome"]) == (0, "idle"), (result, stderr)
    raw = remote.issue(target)
    assert (raw["state"], raw["assignee"], raw["context"]["dispatch.attempts"]) == ("done", "agent:second", "1")
    kinds = [(e["type"], e.get("assignee")) for e in remote.events() if e["issue_id"] == target]
    claims = [who for kind, who in kinds if kind == "issue_claimed"]
    assert claims == ["agent:first", "agent:second"], kinds
    types = [kind for kind, _ in kinds]
    assert types.index("issue_released") < kinds.index(("issue_claimed", "agent:second")), kinds
    assert assert_never_overlapped(log) == Counter({target: 2})
    assert remote.refs() == [], "no jit-dispatch ref left"
