"""Every process a command started, `setsid` ones included, so that none outlives its run.

A process group is not enough: `setsid` (or a double fork into a new session) leaves it. So the
dispatcher makes itself a *child subreaper* (Linux `prctl(PR_SET_CHILD_SUBREAPER)`): a process
orphaned under it re-parents to the dispatcher instead of init. Each run puts a random token in
its command's environment; a process re-parented to the dispatcher belongs to the run whose token
it carries (the agent pool runs several commands at once). A run's processes are then: the
leader's descendants, and the token-carrying children of the dispatcher with their descendants.

When the dispatcher itself dies (SIGKILL, OOM), the leader is killed by the kernel
(`bind_to_parent`: `PR_SET_PDEATHSIG`); the rest of the run is found later by its run lock
(process/runlock.py).

Limits: Linux only (elsewhere only the process group is stopped); a process that re-executes
itself with an empty environment *after* being orphaned cannot be attributed to its run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
PR_SET_PDEATHSIG = 1
TOKEN_VARIABLE = "JIT_DISPATCH_RUN_TOKEN"
REAP_SECONDS = 0.2  # after SIGKILL: how long to wait for the run's processes to be gone

_subreaper: bool | None = None
_prctl: Callable[..., int] | None = None  # libc's prctl, once loaded


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process; True where the kernel allows it."""
    global _subreaper, _prctl
    if _subreaper is None:
        try:
            import ctypes  # imported here: ~3 ms, and only a run that starts a command needs it

            _prctl = ctypes.CDLL(None, use_errno=True).prctl
            _subreaper = _prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        except (OSError, AttributeError):
            _subreaper = False
    return _subreaper


def bind_to_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the kernel SIGKILL the command's leader when its dispatcher dies.

    `PR_SET_PDEATHSIG` fires when the thread that started the child ends — the run's own thread,
    which outlives its command. The function runs in the child between fork and exec, so it only
    calls the `prctl` prepared here (no import, no lock); a parent that died before the request
    took effect is caught by comparing `getppid()`. None where `prctl` is missing (not Linux).
    """
    become_subreaper()
    prctl, parent, kill = _prctl, os.getpid(), int(signal.SIGKILL)
    if prctl is None:
        return None

    def bind() -> None:
        prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:  # the dispatcher is already gone
            os._exit(128 + kill)

    return bind


def _parents() -> dict[int, int]:
    """pid → parent pid of every process visible in /proc."""
    table: dict[int, int] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                data = handle.read()
        except OSError:
            continue  # gone meanwhile
        fields = data[data.rfind(b")") + 2 :].split()  # the command name may hold spaces and parens
        if len(fields) > 1:
            table[int(name)] = int(fields[1])
    return table


def _carries(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return marker in handle.read().split(b"\0")
    except OSError:
        return False


def run_processes(leader: int, token: str) -> list[int]:
    """The live processes of one run, leader excluded (it is the caller's to signal and reap)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    marker = f"{TOKEN_VARIABLE}={token}".encode()
    roots = [leader, *(pid for pid in children.get(os.getpid(), ()) if pid != leader and _carries(pid, marker))]
    found: list[int] = []
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid != leader:
            found.append(pid)
        stack.extend(children.get(pid, ()))
    return found


def signal_run(leader: int, token: str, signum: int) -> list[int]:
    """Send `signum` to the leader's process group and to every process of the run; returns those pids."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, signum)
    pids = run_processes(leader, token)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
    return pids


def kill_run(leader: int, token: str) -> None:
    """SIGKILL the whole run, then reap what re-parented to us, so nothing lingers, not even a zombie."""
    pending = set(signal_run(leader, token, signal.SIGKILL))
    deadline = time.monotonic() + REAP_SECONDS
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not (yet) our child: its own parent reaps it, or it re-parents
                done = 0 if os.path.exists(f"/proc/{pid}") else pid
            if done:
                pending.discard(pid)
        if pending:
            time.sleep(0.002)
