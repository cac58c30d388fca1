"""Which claim locks are dead: watched by the reaper on its own monotonic clock (remote mode).

A holder announces a heartbeat interval in its lock and re-points the lock every interval. The
reaper lists the locks of claims that look stale, then keeps listing: a lock that changes is
alive; one that stays the same for two announced intervals (and looks older than `--older-than`)
is dead (`staleness.lock_is_dead`). No other machine's clock decides a release; the timestamps in
the lock only spare live claims the wait.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from jit_dispatch.domain.issue import parse_timestamp
from jit_dispatch.domain.staleness import MAX_ANNOUNCED_INTERVAL, Claim, lock_is_dead
from jit_dispatch.trackers.remote.git import GitError
from jit_dispatch.trackers.remote.locks import LockInfo
from jit_dispatch.trackers.remote.plumbing import Plumbing

WATCH_LIMIT_SECONDS = 2 * MAX_ANNOUNCED_INTERVAL  # a lock announcing rarer beats is not watched
MIN_INTERVAL_SECONDS = 1.0  # a lock announcing beats more often than this is watched as if it said 1 s


def _age(stamp: str | None, fallback: float) -> float:
    try:
        return (datetime.now(UTC) - parse_timestamp(stamp or "")).total_seconds()
    except ValueError:
        return fallback


def watch(
    plumbing: Plumbing,
    claims: Sequence[Claim],
    locks: Mapping[str, str],
    infos: Mapping[str, LockInfo],
    older_than: float,
    notes: list[str],
) -> set[str]:
    """The ids of `claims` whose holders are dead. Waits at most two of the longest announced interval."""
    dead: set[str] = set()
    watching: dict[str, tuple[str, float, float]] = {}  # issue id → (lock value, interval, age)
    for claim in claims:
        issue_id = claim.issue.id
        sha = locks.get(issue_id)
        if sha is None:  # a claim without a lock (an older version, or set by hand): timestamps only
            if lock_is_dead(unchanged_for=None, interval=None, age=claim.silent_for, older_than=older_than):
                dead.add(issue_id)
            continue
        info = infos.get(issue_id)
        if info is None:  # the lock vanished since the listing: its runner settled
            continue
        age = _age(info.last_sign_of_life, claim.silent_for)
        if info.heartbeat is None:
            if lock_is_dead(unchanged_for=None, interval=None, age=age, older_than=older_than):
                dead.add(issue_id)
        elif 2 * info.heartbeat > WATCH_LIMIT_SECONDS:
            notes.append(f"{issue_id[:8]}: heartbeat every {info.heartbeat:g}s is too rare to watch; not reaped")
        elif age > older_than:
            watching[issue_id] = (sha, max(info.heartbeat, MIN_INTERVAL_SECONDS), age)
    if not watching:
        return dead
    start = time.monotonic()
    poll = min(max(min(interval for _, interval, _ in watching.values()) / 4, 0.2), 5.0)
    while watching:
        time.sleep(poll)
        try:
            current = plumbing.list_remote().locks
        except GitError as exc:
            if not exc.transient:
                raise
            continue
        unchanged_for = time.monotonic() - start
        for issue_id, (sha, interval, age) in list(watching.items()):
            if current.get(issue_id) != sha:  # a heartbeat landed, or it settled: alive
                del watching[issue_id]
            elif lock_is_dead(unchanged_for=unchanged_for, interval=interval, age=age, older_than=older_than):
                dead.add(issue_id)
                del watching[issue_id]
    return dead
