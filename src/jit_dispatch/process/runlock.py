"""Proof, on this machine, that a run's command is still alive — even after its dispatcher died.

Each command starts holding a per-run lock: the dispatcher creates `<run dir>/<key>.<token>.lock`,
takes an exclusive `flock` on it and passes the descriptor to the command, which hands it down to
every process it starts. The lock is free only once *every* process of the run has exited, whoever
killed the dispatcher. So `reap` never releases a claim whose lock is held (the command runs on,
orphaned), and a starting pool sweeps the runs whose dispatcher is dead: it kills the processes
that hold such a lock (docs/service.md#no-command-outlives-its-dispatcher).

The run dir is `$JIT_DISPATCH_RUN_DIR`, else `/tmp/jit-dispatch-<uid>/runs` (mode 0700, ours, no
symbolic link). `key` is a digest of the issue id, so any tracker's ids make a file name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import stat
import time
from dataclasses import dataclass
from pathlib import Path

RUN_DIR_VARIABLE = "JIT_DISPATCH_RUN_DIR"
FRESH_SECONDS = 5.0  # an unheld lock file younger than this may be one `hold` is about to lock
LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def run_dir(create: bool = False) -> Path | None:
    """The directory of run locks; None when it is absent (and not created) or not safely ours."""
    where = os.environ.get(RUN_DIR_VARIABLE)
    path = Path(where) if where else Path("/tmp") / f"jit-dispatch-{os.getuid()}" / "runs"
    if create:
        with contextlib.suppress(OSError):
            path.parent.mkdir(mode=0o700, exist_ok=True)
            path.mkdir(mode=0o700, exist_ok=True)
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        return None  # a link, someone else's, or writable by others: not evidence we can trust
    return path


def _key(issue_id: str) -> str:
    return hashlib.sha256(issue_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): pid + this is unique."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


@dataclass
class RunLock:
    """A run's lock, held by the dispatcher until the command starts with `fd` passed down."""

    path: Path
    fd: int

    def release(self) -> None:
        """After the run: the file goes, and with the last descriptor the lock."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def hold(issue_id: str, token: str) -> RunLock | None:
    """A new locked run file for `issue_id`; None where none can be made (the run goes on without)."""
    directory = run_dir(create=True)
    if directory is None:
        return None
    path = directory / f"{_key(issue_id)}.{token}.lock"
    try:
        fd = os.open(path, LOCK_FLAGS, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a new file: only a sweep's momentary look can hold it
        owner = {"pid": os.getpid(), "start": _start_time(os.getpid()), "issue_id": issue_id}
        os.write(fd, json.dumps(owner).encode())
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return RunLock(path, fd)


def _held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def alive(issue_id: str) -> bool:
    """True when a process of a run of this issue still holds its lock on this machine."""
    directory = run_dir()
    if directory is None:
        return False
    return any(_held(path) for path in directory.glob(f"{_key(issue_id)}.*.lock"))


def _holders(path: Path) -> list[int]:
    """The pids with the lock file open (from /proc/<pid>/fd), this process left out."""
    try:
        target = os.stat(path)
    except OSError:
        return []
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{name}/fd"):
                with contextlib.suppress(OSError):
                    st = os.stat(f"/proc/{name}/fd/{fd}")
                    if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                        found.append(int(name))
                        break
    return found


def sweep() -> list[tuple[str, list[int]]]:
    """Kill the processes of runs whose dispatcher is dead; drop the lock files nobody holds.

    Returns (issue id, killed pids) per orphaned run. A run of a live dispatcher is left alone.
    """
    directory = run_dir()
    if directory is None:
        return []
    swept = []
    for path in sorted(directory.glob("*.lock")):
        if not _held(path):
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > FRESH_SECONDS:  # not one being created now
                    path.unlink()
            continue
        try:
            owner = json.loads(path.read_bytes())
            pid, start, issue_id = int(owner["pid"]), owner.get("start"), str(owner["issue_id"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _start_time(pid) == start and start is not None:
            continue  # its dispatcher is alive: its run, not an orphan
        killed = _holders(path)
        for holder in killed:
            with contextlib.suppress(OSError):
                if (group := os.getpgid(holder)) != os.getpgid(0):  # the run's group, never ours
                    os.killpg(group, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(holder, signal.SIGKILL)
        swept.append((issue_id, killed))
    return swept
