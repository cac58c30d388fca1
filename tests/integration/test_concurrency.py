"""Many real `jit-dispatch once` processes on one store at once: no double claims (docs/architecture.md#claim).

To make every process race for the same issues, the test holds jit's `.index.lock` while the
dispatchers start: each one reads the same snapshot, then waits for the lock inside its claim.
Once all of them are waiting (seen in /proc), the lock is released and they race.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import clean_env, read_events, read_issue
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

WORKERS = 14
# A bare `sleep`: bash execs coreutils' sleep, which closes stdout just before it exits; the runner
# must still wait for its exit (test_child_process::test_a_command_that_closes_its_output_runs_to_completion).
COMMAND = "sleep 0.2"


def _waiting_on(pid: int, lock: Path) -> bool:
    """The process holds an open descriptor on `lock` (it is inside flock's poll loop)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(lock):
                return True
        except OSError:
            continue
    return False


def race(root: Path, workers: int) -> list[tuple[int, dict, str]]:
    """Start `workers` dispatchers together, release them at once; (exit code, JSON, stderr) each."""
    lock = root / ".index.lock"
    env = clean_env(JIT_LOCK_TIMEOUT="30")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    procs: list[subprocess.Popen] = []
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for i in range(workers):
            argv = ["once", "--agent", f"w{i}", "--command", COMMAND, "--jit-dir", str(root), "--json"]
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "jit_dispatch", *argv],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        deadline = time.monotonic() + 30
        while not all(_waiting_on(p.pid, lock) for p in procs):
            assert all(p.poll() is None for p in procs), "a dispatcher ended before reaching the claim"
            assert time.monotonic() < deadline, "the dispatchers never reached the claim"
            time.sleep(0.02)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    results = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=60)
            results.append((proc.returncode, json.loads(stdout), stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


@pytest.mark.parametrize("ready", [30, 5], ids=["more-issues-than-workers", "fewer-issues-than-workers"])
def test_concurrent_dispatchers_never_claim_the_same_issue(
    new_store: Callable[..., tuple[JitStore, list[str]]], ready: int
) -> None:
    store, ids = new_store(*(NewIssue(f"task {n}") for n in range(ready)))
    root = store.root
    events_before = len(read_events(root))

    results = race(root, WORKERS)

    claimed: dict[str, str] = {}  # issue id → agent
    idle = 0
    for index, (code, result, stderr) in enumerate(results):
        assert result["agent"] == f"agent:w{index}"
        if result["outcome"] == "idle":
            assert code == 0, stderr
            assert result["issue_id"] is None
            idle += 1
            continue
        assert (code, result["outcome"]) == (0, "done"), (result["reason"], stderr)
        assert result["issue_id"] not in claimed, f"{result['issue_id']} claimed twice"
        claimed[result["issue_id"]] = result["agent"]

    assert len(claimed) == min(WORKERS, ready)
    # All read the same snapshot and try candidates in the same order, each skipping only what is
    # taken: together they take exactly the first issues in dispatch order (oldest first here).
    assert set(claimed) == set(ids[:WORKERS])
    assert idle == WORKERS - len(claimed)

    events = read_events(root)[events_before:]  # every line parses: appends never interleave
    claims = Counter(e["issue_id"] for e in events if e["type"] == "issue_claimed")
    assert claims == Counter(claimed.keys()), "exactly one issue_claimed per claimed issue"
    starts = Counter(e["issue_id"] for e in events if e["type"] == "issue_state_changed" and e["to"] == "in_progress")
    assert starts == Counter(claimed.keys())
    for event in events:
        if event["type"] == "issue_claimed":
            assert event["assignee"] == claimed[event["issue_id"]]

    for issue_id in ids:
        raw = read_issue(root, issue_id)
        if issue_id in claimed:
            assert (raw["state"], raw["assignee"]) == ("done", claimed[issue_id])
        else:
            assert (raw["state"], raw["assignee"]) == ("ready", None)
    assert not list((root / "issues").glob("*.tmp")), "no temp file left behind"
