"""A claim lock's commit: what the lock ref says about its holder (docs/remote-mode.md).

The lock ref `refs/jit-dispatch/claims/<id>` is the claim: its commit (empty tree) names the
agent, the run, the attempt, when it was claimed and the heartbeat interval the holder promises.
Each heartbeat re-points the ref at a fresh commit (beat n+1), so a reaper can tell a live holder
from a dead one by watching the ref's value change, without reading anyone's clock.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace

from jit_dispatch.domain import transitions

_KEYS = ("agent", "run", "attempt", "heartbeat", "at", "beat", "beat-at", "nonce")


def one_line(value: str) -> str:
    return " ".join(value.split())


def render_note(headline: str, fields: Mapping[str, object]) -> str:
    """A lock's or a result's commit message: the headline, then one `key: value` line per field set."""
    body = "".join(f"{key}: {one_line(str(value))}\n" for key, value in fields.items() if value is not None)
    return f"{headline}\n\n{body}"


def note_fields(message: str) -> list[tuple[str, str]]:
    """The `key: value` lines after the headline, in order; any other line is ignored."""
    pairs = []
    for line in message.splitlines()[1:]:
        key, sep, value = line.partition(": ")
        if sep:
            pairs.append((key, value.strip()))
    return pairs


def int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


@dataclass(frozen=True)
class LockInfo:
    agent: str | None = None
    run: str | None = None
    attempt: int | None = None
    heartbeat: float | None = None  # announced interval; None: a lock without heartbeats (older versions)
    at: str | None = None  # when claimed, by the holder's clock: the claim's `dispatch.claimed_at`
    beat: int = 0
    beat_at: str | None = None  # the last heartbeat, by the holder's clock (a hint, never proof)

    @classmethod
    def new(cls, agent: str, run: str, attempt: int, heartbeat: float | None) -> LockInfo:
        return cls(agent, run, attempt, heartbeat or None, transitions.format_timestamp())

    def next_beat(self, interval: float | None = None) -> LockInfo:
        """The next heartbeat's content, announcing `interval` from now on (None: the same as before)."""
        heartbeat = interval or self.heartbeat
        return replace(self, beat=self.beat + 1, beat_at=transitions.format_timestamp(), heartbeat=heartbeat)

    @property
    def last_sign_of_life(self) -> str | None:
        return self.beat_at or self.at

    def message(self, issue_id: str) -> str:
        """The commit message; a random nonce makes every lock commit unique (so a retried push can
        tell its own lock from another runner's)."""
        fields = {
            "agent": self.agent,
            "run": self.run,
            "attempt": self.attempt,
            "heartbeat": None if self.heartbeat is None else f"{self.heartbeat:g}",
            "at": self.at,
            "beat": self.beat or None,
            "beat-at": self.beat_at,
            "nonce": secrets.token_hex(6),
        }
        return render_note(f"jit-dispatch lock {issue_id}", fields)


def parse_lock(message: str) -> LockInfo:
    """Whatever the commit says; unknown or malformed lines are ignored (a lock from any version)."""
    fields = {key: value for key, value in note_fields(message) if key in _KEYS}
    return LockInfo(
        agent=fields.get("agent") or None,
        run=fields.get("run"),
        attempt=int_or_none(fields.get("attempt")),
        heartbeat=_interval(fields.get("heartbeat")),
        at=fields.get("at"),
        beat=int_or_none(fields.get("beat")) or 0,
        beat_at=fields.get("beat-at"),
    )


def _interval(text: str | None) -> float | None:
    """A positive, finite number of seconds, else None."""
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and 0 < value < float("inf") else None
