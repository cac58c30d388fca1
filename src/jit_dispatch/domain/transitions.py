"""State changes of a jit issue as pure functions over its raw JSON (docs/architecture.md#claim, #settle).

Each returns the new raw issue and the events jit itself would log for the same change
(docs/jit-format.md#events, #transitions); the store applies them under jit's locks.
"""

from __future__ import annotations

import time
import uuid
from copy import deepcopy
from datetime import UTC, datetime
from typing import Any

from jit_dispatch.domain.issue import (
    CTX_ATTEMPTS,
    CTX_CLAIMED_AT,
    CTX_DELIVERED_AT,
    CTX_HEARTBEAT_AT,
    CTX_LAST_REASON,
    CTX_PARKED_AT,
    CTX_REVIEW_ROUNDS,
    CTX_RUN,
    PARKED_LABEL,
)
from jit_dispatch.domain.values import Outcome, State

Raw = dict[str, Any]
Event = dict[str, Any]


def format_timestamp(ns: int | None = None) -> str:
    """RFC 3339 UTC with nanoseconds and `Z`, like jit's `DateTime<Utc>` fields."""
    ns = time.time_ns() if ns is None else ns
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{fraction:09d}Z"


def make_event(kind: str, issue_id: str, now: str, **fields: Any) -> Event:
    """`type` first, then id, issue_id, timestamp, then the type's own fields (docs/jit-format.md#events)."""
    return {"type": kind, "id": str(uuid.uuid4()), "issue_id": issue_id, "timestamp": now, **fields}


def _state_change(raw: Raw, new_state: State, now: str) -> Event:
    event = make_event("issue_state_changed", raw["id"], now, **{"from": raw["state"], "to": str(new_state)})
    raw["state"] = str(new_state)
    return event


def claim(raw: Raw, assignee: str, run: str, now: str) -> tuple[Raw, list[Event]]:
    """ready → in_progress with the assignee set in one save; then state_changed, claimed."""
    new = deepcopy(raw)
    events = [_state_change(new, State.IN_PROGRESS, now)]
    new["assignee"] = assignee
    context = new.setdefault("context", {})
    context[CTX_CLAIMED_AT] = now
    context[CTX_RUN] = run
    context.setdefault(CTX_ATTEMPTS, "0")
    new["updated_at"] = now
    events.append(make_event("issue_claimed", new["id"], now, assignee=assignee))
    return new, events


def required_gates_passed(raw: Raw) -> bool:
    status = raw.get("gates_status", {})
    return all(status.get(key, {}).get("status") == "passed" for key in raw.get("gates_required", []))


def complete(raw: Raw, now: str) -> tuple[Raw, list[Event], Outcome]:
    """Success: `done` (+ issue_completed) when all required gates passed, else `gated`."""
    new = deepcopy(raw)
    if required_gates_passed(new):
        events = [_state_change(new, State.DONE, now), make_event("issue_completed", new["id"], now)]
        outcome = Outcome.DONE
    else:
        events = [_state_change(new, State.GATED, now)]
        outcome = Outcome.GATED
    new["updated_at"] = now
    return new, events, outcome


def release(raw: Raw, reason: str, max_attempts: int, now: str) -> tuple[Raw, list[Event], Outcome]:
    """Failure: clear the assignee, back to ready, count the attempt; park at the limit (`dispatch.parked_at`)."""
    return _back(raw, reason, CTX_ATTEMPTS, max_attempts, now)


def _counted(context: dict[str, str], key: str) -> int:
    try:
        return int(context.get(key, "0")) + 1
    except ValueError:
        return 1


def _back(
    raw: Raw, reason: str, counter: str, limit: int, now: str, *, over: bool = False
) -> tuple[Raw, list[Event], Outcome]:
    """Clear the assignee, back to ready (from `in_progress`, or from waiting for a merge), one more on
    `counter`; parked when it reaches `limit` (`over`: only past it)."""
    new = deepcopy(raw)
    previous = new.get("assignee") or ""
    context = new.setdefault("context", {})
    count = _counted(context, counter)
    context[counter] = str(count)
    context[CTX_LAST_REASON] = reason
    waiting = context.pop(CTX_DELIVERED_AT, None) is not None and new["state"] == State.GATED
    outcome = Outcome.RELEASED
    if count > limit if over else count >= limit:
        outcome = Outcome.PARKED
        context.setdefault(CTX_PARKED_AT, now)
    new["assignee"] = None
    events: list[Event] = []
    if previous:  # jit's newest reader rejects an issue_released with an empty assignee
        events.append(make_event("issue_released", new["id"], now, assignee=previous, reason=reason))
    if new["state"] == State.IN_PROGRESS or waiting:
        events.append(_state_change(new, State.READY, now))
    new["updated_at"] = now
    return new, events, outcome


def hold(raw: Raw, delivered: dict[str, str], now: str) -> tuple[Raw, list[Event], Outcome]:
    """Delivered, waiting for the merge (docs/jit-format.md#waiting-for-a-merge): `gated` with the
    delivery in `context`; the assignee stays, as on a gated issue jit holds for a manual gate."""
    new = deepcopy(raw)
    context = new.setdefault("context", {})
    context.update(delivered)
    events = [_state_change(new, State.GATED, now)]
    new["updated_at"] = now
    return new, events, Outcome.IN_REVIEW


def waiting_for_merge(raw: Raw) -> bool:
    """`gated` with a delivery recorded: only a merge (or a review, a closed PR) moves it on."""
    context = raw.get("context") or {}
    return raw.get("state") == State.GATED and CTX_DELIVERED_AT in context


def merged(raw: Raw, now: str) -> tuple[Raw, list[Event], Outcome]:
    """The delivery reached the base: `done` as a successful settle makes it (`gated` while a required
    gate is still not passed, as jit would). The delivery stays in `context` as a record."""
    new = deepcopy(raw)
    new.setdefault("context", {}).pop(CTX_DELIVERED_AT, None)
    return complete(new, now)


def returned(raw: Raw, reason: str, max_review_rounds: int, now: str) -> tuple[Raw, list[Event], Outcome]:
    """Changes requested: back to ready, one more review round (not a failed attempt); parked past the limit."""
    return _back(raw, reason, CTX_REVIEW_ROUNDS, max_review_rounds, now, over=True)


def unmerged(raw: Raw, reason: str, max_attempts: int, now: str) -> tuple[Raw, list[Event], Outcome]:
    """The pull request was closed without merging: released like a failed attempt (the branch stays)."""
    return _back(raw, reason, CTX_ATTEMPTS, max_attempts, now)


def promote(raw: Raw, now: str) -> tuple[Raw, list[Event]]:
    """backlog → ready for an issue whose dependencies are now all resolved."""
    new = deepcopy(raw)
    events = [_state_change(new, State.READY, now)]
    new["updated_at"] = now
    return new, events


def liveness(raw: Raw) -> tuple[str | None, str | None]:
    """The claim's signs of life: (dispatch.claimed_at, dispatch.heartbeat_at)."""
    context = raw.get("context", {})
    return context.get(CTX_CLAIMED_AT), context.get(CTX_HEARTBEAT_AT)


def still_ours(raw: Raw, assignee: str) -> bool:
    """At settle time: the claim is still this runner's (not reaped or reassigned)."""
    return raw.get("state") == State.IN_PROGRESS and raw.get("assignee") == assignee


def heartbeat(raw: Raw, now: str) -> Raw:
    """A long run keeps its claim fresh for the reaper; jit logs no event for a context change."""
    new = deepcopy(raw)
    new.setdefault("context", {})[CTX_HEARTBEAT_AT] = now
    new["updated_at"] = now
    return new


def unpark(raw: Raw, now: str) -> Raw | None:
    """Let runners take a parked issue again; its attempt count starts over. None: not parked."""
    labels, context = raw.get("labels", []), raw.get("context", {})
    if PARKED_LABEL not in labels and CTX_PARKED_AT not in context:
        return None
    new = deepcopy(raw)
    new["labels"] = [label for label in labels if label != PARKED_LABEL]
    context = new.setdefault("context", {})
    context.pop(CTX_PARKED_AT, None)
    context[CTX_ATTEMPTS] = "0"
    new["updated_at"] = now
    return new
