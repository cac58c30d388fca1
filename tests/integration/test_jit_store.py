"""The native jit store on real data: reading, jit's write protocol, byte-exact round trips."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from helpers import clean_env, read_events, read_issue, run_cli
from jit_dispatch.domain.issue import issue_from_raw
from jit_dispatch.domain.selection import Filters
from jit_dispatch.domain.values import State
from jit_dispatch.trackers.jit.files import ISSUE_FIELDS
from jit_dispatch.trackers.jit.store import JitStore, NewIssue


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and not p.name.endswith(".lock")
    }


def assert_jit_layout(path: Path) -> dict:
    """What jit writes: 14 fields in order, 2-space indent, raw UTF-8, no trailing newline."""
    text = path.read_text(encoding="utf-8")
    raw = json.loads(text)
    assert [k for k in raw if k in ISSUE_FIELDS] == list(ISSUE_FIELDS)
    assert text == json.dumps(raw, indent=2, ensure_ascii=False)
    issue_from_raw(raw, path.stem)  # the project's own reader accepts it
    return raw


def test_full_cycle_on_the_seed_store_touches_only_what_it_must(seed_store: Path) -> None:
    before = file_hashes(seed_store)
    events_before = (seed_store / "events.jsonl").read_bytes()
    result = run_cli("once", "--agent", "w1", "--command", "true", "--jit-dir", str(seed_store), "--json")
    assert result.returncode == 0, result.stderr
    claimed = result.json["issue_id"]
    assert result.json["outcome"] == "gated"  # the critical ready issue has unpassed postcheck gates
    after = file_hashes(seed_store)
    changed = {name for name in after if before.get(name) != after[name]}
    assert changed == {f"issues/{claimed}.json", "events.jsonl"}
    events_after = (seed_store / "events.jsonl").read_bytes()
    assert events_after.startswith(events_before), "events are only appended"
    new_lines = events_after[len(events_before) :].decode().splitlines()
    kinds = [(e["type"], e.get("from"), e.get("to")) for e in map(json.loads, new_lines)]
    assert kinds == [
        ("issue_state_changed", "ready", "in_progress"),
        ("issue_claimed", None, None),
        ("issue_state_changed", "in_progress", "gated"),
    ]
    raw = assert_jit_layout(seed_store / "issues" / f"{claimed}.json")
    assert raw["assignee"] == "agent:w1"
    assert raw["context"]["dispatch.attempts"] == "0"
    assert JitStore.open(seed_store).snapshot().warnings == []


def test_unknown_keys_and_their_positions_survive(latest_store: Path) -> None:
    snapshot = JitStore.open(latest_store).snapshot()
    target = snapshot.issues[0].id
    path = latest_store / "issues" / f"{target}.json"
    raw = json.loads(path.read_text())
    extended = {}
    for key, value in raw.items():
        extended[key] = value
        if key == "labels":
            extended["content_format"] = "markdown"
    extended["x_vendor"] = {"nested": ["kept", 1, None]}
    path.write_text(json.dumps(extended, indent=2, ensure_ascii=False))

    result = run_cli(
        "once", "--agent", "w1", "--command", "exit 3", "--jit-dir", str(latest_store), "--issue", target[:8]
    )
    assert result.returncode == 1, result.stderr
    written = json.loads(path.read_text())
    assert list(written) == list(extended)
    assert written["x_vendor"] == {"nested": ["kept", 1, None]}
    assert written["content_format"] == "markdown"
    assert written["context"]["dispatch.last_reason"] == "exit code 3"


def test_missing_optional_assignee_is_read_and_written_explicitly(new_store) -> None:
    store, (issue_id,) = new_store(NewIssue("no assignee key"))
    path = store.issue_file(issue_id)
    raw = json.loads(path.read_text())
    del raw["assignee"]
    path.write_text(json.dumps(raw, indent=2))
    assert store.snapshot().issues[0].assignee is None
    result = run_cli("once", "--agent", "w1", "--command", "false", "--jit-dir", str(store.root))
    assert result.returncode == 1
    written = assert_jit_layout(path)
    assert "assignee" in written and written["assignee"] is None


def test_done_promotes_backlog_issues_whose_dependencies_are_resolved(new_store) -> None:
    store, (first,) = new_store(NewIssue("first", "critical"))
    (follow_up, other) = store.create_issues(
        [NewIssue("follow-up", dependencies=(first,)), NewIssue("waits on another", dependencies=("f" * 8,))]
    )
    assert read_issue(store.root, follow_up)["state"] == "backlog"
    result = run_cli("once", "--agent", "w1", "--command", "true", "--jit-dir", str(store.root), "--json")
    assert result.json["outcome"] == "done"
    assert result.json["promoted"] == [follow_up]
    assert read_issue(store.root, follow_up)["state"] == "ready"
    assert read_issue(store.root, other)["state"] == "backlog", "a missing dependency blocks forever"
    kinds = [(e["type"], e["issue_id"], e.get("to")) for e in read_events(store.root)[-3:]]
    assert kinds == [
        ("issue_state_changed", first, "done"),
        ("issue_completed", first, None),
        ("issue_state_changed", follow_up, "ready"),
    ]


def test_claim_waits_for_jits_index_lock_and_times_out_cleanly(new_store) -> None:
    store, (issue_id,) = new_store(NewIssue("locked out"))
    before = store.issue_file(issue_id).read_bytes()
    fd = os.open(store.root / ".index.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a running `jit` save would hold it
        result = run_cli(
            "once", "--agent", "w1", "--command", "touch ran", "--jit-dir", str(store.root),
            env=clean_env(JIT_LOCK_TIMEOUT="0.3"),
        )  # fmt: skip
    finally:
        os.close(fd)
    assert result.returncode == 3
    assert ".index.lock" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert store.issue_file(issue_id).read_bytes() == before
    assert not (store.root.parent / "ran").exists()


def test_jit_data_dir_is_honoured_relative_to_the_working_directory(new_store) -> None:
    store, (issue_id,) = new_store(NewIssue("found through JIT_DATA_DIR"))
    custom = store.root.parent / "tracker-data"
    store.root.rename(custom)
    result = run_cli("ready", "--json", cwd=custom.parent, env=clean_env(JIT_DATA_DIR="tracker-data"))
    assert [i["issue_id"] for i in result.json["dispatchable"]] == [issue_id]


def test_both_timestamp_styles_are_read(seed_store: Path) -> None:
    snapshot = JitStore.open(seed_store).snapshot(full_states=("done", "ready", "backlog", "rejected", "gated"))
    raw_created = {i.raw["created_at"][-6:] == "+00:00" for i in snapshot.issues}
    assert raw_created == {True, False}, "the fixture holds both styles"
    assert len(snapshot.issues) == 175 and snapshot.warnings == []


def test_a_store_that_refuses_the_settle_is_reported_as_error(new_store, tmp_path: Path) -> None:
    """The command ran; the release could not be written (a lock held past the timeout by another process)."""
    store, (issue_id,) = new_store(NewIssue("settle blocked"))
    ran, held = tmp_path / "ran", tmp_path / "held"
    command = f"touch {ran}; while [ ! -e {held} ]; do sleep 0.05; done; exit 5"
    argv = [sys.executable, "-m", "jit_dispatch", "once", "--agent", "w1", "--command", command, "--json"]
    proc = subprocess.Popen(
        [*argv, "--jit-dir", str(store.root)],
        env=clean_env(JIT_LOCK_TIMEOUT="0.5"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    fd = os.open(store.root / ".index.lock", os.O_RDWR)
    try:
        deadline = time.monotonic() + 20
        while not ran.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the command never ran"
            time.sleep(0.02)
        fcntl.flock(fd, fcntl.LOCK_EX)  # another jit process saving, for longer than the lock timeout
        held.touch()
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        os.close(fd)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, stderr
    assert json.loads(stdout)["outcome"] == "error"
    reason = json.loads(stdout)["reason"]
    assert "exit code 5, but settling failed" in reason and "stays claimed" in reason
    assert read_issue(store.root, issue_id)["assignee"] == "agent:w1"


def test_a_dependent_is_promoted_when_its_last_dependency_finished_during_the_run(new_store) -> None:
    """X waits on A and B; B is finished by another runner while A's command runs: X becomes ready."""
    store, (a, b) = new_store(NewIssue("A", "critical"), NewIssue("B", "high"))
    (x,) = store.create_issues([NewIssue("X", dependencies=(a, b))])
    other = store.root.parent / "finish-b.py"
    other.write_text(
        "import sys\nfrom pathlib import Path\nfrom jit_dispatch.trackers.jit.store import JitStore\n"
        "from jit_dispatch.domain.selection import Filters\n"
        "s = JitStore(Path(sys.argv[1]))\n"
        "s.snapshot()\n"
        "assert s.claim(sys.argv[2], 'agent:other', 'test', Filters())\n"
        "print(s.complete(sys.argv[2], 'agent:other').outcome)\n"
    )
    finish_b = f"{sys.executable} {other} {store.root} {b}"
    result = run_cli("once", "--agent", "w1", "--command", finish_b, "--jit-dir", str(store.root), "--json")
    assert result.json["issue_id"] == a and result.json["outcome"] == "done", result.stderr
    assert read_issue(store.root, b)["state"] == "done"
    assert read_issue(store.root, x)["state"] == "ready"
    assert result.json["promoted"] == [x]


def test_a_full_snapshot_parses_done_issues_too(new_store) -> None:
    """The scan skips the parse of resolved issues only when they were not asked for."""
    store, (a, b) = new_store(NewIssue("A"), NewIssue("B"))
    assert store.claim(a, "agent:w1", "test", Filters()) is not None
    assert store.complete(a, "agent:w1").outcome == "done"
    full = store.snapshot(full_states=tuple(State))
    assert sorted(i.id for i in full.issues) == sorted([a, b])
    assert [i.id for i in store.snapshot().issues] == [b]
