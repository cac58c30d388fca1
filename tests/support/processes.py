"""Watching real processes from a test: files they write, whether a pid still runs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def wait_for_file(path: Path, proc: subprocess.Popen | None = None, timeout: float = 15.0) -> str:
    """Poll until `path` exists with content; fail early if the dispatcher died meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and (text := path.read_text()).endswith("\n"):
            return text.strip()
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"dispatcher exited with {proc.returncode} before {path.name} appeared")
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear within {timeout}s")


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data.rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    fields = proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")  # a zombie has stopped running


# A child's ru_maxrss counts the memory of the process it was forked from (before its exec), so
# the dispatcher is started by a small launcher rather than by pytest itself.
_LAUNCHER = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "_, status, usage = os.wait4(p.pid, 0)\n"
    "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n"
)


def peak_rss_kib(root: Path, command: str, cwd: Path, env: dict[str, str]) -> tuple[int, int]:
    """(exit code, peak resident KiB) of `once`, started by a small launcher."""
    argv = [sys.executable, "-m", "jit_dispatch", "once", "--agent", "w1", "--command", command, "--jit-dir", str(root)]
    launched = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, *argv], cwd=cwd, env=env, capture_output=True)
    code, kib = launched.stdout.split()
    return int(code), int(kib)
