"""jit-dispatch beside the newest jit's leases (docs/jit-format.md#leases), against the real binary.

Each claim holds a lease in `.git/jit/` as `jit claim acquire` writes it, so an agent run under
`enforce_leases = "strict"` may update, link, gate-pass and create; a lease of another agent holds
an issue back; a lease taken over during a run stops it as a lost claim, without an attempt counted.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from helpers import clean_env, read_issue, run_cli
from jit_dispatch.domain.selection import Filters
from jit_dispatch.trackers.jit.store import JitStore
from lease_stores import jit_as, strict_repo
from processes import wait_for_file
from real_jit import jit, jit_binary


def claims_log(repo: Path) -> list[dict]:
    path = repo / ".git" / "jit" / "claims.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _running(root: Path, tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    """`once` as w1 whose command has started (and sleeps a minute)."""
    started = tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jit_dispatch", "once", "--agent", "w1", "--json", *extra,
         "--command", f"echo go > {started}; sleep 60", "--jit-dir", str(root)],
        cwd=root.parent, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for_file(started, proc, timeout=30)
    return proc


def test_an_agent_under_strict_leases_does_its_seven_jit_calls(tmp_path: Path) -> None:
    binary = jit_binary("newest")
    root, (issue_id,) = strict_repo(tmp_path, binary)
    repo = root.parent
    assert jit(binary, repo, "gate", "define", "review", "--title", "Review", "--description", "r",
               "--stage", "postcheck", "--mode", "manual").returncode == 0  # fmt: skip
    seen = tmp_path / "seen.txt"
    script = tmp_path / "agent.sh"
    script.write_text(
        "set -e\n"
        'J="$JIT_BIN"\n'
        '$J claim list > "$SEEN"; $J claim status --issue "$JIT_ISSUE_ID" >> "$SEEN"; $J worktree list >> "$SEEN"\n'
        '$J issue update "$JIT_ISSUE_ID" --label component:cli\n'
        '$J issue update "$JIT_ISSUE_ID" --description "worked on it"\n'
        "ID_OF='import json,sys; print(json.load(sys.stdin)[\"id\"])'\n"
        'SUB=$($J issue create --title sub --label type:task --json | python3 -c "$ID_OF")\n'

        '$J dep add "$JIT_ISSUE_ID" "$SUB"\n'
        '$J gate add "$JIT_ISSUE_ID" review\n'
        '$J gate pass "$JIT_ISSUE_ID" review\n'
        '$J issue show "$JIT_ISSUE_ID" --json > /dev/null\n'
    )  # fmt: skip
    result = run_cli(
        "once", "--agent", "ci-worker", "--command", f"bash {script}", "--json", "--jit-dir", str(root),
        cwd=repo, env=clean_env(JIT_BIN=str(binary), SEEN=str(seen)),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.json["outcome"] == "done", result.json
    during = seen.read_text()
    assert during.count("agent:ci-worker") >= 2 and issue_id in during, during  # claim list and claim status
    assert "wt:" in during and " 1\n" in during, during  # worktree list counts our claim
    issue = read_issue(root, issue_id)
    assert "component:cli" in issue["labels"] and issue["gates_status"]["review"]["status"] == "passed"
    assert len(issue["dependencies"]) == 1
    ops = [(e["op"], e.get("agent_id")) for e in claims_log(repo)]
    assert ops[-2:] == [("acquire", "agent:ci-worker"), ("release", None)], ops
    assert json.loads((repo / ".git/jit/claims.index.json").read_text())["leases"] == []
    listed = jit(binary, repo, "claim", "list")
    assert listed.returncode == 0 and "No active leases" in listed.stdout, listed.stdout
    validate = jit(binary, repo, "validate")
    assert validate.returncode == 0, validate.stdout + validate.stderr


def test_the_lease_is_written_as_jit_claim_acquire_writes_it(tmp_path: Path) -> None:
    binary = jit_binary("newest")
    root, (ours, theirs) = strict_repo(tmp_path, binary, count=2)
    repo = root.parent
    assert jit_as(binary, repo, "agent:other", "claim", "acquire", theirs).returncode == 0
    copy = tmp_path / "index.json"
    result = run_cli("once", "--agent", "w1", "--command", f"cp .git/jit/claims.index.json {copy}", "--json",
                     "--issue", ours, "--jit-dir", str(root), cwd=repo)  # fmt: skip
    assert result.json["outcome"] == "done", result.json
    index = json.loads(copy.read_text())
    leases = {lease["agent_id"]: lease for lease in index["leases"]}
    jits, mine = leases["agent:other"], leases["agent:w1"]
    assert list(mine) == list(jits) and mine["issue_id"] == ours
    assert (mine["worktree_id"], mine["branch"], mine["ttl_secs"]) == (jits["worktree_id"], "main", 600)  # 2 × 5 min
    assert list(index) == [
        "schema_version",
        "generated_at",
        "last_seq",
        "stale_threshold_secs",
        "leases",
        "sequence_gaps",
    ]
    log = claims_log(repo)
    by_jit = next(e for e in log if e.get("agent_id") == "agent:other")
    by_us = next(e for e in log if e.get("agent_id") == "agent:w1")
    assert list(by_us) == list(by_jit) and [e["seq"] for e in log] == list(range(1, len(log) + 1))
    assert not (repo / ".git/jit/locks/claims.lock.meta").exists()
    assert jit(binary, repo, "claim", "list").returncode == 0 and jit(binary, repo, "validate").returncode == 0


def test_a_lease_of_another_agent_holds_the_issue(tmp_path: Path) -> None:
    binary = jit_binary("newest")
    root, (issue_id,) = strict_repo(tmp_path, binary)
    repo = root.parent
    assert jit_as(binary, repo, "agent:other", "claim", "acquire", issue_id).returncode == 0
    assert jit_as(binary, repo, "agent:other", "issue", "unassign", issue_id).returncode == 0  # the lease alone
    ready = run_cli("ready", "--all", "--json", "--jit-dir", str(root), cwd=repo)
    assert ready.returncode == 0, ready.stderr
    (held,) = ready.json["held"]
    assert held["reason"].startswith("leased by agent:other until 20"), held
    status = run_cli("status", "--json", "--jit-dir", str(root), cwd=repo)
    assert [h["reason"] for h in status.json["held"]] == [held["reason"]], status.stdout
    once = run_cli("once", "--agent", "w1", "--command", "true", "--json", "--jit-dir", str(root), cwd=repo)
    assert once.json["outcome"] == "idle" and "held back" in once.json["reason"], once.json
    only = ("--issue", issue_id, "--jit-dir", str(root))
    forced = run_cli("once", "--agent", "w1", "--command", "true", "--json", *only, cwd=repo)
    assert "leased by agent:other" in forced.json["reason"], forced.json
    assert read_issue(root, issue_id)["state"] == "ready"


def test_a_lease_taken_over_during_the_run_stops_it_within_a_heartbeat(tmp_path: Path) -> None:
    binary = jit_binary("newest")
    root, (issue_id,) = strict_repo(tmp_path, binary)
    repo = root.parent
    proc = _running(root, tmp_path, "--heartbeat", "1s")
    try:
        refused = jit_as(binary, repo, "agent:other", "claim", "acquire", issue_id)
        assert refused.returncode != 0 and "already claimed by agent:w1" in refused.stderr, refused.stderr
        assert jit_as(binary, repo, "human:admin", "claim", "release", issue_id).returncode == 0
        assert jit_as(binary, repo, "agent:other", "claim", "acquire", issue_id).returncode == 0
        taken = time.monotonic()
        out, _ = proc.communicate(timeout=30)
        stopped_after = time.monotonic() - taken
    finally:
        proc.kill()
    result = json.loads(out)
    assert result["outcome"] == "lost", result
    # whichever the heartbeat saw first: the eviction (naming who released it) or the new holder
    named = "leased by agent:other" in result["reason"] or "released by human:admin" in result["reason"]
    assert named and "command stopped" in result["reason"], result["reason"]
    assert stopped_after < 20, stopped_after  # one 1 s heartbeat, not the command's 60 s
    issue = read_issue(root, issue_id)
    assert issue["assignee"] == "agent:other" and issue["context"].get("dispatch.attempts", "0") == "0", issue
    assert jit(binary, repo, "validate").returncode == 0


def _race(binary: Path, root: Path, issue_id: str, delay: float) -> tuple[bool, str]:
    once = subprocess.Popen(
        [sys.executable, "-m", "jit_dispatch", "once", "--agent", "w1", "--json", "--issue", issue_id,
         "--command", "sleep 1", "--jit-dir", str(root)],
        cwd=root.parent, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(delay)
    acquired = jit_as(binary, root.parent, "agent:other", "claim", "acquire", issue_id).returncode == 0
    out, _ = once.communicate(timeout=120)
    return acquired, json.loads(out)["outcome"]


def test_thirty_races_of_claim_acquire_against_once_leave_one_holder(tmp_path: Path) -> None:
    binary = jit_binary("newest")
    root, ids = strict_repo(tmp_path, binary, count=30)
    rng = random.Random(20)
    with ThreadPoolExecutor(max_workers=3) as pool:
        races = list(pool.map(lambda i: _race(binary, root, i, rng.uniform(0.0, 0.5)), ids))
    for issue_id, (acquired, outcome) in zip(ids, races, strict=True):
        issue = read_issue(root, issue_id)
        assert outcome in ("done", "idle"), (outcome, issue)  # never lost: the lease decides before the command
        assert acquired != (outcome == "done"), (acquired, outcome)  # exactly one holder
        if outcome == "done":
            assert issue["state"] == "done" and issue["assignee"] == "agent:w1", issue
        else:
            assert issue["state"] == "ready" and issue["assignee"] == "agent:other", issue
            assert not any(key.startswith("dispatch.") for key in issue["context"]), issue
    validate = jit(binary, root.parent, "validate")
    assert validate.returncode == 0, validate.stdout + validate.stderr


def test_the_reaper_force_evicts_a_dead_runners_lease_as_jit_claim_release_does(tmp_path: Path) -> None:
    binary = jit_binary("newest")
    root, (issue_id,) = strict_repo(tmp_path, binary)
    repo = root.parent
    store = JitStore.open(root)
    assert store.claim(issue_id, "agent:gone", "vm:1", Filters()) is not None  # a runner that then died
    path = root / "issues" / f"{issue_id}.json"
    issue = json.loads(path.read_text())
    issue["context"]["dispatch.claimed_at"] = "2020-01-01T00:00:00.000000000Z"
    path.write_text(json.dumps(issue, indent=2))
    listed = jit(binary, repo, "claim", "list")
    assert "agent:gone" in listed.stdout, listed.stdout
    reaped = run_cli("reap", "--older-than", "1h", "--json", "--jit-dir", str(root), cwd=repo)
    assert [r["outcome"] for r in reaped.json["reaped"]] == ["released"], reaped.stdout + reaped.stderr
    last = claims_log(repo)[-1]
    assert (last["op"], last["reason"]) == ("force-evict", "reaped by jit-dispatch: agent:gone stopped"), last
    assert "No active leases" in jit(binary, repo, "claim", "list").stdout
    assert read_issue(root, issue_id)["state"] == "ready"
    assert jit(binary, repo, "validate").returncode == 0


def test_a_lease_released_by_a_person_during_the_run_stops_it_naming_who(tmp_path: Path) -> None:
    binary = jit_binary("newest")
    root, (issue_id,) = strict_repo(tmp_path, binary)
    repo = root.parent
    proc = _running(root, tmp_path, "--heartbeat", "1s")
    try:
        assert jit_as(binary, repo, "human:admin", "claim", "release", issue_id).returncode == 0
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    result = json.loads(out)
    assert "its jit lease was evicted: released by human:admin via claim release" in result["reason"], result
    assert result["outcome"] == "released"  # still assigned to us, so given back; nobody else holds it
    assert "No active leases" in jit(binary, repo, "claim", "list").stdout  # not silently re-taken
    assert jit(binary, repo, "validate").returncode == 0


def test_a_cancelled_run_gives_its_lease_back(tmp_path: Path) -> None:
    binary = jit_binary("newest")
    root, (issue_id,) = strict_repo(tmp_path, binary)
    repo = root.parent
    proc = _running(root, tmp_path)
    try:
        assert "agent:w1" in jit(binary, repo, "claim", "list").stdout
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert (proc.returncode, json.loads(out)["outcome"]) == (143, "released")
    assert claims_log(repo)[-1]["op"] == "release"
    assert "No active leases" in jit(binary, repo, "claim", "list").stdout
    assert read_issue(root, issue_id)["state"] == "ready"
