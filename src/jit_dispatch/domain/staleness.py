"""Which claims are stale: held by a dispatcher that stopped showing signs of life. Pure."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from jit_dispatch.domain.issue import CTX_CLAIMED_AT, CTX_HEARTBEAT_AT, Issue, parse_timestamp
from jit_dispatch.domain.values import State


@dataclass(frozen=True)
class Claim:
    """An `in_progress` issue claimed by the dispatcher (it has `dispatch.claimed_at`)."""

    issue: Issue
    agent: str
    claimed_age: float  # seconds since the claim
    silent_for: float  # seconds since the last sign of life: the newer of claim and heartbeat


def _timestamp(issue: Issue, key: str) -> datetime | None:
    try:
        return parse_timestamp(issue.context[key])
    except (KeyError, ValueError):
        return None


def dispatcher_claims(issues: Iterable[Issue], now: datetime) -> list[Claim]:
    claims = []
    for issue in issues:
        claimed_at = _timestamp(issue, CTX_CLAIMED_AT)
        if issue.state != State.IN_PROGRESS or claimed_at is None:
            continue
        heartbeat = _timestamp(issue, CTX_HEARTBEAT_AT)
        alive = max(claimed_at, heartbeat) if heartbeat else claimed_at
        claims.append(
            Claim(issue, issue.assignee or "nobody", (now - claimed_at).total_seconds(), (now - alive).total_seconds())
        )
    return sorted(claims, key=lambda c: -c.silent_for)


def agent_matches(pattern: str | None, agent: str) -> bool:
    """A glob against the assignee, with or without its `agent:` prefix."""
    if not pattern:
        return True
    bare = agent.split(":", 1)[1] if ":" in agent else agent
    return fnmatch.fnmatchcase(agent, pattern) or fnmatch.fnmatchcase(bare, pattern)


def stale_claims(issues: Iterable[Issue], now: datetime, older_than: float, agent_pattern: str | None) -> list[Claim]:
    return [
        claim
        for claim in dispatcher_claims(issues, now)
        if claim.silent_for > older_than and agent_matches(agent_pattern, claim.agent)
    ]


def format_age(seconds: float) -> str:
    """`45s`, `12m`, `3h 5m`, `2d 4h`: short and exact enough for a reason line."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def reap_reason(claim: Claim) -> str:
    reason = f"stale claim (claimed {format_age(claim.claimed_age)} ago by {claim.agent}"
    if claim.silent_for < claim.claimed_age - 1:
        reason += f", last heartbeat {format_age(claim.silent_for)} ago"
    return reason + ")"


# ---------------------------------------------------------------------------- lock refs, clock-free
# A lock (remote mode's lock ref, the GitHub claim ref) is re-pointed by every heartbeat. Whether
# its holder is dead is judged on the reaper's own monotonic clock, never by comparing clocks of
# two machines: the reaper must itself have watched the lock stay unchanged for two of the
# heartbeat intervals its holder announced, plus the time a fencing holder needs to stop its
# command. `--older-than` is a second, independent floor. The proof that a holder cut off from the
# remote stops before any reaper releases: docs/remote-mode.md#self-fencing.

FENCE_FACTOR = 1.5  # a holder stops its command when no beat is confirmed this many intervals after it was sent
STOP_MARGIN_SECONDS = 5.0  # the holder's SIGTERM grace (3 s) and polling, which a reaper waits out on top
MAX_ANNOUNCED_INTERVAL = 300.0  # a reaper watches no lock that announces rarer beats


class LockWatch:
    """What a reaper has seen of each lock: the version it saw and when (its monotonic clock)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, float]] = {}

    def see(self, key: str, version: str, now: float) -> float:
        """Record a sighting; how long (seconds) the lock has been seen unchanged."""
        seen = self._seen.get(key)
        if seen is None or seen[0] != version:
            self._seen[key] = (version, now)
            return 0.0
        return now - seen[1]


def lock_is_dead(*, unchanged_for: float | None, interval: float | None, age: float, older_than: float) -> bool:
    """Whether a claim's holder is dead, judged without trusting any other machine's clock.

    `unchanged_for`: how long the reaper itself watched the claim's liveness token (a remote lock
    ref's value, a heartbeat comment's id) stay the same, on its own monotonic clock; None when it
    changed while watched or was not watched. `interval`: the heartbeat interval the holder
    announced when it claimed; a live holder changes the token at least once per interval, so two
    intervals unchanged means no heartbeat landed, and a holder that could not renew has stopped its
    command `STOP_MARGIN_SECONDS` later at the latest. `age`: how old the claim looks by timestamps
    (another machine's clock): only a filter a person sets with `older_than`, never enough alone.

    A claim that announced no interval (written by a version without heartbeats, or with them off)
    gives no clock-free sign of life: its age is the only evidence, as before.
    """
    if age <= older_than:
        return False
    if interval is None:
        return True
    return unchanged_for is not None and unchanged_for >= 2 * interval + STOP_MARGIN_SECONDS
