"""Reading a store's event log (docs/jit-format.md#events) for the dashboard and the pool's watcher."""

from __future__ import annotations

from jit_dispatch.trackers.base import Tracker
from jit_dispatch.trackers.jit.store import JitStore
from jit_dispatch.trackers.multi import MultiTracker

EVENTS_FILE = "events.jsonl"


def local_stores(tracker: Tracker) -> list[JitStore]:
    """The `.jit/` directories on this machine behind a tracker: the store itself, every store of
    several, or the private checkout of remote mode (as of its last sync). GitHub Issues: none."""
    if isinstance(tracker, JitStore):
        return [tracker]
    if isinstance(tracker, MultiTracker):
        return [store for part in tracker.trackers for store in local_stores(part)]
    store = getattr(tracker, "store", None)  # remote mode keeps its checkout as a JitStore
    return [store] if isinstance(store, JitStore) else []
