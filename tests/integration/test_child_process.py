"""The command as a real child process, through the real CLI: exit codes, timeouts, signals,
huge output, settlement (docs/architecture.md#run). No mocks: real shells, real signals, /proc."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import clean_env, read_events, read_issue, run_cli
from jit_dispatch.trackers.jit.store import JitStore, NewIssue
from processes import alive, peak_rss_kib, proc_stat, wait_for_file

StoreFactory = Callable[..., tuple[JitStore, list[str]]]


# --------------------------------------------------------------------------- helpers
def once(root: Path, command: str, *extra: str, cwd: Path | None = None, env: dict[str, str] | None = None):
    return run_cli(
        "once", "--agent", "w1", "--command", command, "--jit-dir", str(root), "--json", *extra, cwd=cwd, env=env
    )


def spawn_once(root: Path, command: str, *extra: str, cwd: Path, env: dict[str, str], **popen) -> subprocess.Popen:
    argv = [sys.executable, "-m", "jit_dispatch", "once", "--agent", "w1", "--command", command]
    return subprocess.Popen([*argv, "--jit-dir", str(root), *extra], cwd=cwd, env=env, **popen)


def group_survivors(pgid: int) -> list[int]:
    survivors = []
    for entry in Path("/proc").iterdir():
        fields = proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            survivors.append(int(entry.name))
    return survivors


def assert_group_gone(pgid: int, *pids: int) -> None:
    """Nothing of the command's process group outlived the dispatcher (tolerating a brief reap lag)."""
    deadline = time.monotonic() + 1.0
    while (group_survivors(pgid) or any(alive(p) for p in pids)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert group_survivors(pgid) == [], f"processes of group {pgid} survived the run"
    assert [p for p in pids if alive(p)] == [], "a background child survived the run"


def kill_group_quietly(pgid: int) -> None:
    """After a failed test: kill what is left of the command's group (only our shells and sleeps,
    in case the group id was recycled)."""
    for pid in group_survivors(pgid):
        with contextlib.suppress(OSError):
            program = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            if Path(program.decode()).name in ("bash", "sleep"):
                os.kill(pid, signal.SIGKILL)


def new_events(root: Path, issue_id: str, after: int) -> list[tuple[str, str | None, str | None]]:
    return [(e["type"], e.get("from"), e.get("to")) for e in read_events(root)[after:] if e["issue_id"] == issue_id]


# A command that records its process group, leaves a background child and then says it started.
GROUP_PREFIX = "echo $$ > pgid; sleep 300 & echo $! > bgpid; echo started > marker; "


@pytest.fixture
def two_issues(new_store: StoreFactory) -> tuple[Path, str, str]:
    """A store with a high-priority issue (the one taken first) and a normal one."""
    store, (first, second) = new_store(NewIssue("first one", priority="high"), NewIssue("second one"))
    return store.root, first, second


# --------------------------------------------------------------------------- failures
def test_non_zero_exit_releases_with_reason_and_counts_the_attempt(two_issues: tuple[Path, str, str]) -> None:
    root, first, _ = two_issues
    before = len(read_events(root))
    result = once(root, "echo working; exit 7")
    assert result.returncode == 1, result.stderr
    assert result.json["outcome"] == "released"
    assert result.json["issue_id"] == first
    assert result.json["reason"] == "exit code 7"
    assert result.json["exit_code"] == 7
    assert result.json["attempt"] == 1
    raw = read_issue(root, first)
    assert raw["state"] == "ready" and raw["assignee"] is None
    assert raw["context"]["dispatch.attempts"] == "1"
    assert raw["context"]["dispatch.last_reason"] == "exit code 7"
    assert "dispatch.parked_at" not in raw["context"]
    events = read_events(root)[before:]
    assert [(e["type"], e.get("from"), e.get("to")) for e in events] == [
        ("issue_state_changed", "ready", "in_progress"),
        ("issue_claimed", None, None),
        ("issue_released", None, None),
        ("issue_state_changed", "in_progress", "ready"),
    ]
    released = events[2]
    assert released["assignee"] == "agent:w1" and released["reason"] == "exit code 7"


def test_repeated_failures_park_the_issue_and_it_is_never_selected_again(two_issues: tuple[Path, str, str]) -> None:
    root, first, second = two_issues
    first_run = once(root, "exit 7", "--max-attempts", "2")
    assert (first_run.returncode, first_run.json["outcome"], first_run.json["issue_id"]) == (1, "released", first)

    second_run = once(root, 'test "$JIT_DISPATCH_ATTEMPT" = 2 && exit 9', "--max-attempts", "2")
    assert second_run.returncode == 1, second_run.stderr
    assert second_run.json["issue_id"] == first, "the released issue is picked again (it is still the top one)"
    assert second_run.json["attempt"] == 2
    assert second_run.json["outcome"] == "parked"
    assert second_run.json["reason"].startswith("exit code 9")
    parked = read_issue(root, first)
    assert parked["state"] == "ready" and parked["assignee"] is None
    assert "dispatch.parked_at" in parked["context"] and "dispatch:parked" not in parked["labels"]
    assert parked["context"]["dispatch.attempts"] == "2"
    assert parked["context"]["dispatch.last_reason"] == "exit code 9"
    parked_bytes = (root / "issues" / f"{first}.json").read_bytes()

    # A third run takes the other issue; a run pinned to the parked one finds nothing to do.
    third = once(root, "true", "--max-attempts", "2")
    assert (third.returncode, third.json["outcome"], third.json["issue_id"]) == (0, "done", second)
    pinned = once(root, "true", "--max-attempts", "5", "--issue", first)
    assert (pinned.returncode, pinned.json["outcome"]) == (0, "idle")
    assert "parked" in pinned.json["reason"]
    idle = once(root, "true")
    assert (idle.returncode, idle.json["outcome"], idle.json["issue_id"]) == (0, "idle", None)
    assert (root / "issues" / f"{first}.json").read_bytes() == parked_bytes, "a parked issue is left alone"


def test_timeout_kills_the_whole_group_quickly(two_issues: tuple[Path, str, str], tmp_path: Path) -> None:
    root, first, _ = two_issues
    started = time.monotonic()
    result = once(root, GROUP_PREFIX + "sleep 30", "--timeout", "1", cwd=tmp_path)
    elapsed = time.monotonic() - started
    pgid, bg = int((tmp_path / "pgid").read_text()), int((tmp_path / "bgpid").read_text())
    try:
        assert result.returncode == 1, result.stderr
        assert result.json["outcome"] == "released"
        assert result.json["reason"] == "timed out after 1s"
        assert elapsed < 5, f"a 1 s timeout took {elapsed:.1f}s"
        assert_group_gone(pgid, bg)
        raw = read_issue(root, first)
        assert raw["state"] == "ready" and raw["context"]["dispatch.last_reason"] == "timed out after 1s"
    finally:
        kill_group_quietly(pgid)


@pytest.mark.parametrize("redirect", ["", " >/dev/null 2>&1"], ids=["holds-pipe", "detached-output"])
def test_background_children_do_not_outlive_a_finished_command(
    two_issues: tuple[Path, str, str], tmp_path: Path, redirect: str
) -> None:
    """The command exits 0 but leaves `sleep 300 &` behind: the run still ends, and so does the child."""
    root, _, _ = two_issues
    started = time.monotonic()
    result = once(root, f"echo $$ > pgid; sleep 300{redirect} & echo $! > bgpid; echo done", cwd=tmp_path)
    elapsed = time.monotonic() - started
    pgid, bg = int((tmp_path / "pgid").read_text()), int((tmp_path / "bgpid").read_text())
    try:
        assert result.returncode == 0, result.stderr
        assert result.json["outcome"] == "done"
        assert elapsed < 5, f"a background child kept the run alive for {elapsed:.1f}s"
        assert_group_gone(pgid, bg)
    finally:
        kill_group_quietly(pgid)


def test_a_command_that_closes_its_output_runs_to_completion(two_issues: tuple[Path, str, str], tmp_path: Path) -> None:
    root, first, _ = two_issues
    result = once(root, "exec > build.log 2>&1; sleep 0.3; echo finished", cwd=tmp_path)
    assert (result.json["outcome"], result.json["reason"]) == ("done", None)
    assert result.returncode == 0
    assert (tmp_path / "build.log").read_text() == "finished\n"
    assert read_issue(root, first)["state"] == "done"


def test_command_not_found_is_named(two_issues: tuple[Path, str, str]) -> None:
    root, first, _ = two_issues
    result = once(root, "definitely-not-a-command-xyz --flag")
    assert result.returncode == 1, result.stderr
    assert result.json["outcome"] == "released"
    assert result.json["reason"] == "command not found: definitely-not-a-command-xyz"
    assert result.json["exit_code"] == 127
    assert read_issue(root, first)["context"]["dispatch.last_reason"] == result.json["reason"]


def test_a_missing_shell_is_reported_as_not_found(two_issues: tuple[Path, str, str]) -> None:
    root, first, _ = two_issues
    result = once(root, "true", "--shell", "no-such-shell-xyz")
    assert result.returncode == 1, result.stderr
    assert result.json["outcome"] == "released"
    assert result.json["reason"] == "command not found: no-such-shell-xyz"
    assert read_issue(root, first)["state"] == "ready"


# --------------------------------------------------------------------------- cancellation
@pytest.mark.parametrize(
    ("signum", "code", "stubborn"),
    [
        (signal.SIGTERM, 143, False),
        (signal.SIGINT, 130, False),
        (signal.SIGHUP, 129, False),
        (signal.SIGINT, 130, True),  # the command ignores SIGTERM/SIGINT/SIGHUP: it must be SIGKILLed in time
    ],
    ids=["SIGTERM", "SIGINT", "SIGHUP", "SIGINT-stubborn-command"],
)
def test_signal_to_the_dispatcher_cancels_releases_and_reports(
    two_issues: tuple[Path, str, str], tmp_path: Path, signum: signal.Signals, code: int, stubborn: bool
) -> None:
    root, first, _ = two_issues
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs.txt"
    env = clean_env(GITHUB_STEP_SUMMARY=str(summary), GITHUB_OUTPUT=str(outputs))
    trap = "trap '' TERM INT HUP; " if stubborn else ""
    proc = spawn_once(
        root,
        trap + GROUP_PREFIX + "sleep 60",
        "--json",
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pgid = None
    try:
        wait_for_file(tmp_path / "marker", proc)
        pgid, bg = int((tmp_path / "pgid").read_text()), int((tmp_path / "bgpid").read_text())
        assert alive(bg)
        sent = time.monotonic()
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=15)
        elapsed = time.monotonic() - sent
        assert elapsed < 7, f"the dispatcher took {elapsed:.1f}s to stop after {signum.name}"
        assert proc.returncode == code, stderr
        result = json.loads(stdout)
        reason = f"cancelled ({signum.name})"
        assert (result["outcome"], result["reason"], result["issue_id"]) == ("released", reason, first)
        raw = read_issue(root, first)
        assert raw["state"] == "ready" and raw["assignee"] is None
        assert raw["context"]["dispatch.last_reason"] == reason
        assert raw["context"]["dispatch.attempts"] == "1"
        assert_group_gone(pgid, bg)
        text = summary.read_text()
        assert "released" in text and reason in text and first in text
        assert "outcome<<" in outputs.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if pgid is not None:
            kill_group_quietly(pgid)


# --------------------------------------------------------------------------- output volume
def test_memory_stays_flat_and_summary_small_whatever_the_command_prints(
    new_store: StoreFactory, tmp_path: Path
) -> None:
    store, (small_id, big_id) = new_store(NewIssue("small", priority="high"), NewIssue("big"))
    line, total = "some line of output 0123456789", 200_000_000
    small_summary, big_summary = tmp_path / "small.md", tmp_path / "big.md"

    code, small_kib = peak_rss_kib(
        store.root, f"yes {line} | head -c 1000", tmp_path, clean_env(GITHUB_STEP_SUMMARY=str(small_summary))
    )
    assert code == 0 and read_issue(store.root, small_id)["state"] == "done"

    started = time.monotonic()
    code, big_kib = peak_rss_kib(
        store.root, f'yes "{line}" | head -c {total}', tmp_path, clean_env(GITHUB_STEP_SUMMARY=str(big_summary))
    )
    elapsed = time.monotonic() - started
    assert code == 0 and read_issue(store.root, big_id)["state"] == "done"

    assert big_kib < 80 * 1024, f"peak RSS {big_kib} KiB for 200 MB of output"
    assert big_kib - small_kib < 15 * 1024, f"peak RSS grew from {small_kib} to {big_kib} KiB with the output"
    data = big_summary.read_bytes()
    assert 0 < len(data) < 64 * 1024
    text = data.decode("utf-8")
    last_line = ((line + "\n") * (total // (len(line) + 1) + 1))[:total].rsplit("\n", 1)[1]
    assert last_line and last_line != line, "the output ends in a partial line"
    assert f"\n{last_line}\n```" in text, "the summary's tail ends with the output's last line"
    assert "190.7 MiB" in text, "the summary gives the full output size"
    assert elapsed < 30, f"200 MB of output took {elapsed:.1f}s"


# --------------------------------------------------------------------------- success
def test_success_with_all_gates_passed_is_done(new_store: StoreFactory) -> None:
    store, (issue_id,) = new_store(NewIssue("no gates"))
    before = len(read_events(store.root))
    result = once(store.root, "true")
    assert (result.returncode, result.json["outcome"], result.json["exit_code"]) == (0, "done", 0)
    raw = read_issue(store.root, issue_id)
    assert raw["state"] == "done" and raw["assignee"] == "agent:w1"
    assert raw["context"]["dispatch.attempts"] == "0"
    assert new_events(store.root, issue_id, before) == [
        ("issue_state_changed", "ready", "in_progress"),
        ("issue_claimed", None, None),
        ("issue_state_changed", "in_progress", "done"),
        ("issue_completed", None, None),
    ]


def test_success_with_a_passed_gate_is_done(new_store: StoreFactory) -> None:
    store, (issue_id,) = new_store(NewIssue("gate passed", gates_required=("review",)))
    path = store.root / "issues" / f"{issue_id}.json"
    raw = json.loads(path.read_text())
    raw["gates_status"] = {"review": {"status": "passed", "updated_by": "human:alice", "updated_at": raw["created_at"]}}
    path.write_text(json.dumps(raw, indent=2, ensure_ascii=False))
    result = once(store.root, "true")
    assert (result.returncode, result.json["outcome"]) == (0, "done"), result.stderr
    assert read_issue(store.root, issue_id)["state"] == "done"


def test_success_with_unpassed_required_gates_is_gated(new_store: StoreFactory) -> None:
    """`review` is required but has no registry entry and no status: held while gates run; with
    `--gates skip` (gates left to jit) the issue ends gated."""
    store, (issue_id,) = new_store(NewIssue("needs review", gates_required=("review",)))
    before = len(read_events(store.root))
    held = once(store.root, "true")
    assert (held.returncode, held.json["outcome"]) == (0, "idle"), held.stderr
    assert held.json["reason"] == "no dispatchable issue (1 ready but held back)"
    assert len(read_events(store.root)) == before
    result = once(store.root, "true", "--gates", "skip")
    assert (result.returncode, result.json["outcome"]) == (0, "gated"), result.stderr
    raw = read_issue(store.root, issue_id)
    assert raw["state"] == "gated" and raw["assignee"] == "agent:w1"
    assert new_events(store.root, issue_id, before)[2:] == [("issue_state_changed", "in_progress", "gated")]
    assert "issue_completed" not in {e["type"] for e in read_events(store.root)[before:]}


# --------------------------------------------------------------------------- lost claims
def _rewrite_under_jit_locks(root: Path, issue_id: str, change: Callable[[dict], None]) -> bytes:
    """What another jit process does: `.index.lock`, then `issues/<id>.lock`, temp file + rename."""
    path = root / "issues" / f"{issue_id}.json"
    index_fd = os.open(root / ".index.lock", os.O_RDWR | os.O_CREAT, 0o644)
    issue_fd = os.open(root / "issues" / f"{issue_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(index_fd, fcntl.LOCK_EX)
        fcntl.flock(issue_fd, fcntl.LOCK_EX)
        raw = json.loads(path.read_text())
        change(raw)
        data = json.dumps(raw, indent=2, ensure_ascii=False).encode()
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return data
    finally:
        os.close(issue_fd)
        os.close(index_fd)


def _reassign(raw: dict) -> None:
    raw["assignee"] = "agent:someone-else"


def _reap(raw: dict) -> None:
    raw["assignee"], raw["state"] = None, "ready"
    raw["context"]["dispatch.attempts"] = "1"
    raw["context"]["dispatch.last_reason"] = "reaped: claim expired"


@pytest.mark.parametrize("change", [_reassign, _reap], ids=["reassigned", "reaped"])
@pytest.mark.parametrize("exit_code", [0, 7], ids=["success", "failure"])
def test_a_claim_taken_away_while_running_is_lost_and_not_overwritten(
    two_issues: tuple[Path, str, str], tmp_path: Path, change: Callable[[dict], None], exit_code: int
) -> None:
    root, first, _ = two_issues
    command = f"echo started > marker; until [ -e go ]; do sleep 0.02; done; exit {exit_code}"
    proc = spawn_once(
        root,
        command,
        "--json",
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_file(tmp_path / "marker", proc)
        assert read_issue(root, first)["assignee"] == "agent:w1"
        events_before = len(read_events(root))
        written = _rewrite_under_jit_locks(root, first, change)
        (tmp_path / "go").touch()
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr
    result = json.loads(stdout)
    assert (result["outcome"], result["issue_id"], result["exit_code"]) == ("lost", first, exit_code)
    assert (root / "issues" / f"{first}.json").read_bytes() == written, "the dispatcher overwrote the new owner"
    assert read_events(root)[events_before:] == [], "no settlement events for a lost claim"
    assert not (root / "issues" / f"{first}.json.tmp").exists()


# --------------------------------------------------------------------------- the dispatcher's own failures
def test_a_shell_that_cannot_start_releases_the_issue(new_store: StoreFactory, tmp_path: Path) -> None:
    store, (issue_id,) = new_store(NewIssue("bad shell"))
    not_a_program = tmp_path / "not-a-program"
    not_a_program.write_text("plain text\n")
    not_a_program.chmod(0o755)
    result = once(store.root, "true", "--shell", str(not_a_program))
    assert (result.returncode, result.json["outcome"], result.json["exit_code"]) == (1, "released", 126)
    assert read_issue(store.root, issue_id)["state"] == "ready", "never left claimed"


def test_a_nul_in_the_title_does_not_strand_the_claim(new_store: StoreFactory) -> None:
    store, _ = new_store(NewIssue("nul \x00 inside"))
    result = once(store.root, 'printf "%s" "$JIT_ISSUE_TITLE"')
    assert (result.returncode, result.json["outcome"]) == (0, "done")
    assert "nul  inside" in result.stderr


def test_a_detached_grandchild_cannot_hold_the_dispatcher_past_the_cancel_budget(
    new_store: StoreFactory, tmp_path: Path
) -> None:
    store, (issue_id,) = new_store(NewIssue("escapes its group"))
    marker, escaped = tmp_path / "started", tmp_path / "escaped.pid"
    command = f"setsid sleep 12 & echo $! > {escaped}; echo up > {marker}; sleep 30"
    proc = spawn_once(
        store.root, command, cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for_file(marker, proc)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        assert time.monotonic() - sent < 7, "settled within GitHub's cancellation window"
        assert proc.returncode == 143
        assert read_issue(store.root, issue_id)["context"]["dispatch.last_reason"] == "cancelled (SIGTERM)"
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(ProcessLookupError, ValueError, FileNotFoundError):
            os.kill(int(escaped.read_text()), signal.SIGKILL)
