"""The agent pool (`jit-dispatch start`) as a real process on a real store: per-agent capacity,
one issue to one agent, label capabilities, every run settled; SIGTERM releases what is running.

Each command appends `START <agent> <issue> <time>` and `END …` to a shared log (short lines
appended with `>>` land whole), so the test can replay who ran what, and how many at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import clean_env, read_events, read_issue
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

StoreFactory = Callable[..., tuple[JitStore, list[str]]]
CAPACITY = {"agent:db-1": 1, "agent:web": 2, "agent:any": 3}
RANK = {"critical": 0, "high": 1, "normal": 2, "low": 3}


def command(log: Path, seconds: float = 0.3) -> str:
    return (
        f'echo "START {{agent}} {{issue_id}} $EPOCHREALTIME" >> {log}; sleep {seconds}; '
        f'echo "END {{agent}} {{issue_id}} $EPOCHREALTIME" >> {log}'
    )


def pool_config(path: Path, log: Path, poll: float = 0.2, seconds: float = 0.3) -> Path:
    """db-1 takes only db issues, web only web issues, any everything but web issues."""
    cmd = command(log, seconds).replace("'", "''")  # TOML literal strings: no escapes inside
    path.write_text(textwrap.dedent(f"""\
        poll_interval_secs = {poll}
        max_attempts = 2

        [[agents]]
        id = "db-1"
        max_concurrent = 1
        labels = ["component:db"]
        command = '{cmd}'

        [[agents]]
        id = "web"
        type = "agent"
        max_concurrent = 2
        labels = ["component:web"]
        command = '{cmd}'

        [[agents]]
        id = "any"
        max_concurrent = 3
        exclude_labels = ["component:web"]
        command = '{cmd}'
        """))  # fmt: skip
    return path


def twenty_issues() -> list[NewIssue]:
    labels = [("component:db",)] * 6 + [("component:web",)] * 6 + [("component:docs",)] * 4 + [()] * 4
    priorities = ["critical", "high", "normal", "low", "normal"]
    return [
        NewIssue(f"issue {n}", priorities[n % 5], labels=labels[n], created_at=f"2026-01-01T00:00:{n:02d}Z")
        for n in range(20)
    ]


def read_log(log: Path) -> list[tuple[str, str, str, float]]:
    entries = []
    for line in log.read_text().splitlines():
        kind, agent, issue, at = line.split()
        entries.append((kind, agent, issue, float(at.replace(",", "."))))  # bash uses the locale's decimal mark
    return entries


def max_concurrency(entries: list[tuple[str, str, str, float]]) -> dict[str, int]:
    """The most commands any agent had running at one moment (an END at the same instant goes first)."""
    peak: dict[str, int] = defaultdict(int)
    running: dict[str, int] = defaultdict(int)
    for kind, agent, _, _ in sorted(entries, key=lambda e: (e[3], e[0] == "START")):
        running[agent] += 1 if kind == "START" else -1
        assert running[agent] >= 0
        peak[agent] = max(peak[agent], running[agent])
    return dict(peak)


def spawn_start(cwd: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    out = cwd / "pool.out"
    with out.open("w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jit_dispatch", "start", *args],
            cwd=cwd, env=clean_env(), stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return proc, out


def wait_for(predicate: Callable[[], object], what: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the pool exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def check_runs(root: Path, ids: list[str], log: Path, labels: dict[str, tuple[str, ...]]) -> list[tuple]:
    """The invariants of every pool run; returns the log entries."""
    entries = read_log(log)
    starts = [(agent, issue) for kind, agent, issue, _ in entries if kind == "START"]
    ends = [(agent, issue) for kind, agent, issue, _ in entries if kind == "END"]
    assert sorted(starts) == sorted(ends), "every command that started also finished"
    ran = Counter(issue for _, issue in starts)
    assert all(n == 1 for n in ran.values()), f"an issue ran twice: {ran.most_common(3)}"
    peak = max_concurrency(entries)
    for agent, most in peak.items():
        assert most <= CAPACITY[agent], f"{agent} ran {most} commands at once (capacity {CAPACITY[agent]})"
    for agent, issue in starts:
        if agent == "agent:db-1":
            assert "component:db" in labels[issue], "db-1 only takes db issues"
        if agent == "agent:web":
            assert "component:web" in labels[issue], "web only takes web issues"
        if agent == "agent:any":
            assert "component:web" not in labels[issue], "any excludes web issues"
    claims = [e for e in read_events(root) if e["type"] == "issue_claimed"]
    assert Counter(e["issue_id"] for e in claims) == ran, "one issue_claimed per issue, only for issues that ran"
    assert {(e["assignee"], e["issue_id"]) for e in claims} == set(starts), "claimed by the agent that ran it"
    for issue in ran:
        assert read_issue(root, issue)["state"] == "done"
    assert set(ran) <= set(ids)
    return entries


@pytest.fixture
def pool_store(new_store: StoreFactory, tmp_path: Path) -> tuple[Path, list[str], dict[str, tuple[str, ...]], Path]:
    specs = twenty_issues()
    store, ids = new_store(*specs)
    labels = {issue_id: spec.labels for issue_id, spec in zip(ids, specs, strict=True)}
    config = pool_config(tmp_path / "dispatch.toml", tmp_path / "runs.log")
    return store.root, ids, labels, config


def expected_first_cycle(ids: list[str], specs: list[NewIssue]) -> dict[str, set[str]]:
    """Agents fill in file order, each taking the best issues it may that nobody took this cycle."""
    ordered = [i for _, i in sorted(zip(specs, ids, strict=True), key=lambda p: (RANK[p[0].priority], p[0].created_at))]
    labels = {i: s.labels for s, i in zip(specs, ids, strict=True)}
    db = [i for i in ordered if "component:db" in labels[i]][:1]
    web = [i for i in ordered if "component:web" in labels[i]][:2]
    rest = [i for i in ordered if "component:web" not in labels[i] and i not in db][:3]
    return {"agent:db-1": set(db), "agent:web": set(web), "agent:any": set(rest)}


# --------------------------------------------------------------------------- --once
def test_start_once_fills_every_slot_once_and_waits(pool_store, tmp_path: Path) -> None:
    root, ids, labels, config = pool_store
    pool_config(config, tmp_path / "runs.log", seconds=0.6)  # all six must overlap, even on a loaded machine
    proc, out = spawn_start(tmp_path, "--once", "--config", str(config), "--jit-dir", str(root),
                            "--log-dir", str(tmp_path / "logs"))  # fmt: skip
    try:
        proc.wait(timeout=30)
    finally:
        stop(proc)
    output = out.read_text()
    assert proc.returncode == 0, output
    entries = check_runs(root, ids, tmp_path / "runs.log", labels)
    assert max_concurrency(entries) == CAPACITY, "one cycle: every agent ran at its full capacity at once"
    by_agent: dict[str, set[str]] = defaultdict(set)
    for kind, agent, issue, _ in entries:
        if kind == "START":
            by_agent[agent].add(issue)
    assert by_agent == expected_first_cycle(ids, twenty_issues()), "capabilities first, then priority order"
    assert sum(read_issue(root, i)["state"] == "ready" for i in ids) == 14, "one cycle only"
    lines = output.splitlines()
    assert sum(line.startswith("claim ") for line in lines) == 6
    assert sum(line.startswith("settle ") and " done " in line for line in lines) == 6
    logs = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert len(logs) == 6 and all(name.endswith("-attempt1.log") for name in logs), "one log per command"


def test_start_once_reports_a_failed_command(new_store: StoreFactory, tmp_path: Path) -> None:
    store, (good, bad) = new_store(NewIssue("good", "high"), NewIssue("bad", labels=("kind:broken",)))
    config = tmp_path / "dispatch.toml"
    config.write_text(textwrap.dedent("""\
        [[agents]]
        id = "solo"
        max_concurrent = 2
        command = 'case "$JIT_ISSUE_LABELS" in *kind:broken*) exit 4;; esac'
        """))  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "jit_dispatch", "start", "--once", "--jit-dir", str(store.root)],
                            cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert read_issue(store.root, good)["state"] == "done"
    failed = read_issue(store.root, bad)
    assert failed["state"] == "ready" and failed["context"]["dispatch.last_reason"] == "exit code 4"
    assert f"settle  {bad[:8]} released (agent:solo, exit 4)  exit code 4" in result.stdout.splitlines()


# --------------------------------------------------------------------------- polling
def test_start_polls_until_every_issue_is_done(pool_store, tmp_path: Path) -> None:
    root, ids, labels, _ = pool_store
    proc, out = spawn_start(tmp_path, "--jit-dir", str(root))  # ./dispatch.toml
    log = tmp_path / "runs.log"
    try:
        wait_for(lambda: log.exists() and log.read_text().count("END ") == 20, "all 20 issues ran", proc)
        wait_for(lambda: all(read_issue(root, i)["state"] == "done" for i in ids), "all settled", proc, 10)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    finally:
        stop(proc)
    assert proc.returncode == 128 + signal.SIGTERM, out.read_text()
    entries = check_runs(root, ids, log, labels)
    assert len({issue for _, _, issue, _ in entries}) == 20
    assert max_concurrency(entries)["agent:any"] >= 2, "the pool runs commands concurrently"
    # Every db issue ran on db-1 or any, every web issue on web.
    web_starts = [agent for kind, agent, issue, _ in entries if kind == "START" and "component:web" in labels[issue]]
    assert web_starts, "no web issue ran: the routing rule went unchecked"
    for kind, agent, issue, _ in entries:
        if kind == "START" and "component:web" in labels[issue]:
            assert agent == "agent:web"
    output = out.read_text().splitlines()
    assert any(line.startswith("jit-dispatch: pool of 3 agent(s) on ") for line in output)
    assert any(line.startswith("pool    db-1 ") for line in output), "a periodic pool status line"
    assert sum(line.startswith("claim ") for line in output) == 20


def test_sigterm_releases_the_unfinished_runs_and_leaves_no_child(new_store: StoreFactory, tmp_path: Path) -> None:
    store, ids = new_store(*(NewIssue(f"long {n}", created_at=f"2026-01-01T00:00:0{n}Z") for n in range(4)))
    root = store.root
    pids = tmp_path / "pids"
    (tmp_path / "dispatch.toml").write_text(textwrap.dedent(f"""\
        poll_interval_secs = 0.2
        [[agents]]
        id = "a"
        max_concurrent = 1
        command = 'echo $$ >> {pids}; exec sleep 30'
        [[agents]]
        id = "b"
        max_concurrent = 2
        command = 'echo $$ >> {pids}; exec sleep 30'
        """))  # fmt: skip
    proc, out = spawn_start(tmp_path, "--jit-dir", str(root))
    children: list[int] = []
    try:
        wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 3, "three commands running", proc)
        children = [int(p) for p in pids.read_text().split()]
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        elapsed = time.monotonic() - sent
    finally:
        stop(proc)
        leftovers = [pid for pid in children if running(pid)]
        for pid in leftovers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    output = out.read_text()
    assert proc.returncode == 143, output
    assert elapsed < 6, f"the pool took {elapsed:.1f}s to stop"
    assert leftovers == [], "a command outlived the pool"
    states = {i: read_issue(root, i) for i in ids}
    assert [raw["state"] for raw in states.values()] == ["ready"] * 4
    released = list(ids[:3])
    for issue_id in released:
        context = states[issue_id]["context"]
        assert context["dispatch.last_reason"] == "cancelled (SIGTERM)"
        assert context["dispatch.attempts"] == "1"
        assert states[issue_id]["assignee"] is None
    assert "dispatch.claimed_at" not in states[ids[3]]["context"], "the fourth was never claimed"
    events = read_events(root)
    assert sorted(e["issue_id"] for e in events if e["type"] == "issue_released") == sorted(released)
    assert output.count("released") >= 3


def running(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] not in ("Z", "X")


def test_sigterm_stops_an_idle_pool_promptly(new_store: StoreFactory, tmp_path: Path) -> None:
    """Nothing to run, a long poll interval: the signal must not wait for the next poll."""
    store, _ = new_store()
    (tmp_path / "dispatch.toml").write_text('poll_interval_secs = 30\n[[agents]]\nid = "a"\ncommand = "true"\n')
    proc, out = spawn_start(tmp_path, "--jit-dir", str(store.root))
    try:
        wait_for(lambda: "pool    a 0/1" in out.read_text(), "the pool to go idle", proc)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        elapsed = time.monotonic() - sent
    finally:
        stop(proc)
    assert elapsed < 5, f"an idle pool took {elapsed:.1f}s to honour SIGTERM (poll interval 30 s)"
    assert proc.returncode == 143
