"""A reader that goes away (`once … | head -1`) never changes an issue's outcome: the result is
settled first, printing errors are ignored after, and the exit code is the documented one.
Real pipes, closed early, and the real CLI in a subprocess."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import clean_env, read_issue
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

StoreFactory = Callable[..., tuple[JitStore, list[str]]]
CLI = [sys.executable, "-m", "jit_dispatch"]


@pytest.mark.parametrize(("command", "state", "code"), [("true", "done", 0), ("exit 7", "ready", 1)])
def test_a_pipe_closed_before_the_first_line(
    tmp_path: Path, new_store: StoreFactory, command: str, state: str, code: int
) -> None:
    store, [issue] = new_store(NewIssue("piped", "normal"))
    proc = subprocess.Popen(
        [*CLI, "once", "--jit-dir", str(store.root), "--agent", "w", "--command", f"echo out; {command}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
        cwd=tmp_path,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # nobody will read a line: every write the dispatcher makes meets EPIPE
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == code, stderr
    assert "BrokenPipe" not in stderr and "Traceback" not in stderr, stderr
    data = read_issue(store.root, issue)
    assert data["state"] == state
    if state == "ready":  # released by the command's failure, not by the pipe
        assert data["context"]["dispatch.last_reason"].startswith("exit code 7"), data["context"]
        assert data["context"]["dispatch.attempts"] == "1"


@pytest.mark.parametrize("as_json", [False, True])
def test_once_piped_into_head_settles_done_and_exits_0(tmp_path: Path, new_store: StoreFactory, as_json: bool) -> None:
    store, [issue] = new_store(NewIssue("piped", "normal"))
    argv = [*CLI, "once", "--jit-dir", str(store.root), "--agent", "w", "--command", "sleep 1; seq 1 2000"]
    argv += ["--json"] if as_json else []
    # head reads one line and exits; the command's output and the summary come after it left.
    script = f'{shlex.join(argv)} | head -1; echo "exit=${{PIPESTATUS[0]}}" >&2'
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=clean_env(), cwd=tmp_path,
                          timeout=60)  # fmt: skip
    assert proc.stderr.strip().splitlines()[-1] == "exit=0", proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert len(proc.stdout.splitlines()) == 1
    assert read_issue(store.root, issue)["state"] == "done"
