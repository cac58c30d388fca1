"""`reap` on real stores through the real CLI (the pure rules: unit/test_staleness.py), the heartbeat that keeps a
long run's claim fresh, a dispatcher killed with SIGKILL and recovered, and `release` / `unpark`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from helpers import CliRun, clean_env, git, make_remote, read_events, read_issue, run_cli
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

StoreFactory = Callable[..., tuple[JitStore, list[str]]]


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ago(**delta: float) -> str:
    return stamp(datetime.now(UTC) - timedelta(**delta))


# --------------------------------------------------------------------------- pure


# --------------------------------------------------------------------------- CLI helpers
def claim_by_hand(root: Path, issue_id: str, agent: str | None, *, attempts: str | None = "0", **context: str) -> None:
    """What a dispatcher's claim leaves in the file, with timestamps of our choosing."""
    path = root / "issues" / f"{issue_id}.json"
    raw = json.loads(path.read_text())
    raw.update(state="in_progress", assignee=agent)
    raw["context"].update({key.replace("_", ".", 1): value for key, value in context.items()})
    if attempts is not None:
        raw["context"]["dispatch.attempts"] = attempts
    path.write_text(json.dumps(raw, indent=2) + "\n")


def snapshot_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "issues").glob("*.json"))} | {
        "events.jsonl": (root / "events.jsonl").read_bytes()
    }


@pytest.fixture
def claims(new_store: StoreFactory) -> tuple[Path, dict[str, str]]:
    """A store with: a stale claim, a claim as old but with a fresh heartbeat, a fresh claim,
    a claim made outside the dispatcher, and a ready issue left with an old claim time."""
    store, ids = new_store(*(NewIssue(f"issue {name}") for name in ("stale", "beating", "fresh", "outside", "ready")))
    named = dict(zip(("stale", "beating", "fresh", "outside", "ready"), ids, strict=True))
    root = store.root
    claim_by_hand(root, named["stale"], "agent:dead-1", attempts="1", dispatch_claimed_at=ago(hours=3, minutes=5))
    claim_by_hand(root, named["beating"], "agent:slow-1", dispatch_claimed_at=ago(hours=3, minutes=5),
                  dispatch_heartbeat_at=ago(minutes=2))  # fmt: skip
    claim_by_hand(root, named["fresh"], "agent:w2", dispatch_claimed_at=ago(minutes=10))
    claim_by_hand(root, named["outside"], "human:alice", attempts=None)
    path = root / "issues" / f"{named['ready']}.json"
    raw = json.loads(path.read_text())
    raw["context"].update({"dispatch.claimed_at": ago(days=2), "dispatch.attempts": "1"})
    path.write_text(json.dumps(raw, indent=2) + "\n")
    return root, named


def reap(root: Path, *args: str) -> CliRun:
    return run_cli("reap", "--jit-dir", str(root), *args)


# --------------------------------------------------------------------------- reap
def test_reap_releases_only_the_stale_claim(claims: tuple[Path, dict[str, str]]) -> None:
    root, ids = claims
    before = snapshot_files(root)
    events_before = len(read_events(root))
    result = reap(root, "--older-than", "1h", "--json")
    assert result.returncode == 0, result.stderr
    reason = "stale claim (claimed 3h 5m ago by agent:dead-1)"
    (row,) = result.json["reaped"]
    assert result.json["dry_run"] is False
    assert set(row) == {"issue_id", "short_id", "title", "agent", "age_seconds", "reason", "outcome"}
    assert (row["issue_id"], row["agent"], row["reason"], row["outcome"]) == (
        ids["stale"], "agent:dead-1", reason, "released",
    )  # fmt: skip
    assert 3 * 3600 + 300 <= row["age_seconds"] < 3 * 3600 + 360

    raw = read_issue(root, ids["stale"])
    assert (raw["state"], raw["assignee"]) == ("ready", None)
    assert raw["context"]["dispatch.attempts"] == "2", "a reap counts as a failed attempt"
    assert raw["context"]["dispatch.last_reason"] == reason
    assert "dispatch.parked_at" not in raw["context"]
    events = read_events(root)[events_before:]
    assert [(e["type"], e["issue_id"], e.get("assignee"), e.get("reason"), e.get("from"), e.get("to"))
            for e in events] == [
        ("issue_released", ids["stale"], "agent:dead-1", reason, None, None),
        ("issue_state_changed", ids["stale"], None, None, "in_progress", "ready"),
    ]  # fmt: skip
    after = snapshot_files(root)
    untouched = [f"{ids[name]}.json" for name in ("beating", "fresh", "outside", "ready")]
    assert {name: after[name] for name in untouched} == {name: before[name] for name in untouched}

    # A second reap finds nothing; the text output says so.
    again = reap(root, "--older-than", "1h")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines() == ["jit-dispatch: 0 stale claim(s) reaped"]


def test_reap_reason_mentions_an_old_heartbeat_and_the_text_output(claims: tuple[Path, dict[str, str]]) -> None:
    root, ids = claims
    result = reap(root, "--older-than", "90s")  # now the fresh claim (10 min) and the beating one (2 min) are stale
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "jit-dispatch: 3 stale claim(s) reaped"
    by_short = {line.split()[0]: line for line in lines[:-1]}
    assert set(by_short) == {ids[n][:8] for n in ("stale", "beating", "fresh")}
    assert by_short[ids["beating"][:8]].endswith(
        "released   stale claim (claimed 3h 5m ago by agent:slow-1, last heartbeat 2m ago)"
    )
    assert by_short[ids["fresh"][:8]].endswith("stale claim (claimed 10m ago by agent:w2)")
    assert lines[0].startswith(ids["stale"][:8]), "stalest first"
    assert read_issue(root, ids["outside"])["state"] == "in_progress", "not the dispatcher's claim: left alone"


def test_reap_dry_run_changes_nothing(claims: tuple[Path, dict[str, str]]) -> None:
    root, ids = claims
    before = snapshot_files(root)
    result = reap(root, "--older-than", "1h", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    assert result.json["dry_run"] is True
    assert [(r["issue_id"], r["outcome"]) for r in result.json["reaped"]] == [(ids["stale"], "would release")]
    text = reap(root, "--older-than", "1h", "--dry-run")
    assert text.stdout.strip().splitlines()[-1] == "jit-dispatch: 1 stale claim(s) found"
    assert snapshot_files(root) == before


def test_reap_agent_pattern_filters(new_store: StoreFactory) -> None:
    store, (ci, copilot, other_ci) = new_store(NewIssue("ci"), NewIssue("copilot"), NewIssue("other ci"))
    root = store.root
    for issue_id, agent in ((ci, "agent:ci-2"), (copilot, "copilot:copilot-1"), (other_ci, "agent:ci-7")):
        claim_by_hand(root, issue_id, agent, dispatch_claimed_at=ago(hours=7, minutes=3))
    result = reap(root, "--older-than", "6h", "--agent-pattern", "ci-2", "--json")
    assert [r["issue_id"] for r in result.json["reaped"]] == [ci]
    assert read_issue(root, ci)["context"]["dispatch.last_reason"] == "stale claim (claimed 7h 3m ago by agent:ci-2)"
    result = reap(root, "--older-than", "6h", "--agent-pattern", "copilot:*", "--json")
    assert [r["issue_id"] for r in result.json["reaped"]] == [copilot]
    assert read_issue(root, other_ci)["state"] == "in_progress"
    # The pattern also comes from the environment, like every option.
    result = run_cli("reap", "--jit-dir", str(root), "--older-than", "6h", "--json",
                     env=clean_env(JIT_DISPATCH_AGENT_PATTERN="nobody-*"))  # fmt: skip
    assert result.json["reaped"] == []
    assert read_issue(root, other_ci)["state"] == "in_progress"


def test_a_reap_at_the_attempt_limit_parks(new_store: StoreFactory) -> None:
    store, (worn, young) = new_store(NewIssue("keeps killing its runner"), NewIssue("first failure"))
    root = store.root
    claim_by_hand(root, worn, "agent:ci-1", attempts="2", dispatch_claimed_at=ago(hours=2))
    claim_by_hand(root, young, "agent:ci-1", attempts="0", dispatch_claimed_at=ago(hours=2))
    result = reap(root, "--older-than", "1h", "--json")
    assert result.returncode == 0, result.stderr
    assert {r["issue_id"]: r["outcome"] for r in result.json["reaped"]} == {worn: "parked", young: "released"}
    parked = read_issue(root, worn)
    assert parked["state"] == "ready" and parked["assignee"] is None
    assert "dispatch.parked_at" in parked["context"] and parked["context"]["dispatch.attempts"] == "3"
    # A parked issue is not dispatched again.
    listing = run_cli("ready", "--jit-dir", str(root), "--json")
    assert [i["issue_id"] for i in listing.json["dispatchable"]] == [young]
    # --max-attempts raises the limit.
    claim_by_hand(root, young, "agent:ci-1", attempts="2", dispatch_claimed_at=ago(hours=2))
    result = reap(root, "--older-than", "1h", "--max-attempts", "4", "--json")
    assert [(r["issue_id"], r["outcome"]) for r in result.json["reaped"]] == [(young, "released")]


def test_reap_bad_duration_is_a_usage_error(claims: tuple[Path, dict[str, str]]) -> None:
    root, _ = claims
    before = snapshot_files(root)
    for value in ("soon", "0", "-1h"):
        result = reap(root, "--older-than", value)
        assert result.returncode == 2, (value, result.stderr)
        assert "--older-than" in result.stderr
    missing = reap(root)
    assert missing.returncode == 2 and "--older-than" in missing.stderr
    assert snapshot_files(root) == before


# --------------------------------------------------------------------------- real processes
def wait_for(predicate: Callable[[], object], what: str, timeout: float = 15.0, proc=None) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the dispatcher exited ({proc.returncode}) before {what}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def spawn_once(root: Path, command: str, *extra: str, cwd: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "jit_dispatch", "once", "--agent", "w9", "--command", command]
    return subprocess.Popen(
        [*argv, "--jit-dir", str(root), "--json", *extra],
        cwd=cwd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def kill_if_sleep(pid: int) -> None:
    """The orphaned command: kill it, after checking the pid still is a `sleep` (pids get reused)."""
    with contextlib.suppress(OSError):
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        if Path(argv0.decode()).name == "sleep":
            os.kill(pid, signal.SIGKILL)


def test_a_dispatcher_killed_mid_run_is_recovered_by_reap(new_store: StoreFactory, tmp_path: Path) -> None:
    store, (issue, _) = new_store(NewIssue("the victim", "high"), NewIssue("bystander"))
    root = store.root
    marker = tmp_path / "marker"
    proc = spawn_once(root, f"echo $$ > {marker}.tmp && mv {marker}.tmp {marker} && exec sleep 30", cwd=tmp_path)
    orphan = None
    try:
        orphan = int(wait_for(lambda: marker.exists() and marker.read_text().strip(), "the command started", proc=proc))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        raw = read_issue(root, issue)
        assert (raw["state"], raw["assignee"]) == ("in_progress", "agent:w9"), "the dead runner's claim stays"
        claimed_at = datetime.fromisoformat(raw["context"]["dispatch.claimed_at"])
        assert "dispatch.heartbeat_at" not in raw["context"], "no heartbeat within the first 5 minutes"

        # Too young for a 1 h limit; the dry run names it for 1 s once a second has passed.
        assert reap(root, "--older-than", "1h", "--json").json["reaped"] == []
        wait_for(lambda: datetime.now(UTC) - claimed_at > timedelta(seconds=1.2), "the claim to age")
        result = reap(root, "--older-than", "1s", "--json")
        assert result.returncode == 0, result.stderr
        (row,) = result.json["reaped"]
        assert row["issue_id"] == issue and row["outcome"] == "released"
        assert row["reason"].startswith("stale claim (claimed ") and row["reason"].endswith("s ago by agent:w9)")
        raw = read_issue(root, issue)
        assert (raw["state"], raw["assignee"]) == ("ready", None)
        assert raw["context"]["dispatch.attempts"] == "1"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if orphan is not None:
            kill_if_sleep(orphan)
    # The next runner takes the issue again, as its second attempt.
    after = run_cli("once", "--agent", "w10", "--command", "true", "--jit-dir", str(root), "--json")
    assert (after.json["issue_id"], after.json["outcome"], after.json["attempt"]) == (issue, "done", 2)


def test_a_long_run_refreshes_its_heartbeat_and_is_not_reaped(new_store: StoreFactory, tmp_path: Path) -> None:
    """`--heartbeat 0.3s`: `dispatch.heartbeat_at` moves while the command runs, and a reap with a
    limit shorter than the claim's age (but far longer than the beat) leaves the claim alone.
    The command runs until the test creates `go`, so a loaded machine cannot end it early."""
    store, (issue,) = new_store(NewIssue("long work"))
    root = store.root
    marker, go = tmp_path / "marker", tmp_path / "go"
    proc = spawn_once(root, f"touch {marker}; until [ -e {go} ]; do sleep 0.05; done", "--heartbeat", "0.3s",
                      cwd=tmp_path)  # fmt: skip
    beats: list[str] = []

    def beat_seen() -> bool:
        beat = read_issue(root, issue)["context"].get("dispatch.heartbeat_at")
        if beat and (not beats or beats[-1] != beat):
            beats.append(beat)
        return False

    try:
        wait_for(marker.exists, "the command started", proc=proc)
        claimed_at = read_issue(root, issue)["context"]["dispatch.claimed_at"]
        claimed = datetime.fromisoformat(claimed_at)
        wait_for(lambda: beat_seen() or datetime.now(UTC) - claimed > timedelta(seconds=2.1), "2 s", proc=proc)
        reaped = reap(root, "--older-than", "2s", "--json")  # claimed > 2 s ago, last beat < 0.3 s ago
        wait_for(lambda: beat_seen() or len(beats) >= 3, "three heartbeats", proc=proc)
        assert proc.poll() is None
        go.touch()
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out)["outcome"] == "done", "the claim was never lost"
    assert reaped.returncode == 0 and reaped.json["reaped"] == [], "a beating claim is alive"
    assert beats == sorted(beats) and beats[0] > claimed_at and len(set(beats)) >= 3
    final = read_issue(root, issue)
    assert final["state"] == "done"
    assert final["context"]["dispatch.heartbeat_at"] >= beats[-1]
    assert not any(e["type"] == "issue_released" for e in read_events(root)), "a heartbeat logs no event"


# --------------------------------------------------------------------------- release, unpark
def test_release_gives_a_claim_back_with_the_reason(new_store: StoreFactory) -> None:
    store, (held, other) = new_store(NewIssue("needs a person"), NewIssue("other"))
    root = store.root
    claim_by_hand(root, held, "agent:ci-3", dispatch_claimed_at=ago(minutes=1))
    events_before = len(read_events(root))
    result = run_cli("release", "--jit-dir", str(root), held[:8], "needs a design decision first", "--json")
    assert result.returncode == 0, result.stderr
    assert result.json == {"issue_id": held, "outcome": "released", "attempts": 0}, "a person's: no failed attempt"
    raw = read_issue(root, held)
    assert (raw["state"], raw["assignee"]) == ("ready", None)
    assert raw["context"]["dispatch.last_reason"] == "needs a design decision first"
    assert "dispatch.parked_at" not in raw["context"]
    released = [e for e in read_events(root)[events_before:] if e["type"] == "issue_released"]
    assert [(e["issue_id"], e["assignee"], e["reason"]) for e in released] == [
        (held, "agent:ci-3", "needs a design decision first")
    ]
    # Released, it is not claimed any more: a second release is a usage error.
    again = run_cli("release", "--jit-dir", str(root), held, "again")
    assert again.returncode == 2
    assert again.stderr.strip() == f"jit-dispatch: error: ID: issue {held[:8]} is not claimed (state ready)"
    assert read_issue(root, other)["state"] == "ready"
    # --attempt: counted as a failed attempt, as a runner's failure is.
    claim_by_hand(root, other, "agent:ci-3", dispatch_claimed_at=ago(minutes=1), attempts="1")
    counted = run_cli("release", "--jit-dir", str(root), other, "flaky, try again", "--attempt", "--json")
    assert counted.json == {"issue_id": other, "outcome": "released", "attempts": 2}


def test_a_runner_whose_claim_a_person_releases_reports_the_reason(new_store: StoreFactory, tmp_path: Path) -> None:
    store, (issue,) = new_store(NewIssue("long one"))
    root = store.root
    started = tmp_path / "started"
    argv = [sys.executable, "-m", "jit_dispatch", "once", "--jit-dir", str(root), "--agent", "w1", "--json",
            "--heartbeat", "1s", "--command", f"touch {started}; exec sleep 60"]  # fmt: skip
    proc = subprocess.Popen(argv, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the command did not start"
            time.sleep(0.05)
        released = run_cli("release", "--jit-dir", str(root), issue, "wrong approach, see the design doc")
        assert released.returncode == 0, released.stderr
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = json.loads(out)
    assert (proc.returncode, result["outcome"]) == (1, "lost"), err
    assert result["reason"] == (
        "the claim was taken away while the command ran: wrong approach, see the design doc; nothing written"
    )
    raw = read_issue(root, issue)
    assert (raw["state"], raw["context"]["dispatch.attempts"]) == ("ready", "0"), "not a failed attempt"


def test_release_park_and_unpark(new_store: StoreFactory) -> None:
    store, (issue,) = new_store(NewIssue("should wait"))
    root = store.root
    claim_by_hand(root, issue, "human:bob", attempts=None)  # claimed outside the dispatcher: may be released too
    result = run_cli("release", "--jit-dir", str(root), issue, "out of scope for agents", "--park")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"jit-dispatch: parked {issue[:8]} (out of scope for agents)"
    raw = read_issue(root, issue)
    assert raw["state"] == "ready" and "dispatch.parked_at" in raw["context"]
    assert run_cli("ready", "--jit-dir", str(root), "--json").json["dispatchable"] == []

    result = run_cli("unpark", "--jit-dir", str(root), issue[:6], "--json")
    assert result.returncode == 0, result.stderr
    assert result.json == {"issue_id": issue, "outcome": "unparked"}
    raw = read_issue(root, issue)
    assert "dispatch.parked_at" not in raw["context"] and raw["context"]["dispatch.attempts"] == "0"
    assert [i["issue_id"] for i in run_cli("ready", "--jit-dir", str(root), "--json").json["dispatchable"]] == [issue]

    again = run_cli("unpark", "--jit-dir", str(root), issue)
    assert again.returncode == 2
    assert again.stderr.strip() == f"jit-dispatch: error: ID: issue {issue[:8]} is not parked"


def test_release_and_unpark_reject_unknown_ids(new_store: StoreFactory) -> None:
    store, (issue,) = new_store(NewIssue("x"))
    root = store.root
    before = snapshot_files(root)
    for argv in (["release", "ffffffff", "why"], ["unpark", "ffffffff"], ["release", "ab", "why"], ["unpark", "a"]):
        result = run_cli(argv[0], "--jit-dir", str(root), *argv[1:])
        assert result.returncode == 2, (argv, result.stderr)
        assert result.stderr.startswith("jit-dispatch: error: ID: "), result.stderr
    assert snapshot_files(root) == before
    assert read_issue(root, issue)["state"] == "ready"


# --------------------------------------------------------------------------- remote mode
def test_reap_in_remote_mode_releases_on_the_remote(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("stale on the remote", "high"), NewIssue("fine")])
    stale, fine = remote.ids
    full = remote.clone(tmp_path / "full", shallow=False)
    claim_by_hand(full / ".jit", stale, "agent:k8s-worker-7", dispatch_claimed_at=ago(hours=3, minutes=1))
    git(full, "commit", "-q", "-am", "a runner claimed it, then died")
    git(full, "push", "-q", "origin", "main")
    assert remote.issue(stale)["state"] == "in_progress"

    workspace = remote.clone(tmp_path / "workspace")
    head = git(workspace, "rev-parse", "HEAD")
    dry = run_cli("reap", "--older-than", "2h", "--sync", "git", "--dry-run", "--json", cwd=workspace)
    assert dry.returncode == 0, dry.stderr
    assert [r["issue_id"] for r in dry.json["reaped"]] == [stale]
    assert remote.issue(stale)["state"] == "in_progress"

    result = run_cli("reap", "--older-than", "2h", "--sync", "git", "--json", cwd=workspace)
    assert result.returncode == 0, result.stderr
    (row,) = result.json["reaped"]
    reason = "stale claim (claimed 3h 1m ago by agent:k8s-worker-7)"
    assert (row["issue_id"], row["outcome"], row["reason"]) == (stale, "released", reason)
    raw = remote.issue(stale)
    assert (raw["state"], raw["assignee"]) == ("ready", None)
    assert raw["context"]["dispatch.attempts"] == "1" and raw["context"]["dispatch.last_reason"] == reason
    assert remote.issue(fine)["state"] == "ready"
    assert [e["type"] for e in remote.events() if e["issue_id"] == stale][-2:] == [
        "issue_released", "issue_state_changed",
    ]  # fmt: skip
    assert git(workspace, "status", "--porcelain") == "" and git(workspace, "rev-parse", "HEAD") == head


def test_reap_in_remote_mode_recovers_a_killed_runner_and_frees_its_issue(tmp_path: Path) -> None:
    """A remote-mode runner killed mid-run leaves its claim on the branch and its lock ref. After
    `reap`, the issue must be dispatchable again, not held by the dead runner's lock."""
    remote = make_remote(tmp_path, [NewIssue("the victim", "high"), NewIssue("bystander")])
    victim = remote.ids[0]
    workspace = remote.clone(tmp_path / "workspace")
    marker = tmp_path / "marker"
    argv = ["once", "--agent", "r1", "--sync", "git", "--json", "--heartbeat", "1s",
            "--command", f"echo $$ > {marker}.tmp && mv {marker}.tmp {marker} && exec sleep 30"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "jit_dispatch", *argv], cwd=workspace, env=clean_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    orphan = None
    try:
        orphan = int(wait_for(lambda: marker.exists() and marker.read_text().strip(), "the command started", proc=proc))
        wait_for(lambda: remote.issue(victim)["state"] == "in_progress", "the claim recorded on the remote", proc=proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert remote.refs("refs/jit-dispatch/claims/") == [f"refs/jit-dispatch/claims/{victim}"]
        claimed_at = datetime.fromisoformat(remote.issue(victim)["context"]["dispatch.claimed_at"])
        wait_for(lambda: datetime.now(UTC) - claimed_at > timedelta(seconds=1.2), "the claim to age")
        result = run_cli("reap", "--older-than", "1s", "--sync", "git", "--json", cwd=workspace)
        assert result.returncode == 0, result.stderr
        assert [(r["issue_id"], r["outcome"]) for r in result.json["reaped"]] == [(victim, "released")]
        assert "reap: 1 claim(s) silent for over 1s; watching their locks" in result.stderr, "not silent meanwhile"
        raw = remote.issue(victim)
        assert (raw["state"], raw["assignee"], raw["context"]["dispatch.attempts"]) == ("ready", None, "1")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if orphan is not None:
            kill_if_sleep(orphan)
    listing = run_cli("ready", "--all", "--sync", "git", "--json", cwd=workspace)
    assert listing.returncode == 0, listing.stderr
    held = {h["issue_id"]: h["reason"] for h in listing.json.get("held", [])}
    assert victim not in held, f"reaped, but still held back: {held.get(victim)}"
    assert [i["issue_id"] for i in listing.json["dispatchable"]] == remote.ids, "the victim first again"


def test_a_heartbeat_landing_between_the_reapers_look_and_its_write_wins(tmp_path: Path) -> None:
    """The reaper releases only the claim it judged stale: a fresh sign of life makes it back off."""
    store = JitStore.init(tmp_path / ".jit")
    (issue_id,) = store.create_issues([NewIssue("long run")])
    path = store.issue_file(issue_id)
    raw = json.loads(path.read_text())
    raw.update(state="in_progress", assignee="agent:w1")
    raw["context"] = {"dispatch.claimed_at": "2026-01-01T00:00:00Z", "dispatch.attempts": "0"}
    path.write_text(json.dumps(raw, indent=2))
    seen = ("2026-01-01T00:00:00Z", None)  # what the reaper looked at
    assert store.heartbeat(issue_id, "agent:w1")  # the runner is alive after all
    before = path.read_bytes()
    settlement = store.release(issue_id, "agent:w1", "stale claim", 3, seen=seen)
    assert settlement.outcome == "lost" and path.read_bytes() == before
    fresh = tuple(json.loads(before)["context"].get(k) for k in ("dispatch.claimed_at", "dispatch.heartbeat_at"))
    assert store.release(issue_id, "agent:w1", "stale claim", 3, seen=fresh).outcome == "released"
