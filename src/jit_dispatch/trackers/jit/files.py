"""Bytes on disk exactly as jit writes them (docs/jit-format.md#issue-files, #atomic-writes, #events)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from jit_dispatch.errors import TrackerError

# jit's struct order for an issue (docs/jit-format.md#issue-files).
ISSUE_FIELDS = (
    "id",
    "title",
    "description",
    "state",
    "priority",
    "assignee",
    "dependencies",
    "gates_required",
    "gates_status",
    "context",
    "documents",
    "labels",
    "created_at",
    "updated_at",
)
_FIELD_DEFAULTS: dict[str, Any] = {"assignee": None}


def ordered_issue(raw: dict[str, Any]) -> dict[str, Any]:
    """All 14 fields in jit's order; unknown keys kept (in place when the order already fits)."""
    present = [k for k in raw if k in ISSUE_FIELDS]
    if present == list(ISSUE_FIELDS):
        return raw
    ordered = {k: raw.get(k, _FIELD_DEFAULTS.get(k)) for k in ISSUE_FIELDS}
    ordered.update((k, v) for k, v in raw.items() if k not in ordered)
    return ordered


def dumps_pretty(data: Any) -> str:
    """serde_json::to_string_pretty: 2-space indent, raw UTF-8, no trailing newline."""
    return json.dumps(data, indent=2, ensure_ascii=False)


def dumps_event(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def loads_event(line: bytes) -> dict[str, Any] | None:
    """One line of events.jsonl as an event; None for a line that is not a JSON object."""
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to parse
        return None
    return event if isinstance(event, dict) else None


def read_events(path: Path, types: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Events of these types, streamed (the log may be large); unreadable lines are skipped."""
    needles = [f'"{kind}"'.encode() for kind in types]
    try:
        handle = path.open("rb")
    except OSError:
        return
    with handle:
        for line in handle:
            if not any(needle in line for needle in needles):
                continue  # most lines: no JSON parsing at all
            if (event := loads_event(line)) is not None:
                yield event


def store_error(path: Path | str, doing: str, exc: OSError) -> TrackerError:
    """One line naming the file and the cause (docs/jit-format.md#atomic-writes): exit 3."""
    if exc.errno == errno.ELOOP:
        cause = "it is a symbolic link; the dispatcher never writes through one"
    else:
        cause = exc.strerror or str(exc)
    return TrackerError(f"{path}: cannot {doing} ({cause})")


def atomic_write(path: Path, text: str) -> None:
    """Write a fresh temp file beside the target, then rename it over the target (jit's protocol).

    The temp file gets a random name and is created exclusively without following links
    (`O_EXCL | O_NOFOLLOW`, as jit's newest writer names it: `.<name>.<pid>.<random>.tmp`), so a
    file or symlink planted in `.jit/` is never written through. Any failure removes the temp
    file and leaves the target as it was. No fsync, as jit.
    """
    data = text.encode("utf-8")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise store_error(path, "write", exc) from None
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise store_error(path, "write", exc) from None
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def append_lines(path: Path, lines: list[str]) -> tuple[int, int]:
    """O_APPEND, one write() per line, so concurrent appenders never interleave within a line.

    The caller holds `.events.lock`: if a write fails (disk full, I/O error) the file is cut back
    to its length before this call, so no torn or partial batch of events is left behind.
    A symlink is refused, never followed, and so is anything but a regular file (`O_NONBLOCK`:
    opening a FIFO must not wait for a reader). Returns the file's length before and after.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        raise store_error(path, "append to", exc) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise store_error(path, "append to", OSError(errno.EINVAL, "not a regular file"))
        start = end = st.st_size
        try:
            for line in lines:
                data = (line + "\n").encode("utf-8")
                if os.write(fd, data) != len(data):  # a short write: the disk filled up under us
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                end += len(data)
            return start, end
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise store_error(path, "append to", exc) from None
    finally:
        os.close(fd)


# A regular file's identity at a moment: inode, modification time, size. Any save (a rename of a
# fresh temp file) changes the inode, so an unchanged fingerprint means an unchanged file.
Fingerprint = tuple[int, int, int]


def fingerprint(st: os.stat_result) -> Fingerprint:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


# `O_NONBLOCK` so that a FIFO planted in the store cannot hang the reader.
READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
HEAD_BYTES = 64 * 1024  # an issue file is a few KB: one read() of this much takes all of it


def read_open(fd: int, head: bytes | None = None) -> bytes:
    """The whole content of an open file (`READ_FLAGS`) that must be a regular file, else OSError.

    One read() takes a whole issue file (`head`, when the caller made that read already). An
    empty or full first read may be a FIFO or a device (also behind a symlink): those are
    refused, never read on.
    """
    data = os.read(fd, HEAD_BYTES) if head is None else head
    if 0 < len(data) < HEAD_BYTES:
        return data
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise OSError(errno.EINVAL, "not a regular file")
    chunks = [data]
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def read_regular(path: str | Path) -> bytes:
    """The bytes of a regular file; OSError for anything else (see `read_open`)."""
    fd = os.open(path, READ_FLAGS)
    try:
        return read_open(fd)
    finally:
        os.close(fd)
