"""A command that refuses to die: it ignores SIGTERM and starts `setsid` grandchildren, one of them
orphaned at once (its parent exits). After a timeout or a cancellation, of `once` and of the pool,
no process it started may be alive. Each process records its pid and carries a unique argv[0];
the test checks those pids, and kills only them if the dispatcher did not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from helpers import clean_env, read_issue
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

SPAWNED = 4  # the command's shell, two setsid grandchildren, one orphan re-parented at once


def runaway_command(pids: Path, ready: Path, name: str) -> str:
    """Bash that ignores SIGTERM, records every pid it starts, then signals it is ready."""
    return (
        f"trap '' TERM; echo $$ >> {pids}; "
        f"setsid bash -c 'echo $$ >> {pids}; exec -a {name} sleep 300' & "
        f"setsid bash -c 'echo $$ >> {pids}; exec -a {name} sleep 300' & "
        f"( setsid bash -c 'echo $$ >> {pids}; exec -a {name} sleep 300' & ) ; "
        f"while [ $(wc -l < {pids}) -lt {SPAWNED} ]; do sleep 0.01; done; echo up > {ready}; "
        f"exec -a {name} sleep 300"
    )


def alive(pid: int, name: str) -> bool:
    """Still running as one of ours (not a zombie, not a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2 :].split()[0]
    return state not in (b"Z", b"X") and (cmdline.startswith(name.encode()) or b"bash" in cmdline)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().endswith("\n")):
        assert proc.poll() is None, f"the dispatcher exited ({proc.returncode}) too early"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def survivors(pids: Path, name: str) -> list[int]:
    recorded = [int(p) for p in pids.read_text().split()] if pids.exists() else []
    left = [pid for pid in recorded if alive(pid, name)]
    for pid in left:  # by pid only: never by name
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return left


# The real entry point with 2 s instead of 10 s between the timeout's SIGTERM and its SIGKILL: the
# command ignores SIGTERM, so only the SIGKILL ends it; what is proven is that it reaches every
# process, not how long the grace lasts (8 s of waiting saved).
SHORT_GRACE = (
    "import jit_dispatch.process.child as c; c.run_command.__kwdefaults__['timeout_grace'] = 2.0; "
    "from jit_dispatch.cli.main import main; main()"
)


def start_once(created: JitStore, cwd: Path, command: str, *extra: str) -> subprocess.Popen[str]:
    """`jit-dispatch once` as a real process running `command` on `created`."""
    argv = [sys.executable, "-c", SHORT_GRACE, "once", "--agent", "w1", *extra]
    return subprocess.Popen(
        [*argv, "--command", command, "--jit-dir", str(created.root)],
        cwd=cwd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.fixture
def store(new_store) -> tuple[JitStore, str]:
    created, (issue_id,) = new_store(NewIssue("refuses to die"))
    return created, issue_id


def test_no_descendant_survives_a_timeout(store: tuple[JitStore, str], tmp_path: Path) -> None:
    created, issue_id = store
    pids, ready, name = tmp_path / "pids", tmp_path / "ready", f"runaway-{uuid.uuid4().hex[:8]}"
    proc = start_once(created, tmp_path, runaway_command(pids, ready, name), "--timeout", "1")
    try:
        wait_for(ready, proc)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        left = survivors(pids, name)
    assert proc.returncode == 1, stderr
    assert len(pids.read_text().split()) == SPAWNED
    assert left == [], "a process of the command outlived the run"
    assert read_issue(created.root, issue_id)["context"]["dispatch.last_reason"] == "timed out after 1s"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_no_descendant_survives_a_cancel(store: tuple[JitStore, str], tmp_path: Path, signum: int) -> None:
    created, issue_id = store
    pids, ready, name = tmp_path / "pids", tmp_path / "ready", f"runaway-{uuid.uuid4().hex[:8]}"
    proc = start_once(created, tmp_path, runaway_command(pids, ready, name))
    try:
        wait_for(ready, proc)
        sent = time.monotonic()
        proc.send_signal(signum)
        proc.communicate(timeout=15)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
        left = survivors(pids, name)
    assert proc.returncode == 128 + signum
    assert elapsed < 7, f"settled within GitHub's cancellation window, took {elapsed:.1f}s"
    assert left == [], "a process of the command outlived the run"
    assert read_issue(created.root, issue_id)["state"] == "ready"


def test_no_descendant_survives_the_pool(new_store, tmp_path: Path) -> None:
    created, ids = new_store(NewIssue("one"), NewIssue("two"))
    name = f"runaway-{uuid.uuid4().hex[:8]}"
    runs = []
    for n in (1, 2):
        runs.append((tmp_path / f"pids{n}", tmp_path / f"ready{n}"))
    (tmp_path / "dispatch.toml").write_text(
        textwrap.dedent(f"""\
        poll_interval_secs = 0.2
        [[agents]]
        id = "a"
        max_concurrent = 1
        command = "{runaway_command(*runs[0], name)}"
        [[agents]]
        id = "b"
        max_concurrent = 1
        command = "{runaway_command(*runs[1], name)}"
        """)
    )
    argv = [sys.executable, "-m", "jit_dispatch", "start", "--jit-dir", str(created.root)]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _, ready in runs:
            wait_for(ready, proc)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
        left = [pid for pids, _ in runs for pid in survivors(pids, name)]
    assert proc.returncode == 143
    assert elapsed < 7
    assert left == [], "a process of a command outlived the pool"
    assert [read_issue(created.root, i)["state"] for i in ids] == ["ready", "ready"]
