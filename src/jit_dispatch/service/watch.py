"""Wake the pool within a second of a change to a local `.jit/`, so polling is only the fallback.

Every jit write that can make work dispatchable either appends to `events.jsonl` (claims, state
changes, releases, gates) or replaces `index.json` (new issues); a gate defined or changed replaces
`gates.json`. So a `stat()` of those three files every quarter second sees it. Chosen over inotify
(watchfiles) because it needs no native wheel, costs three system calls per tick, and also works
where inotify does not: network and overlay mounts, the bind-mounted volumes of containers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jit_dispatch.trackers.jit.files import loads_event

WATCH_INTERVAL = 0.25  # seconds between two stat() rounds
WATCHED = ("events.jsonl", "index.json", "gates.json")  # gates.json: a gate defined or changed

Signature = tuple[int, int, int] | None  # inode, size, mtime (ns); None when missing


def _signature(path: Path) -> Signature:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class EventTail:
    """The complete lines appended to one events.jsonl since the last read (history is skipped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        sig = _signature(path)
        self.inode: int | None = sig[0] if sig else None
        self.offset = sig[1] if sig else 0

    def new_events(self) -> list[dict[str, Any]]:
        sig = _signature(self.path)
        if sig is None:
            self.inode, self.offset = None, 0
            return []
        if sig[0] != self.inode or sig[1] < self.offset:  # replaced or rewritten: not appended events
            self.inode, self.offset = sig[0], sig[1]
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read(sig[1] - self.offset)
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being appended is read next time
        self.offset += len(complete)
        return [event for line in complete.splitlines() if (event := loads_event(line)) is not None]


class StoreWatcher:
    """A daemon thread calling `on_change(new_events)` when a watched file of any store changes."""

    def __init__(
        self, roots: list[Path], on_change: Callable[[list[dict[str, Any]]], None], interval: float = WATCH_INTERVAL
    ) -> None:
        self.paths = [root / name for root in roots for name in WATCHED]
        self.tails = [EventTail(root / WATCHED[0]) for root in roots]
        self.on_change = on_change
        self.interval = interval
        self._seen = [_signature(p) for p in self.paths]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="store-watch", daemon=True)

    def start(self) -> StoreWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * self.interval + 1)

    def check(self) -> bool:
        """One round: True (and `on_change` called) when something changed since the last."""
        now = [_signature(p) for p in self.paths]
        if now == self._seen:
            return False
        self._seen = now
        events = [event for tail in self.tails for event in tail.new_events()]
        self.on_change(events)
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except OSError:
                continue  # a file vanished between stat and read: the next round sees it settled
