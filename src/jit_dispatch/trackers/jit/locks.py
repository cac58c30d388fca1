"""jit's advisory locks: `flock(2)` on separate `*.lock` files, 10 ms polling (docs/jit-format.md#locks)."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jit_dispatch.trackers.jit.files import store_error

POLL_SECONDS = 0.010
DEFAULT_TIMEOUT_SECONDS = 5.0


class LockTimeout(Exception):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__(f"could not acquire lock on {path} after {timeout:g}s")
        self.path = path


def lock_timeout_from_env() -> float:
    """`JIT_LOCK_TIMEOUT` seconds, as jit reads it; 5 s otherwise."""
    value = os.environ.get("JIT_LOCK_TIMEOUT", "")
    try:
        return float(value) if value else DEFAULT_TIMEOUT_SECONDS
    except ValueError:
        return DEFAULT_TIMEOUT_SECONDS


@contextmanager
def flock(path: Path, *, exclusive: bool = True, timeout: float | None = None) -> Iterator[None]:
    """Hold a flock on `path` (created if absent, never truncated or deleted)."""
    limit = lock_timeout_from_env() if timeout is None else timeout
    try:  # a symlink planted in place of a lock file is refused, never followed
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise store_error(path, "open the lock file", exc) from None
    try:
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = time.monotonic() + limit
        while True:
            try:
                fcntl.flock(fd, mode)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(path, limit) from None
                time.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
