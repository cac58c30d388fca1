"""Real `once --sync git` runners against a bare remote, and checks of what the remote holds."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers import Remote, clean_env, git
from jit_dispatch.domain.issue import issue_from_raw

LOCKS = "refs/jit-dispatch/claims/"


# ---------------------------------------------------------------- helpers


def once_argv(agent: str, command: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jit_dispatch",
        "once",
        "--agent",
        agent,
        "--command",
        command,
        "--sync",
        "git",
        "--json",
        *extra,
    ]


def held_command(tmp_path: Path) -> tuple[str, Path, Path]:
    """(command, started, go): a command that creates `started`, then runs until `go` exists."""
    started, go = tmp_path / "started", tmp_path / "go"
    return f"touch {started}; while [ ! -f {go} ]; do sleep 0.05; done", started, go


def start(clone: Path, agent: str, command: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        once_argv(agent, command, *extra),
        cwd=clone,
        env=env or clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, dict, str]:
    """(exit code, the --json result, stderr)."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        raise AssertionError(f"dispatcher did not finish within {timeout}s: {stderr}") from None
    try:
        return proc.returncode, json.loads(stdout), stderr
    except json.JSONDecodeError:
        raise AssertionError(f"no JSON result (exit {proc.returncode}): {stdout!r} {stderr!r}") from None


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def assert_remote_store_valid(remote: Remote, jit_path: str = ".jit") -> dict[str, dict]:
    """Every file under the remote's store parses; every issue reads as jit reads it. Returns the issues."""
    issues: dict[str, dict] = {}
    names = git(remote.bare, "ls-tree", "-r", "--name-only", "main", "--", jit_path).split()
    assert names, f"no {jit_path} on the remote"
    for name in names:
        text = git(remote.bare, "show", f"main:{name}")
        if name.endswith(".jsonl"):
            for line in text.splitlines():
                json.loads(line)
        elif name.endswith(".json"):
            raw = json.loads(text)
            if name.startswith(f"{jit_path}/issues/"):
                issue_id = Path(name).stem
                issue_from_raw(raw, issue_id)
                issues[issue_id] = raw
    return issues


def install_hook(remote: Remote, body: str) -> None:
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/usr/bin/env bash\n" + body)
    hook.chmod(0o755)


@contextmanager
def git_daemon(base: Path, *, receive_pack: bool = True) -> Iterator[str]:
    """`git daemon` on 127.0.0.1 serving `base` (pushes enabled, or a read-only remote); its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    enable = ["--enable=receive-pack"] if receive_pack else []
    proc = subprocess.Popen(
        ["git", "daemon", "--export-all", *enable, "--reuseaddr", "--listen=127.0.0.1", f"--port={port}",
         f"--base-path={base}", str(base)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip  # a group of its own: `git daemon` runs git-daemon as a child, which must go too
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "git daemon did not start"
                time.sleep(0.05)
        yield f"git://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
