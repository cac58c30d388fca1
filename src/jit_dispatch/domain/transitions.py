"""State changes of a jit issue as pure functions over its raw JSON (docs/architecture.md#claim, #settle).

Each returns the new raw issue and the events jit itself would log for the same change
(docs/jit-format.md#events, #transitions); the store applies them under jit's locks.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from copy import deepcopy
from datetime import UTC, datetime
from typing import Any

from jit_dispatch.domain.issue import (
    CTX_ATTEMPTS,
    CTX_BRANCH,
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


def chrono_time(ns: int) -> str:
    """chrono's serde form of a `DateTime<Utc>`: RFC 3339, `Z`, 0/3/6/9 fraction digits (AutoSi)."""
    return chrono(ns, "T", "Z")


def chrono_display(ns: int) -> str:
    """chrono's `Display` of a `DateTime<Utc>` (`2026-12-07 15:12:42.663028663 UTC`), as jit's messages show it."""
    return chrono(ns, " ", " UTC")


def chrono(ns: int, sep: str, zone: str) -> str:
    """chrono's AutoSi rendering: 0, 3, 6 or 9 fraction digits, whichever shows the value exactly."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime(f"%Y-%m-%d{sep}%H:%M:%S")
    if nanos == 0:
        fraction = ""
    elif nanos % 1_000_000 == 0:
        fraction = f".{nanos // 1_000_000:03d}"
    elif nanos % 1_000 == 0:
        fraction = f".{nanos // 1_000:06d}"
    else:
        fraction = f".{nanos:09d}"
    return stamp + fraction + zone


def timestamp_ns(value: object) -> int | None:
    """A stored timestamp as nanoseconds since the epoch (all 9 fraction digits kept); None if absent or bad."""
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r"(.{19})(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", value)
    if match is None:
        return None
    try:
        whole = datetime.fromisoformat(match.group(1) + match.group(3))
    except ValueError:
        return None
    return int(whole.timestamp()) * 1_000_000_000 + int((match.group(2) or "0").ljust(9, "0"))


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


def release(
    raw: Raw, reason: str, max_attempts: int, now: str, *, count_attempt: bool = True
) -> tuple[Raw, list[Event], Outcome]:
    """Failure: clear the assignee, back to ready, count the attempt; park at the limit (`dispatch.parked_at`).

    `count_attempt=False`: a person's release (`release --no-attempt`), not a failed attempt; the
    count stays, and only a limit already reached (`--park`: 0) parks."""
    return _back(raw, reason, CTX_ATTEMPTS, max_attempts, now, step=1 if count_attempt else 0)


def _counted(context: dict[str, str], key: str, step: int) -> int:
    try:
        return max(0, int(context.get(key, "0"))) + step
    except ValueError:
        return step


def _back(
    raw: Raw, reason: str, counter: str, limit: int, now: str, *, over: bool = False, step: int = 1
) -> tuple[Raw, list[Event], Outcome]:
    """Clear the assignee, back to ready (from `in_progress`, or from waiting for a merge), `step` more
    on `counter`; parked when it reaches `limit` (`over`: only past it)."""
    new = deepcopy(raw)
    previous = new.get("assignee") or ""
    context = new.setdefault("context", {})
    count = _counted(context, counter, step)
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
    gate is still not passed, as jit would). The delivery stays in `context` as a record, but for
    `dispatch.branch`: the work is merged, so an issue reopened later starts afresh from the base
    instead of continuing a branch the base already holds (as on GitHub after a `done`)."""
    new = deepcopy(raw)
    context = new.setdefault("context", {})
    context.pop(CTX_DELIVERED_AT, None)
    context.pop(CTX_BRANCH, None)
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


_SETTLED_BY_AGENT = {State.DONE: Outcome.DONE, State.GATED: Outcome.GATED, State.REJECTED: Outcome.REJECTED}


def agent_outcome(raw: Raw, assignee: str, holds_lease: bool) -> Outcome | None:
    """What the command made of its own claimed issue with jit itself; None when not its doing.

    `holds_lease`: our lease still stands, or the agent gave it up itself (the claims log says so).
    Finished (`done`, `gated`, `rejected`) still under our assignee, or with that lease evidence;
    released (`ready`/`backlog`, no assignee or still ours) only with it: nobody else did it.
    """
    state, holder = raw.get("state"), raw.get("assignee")
    if state in _SETTLED_BY_AGENT and (holder == assignee or (holder is None and holds_lease)):
        return _SETTLED_BY_AGENT[State(state)]
    if state in (State.READY, State.BACKLOG) and holder in (None, assignee) and holds_lease:
        return Outcome.RELEASED
    return None


def after_agent(raw: Raw, outcome: Outcome, reason: str, now: str) -> tuple[Raw, list[Event], Outcome]:
    """Our settle on top of the agent's: `gated` with every gate now passed goes on to `done` (as
    jit's `gate pass` moves it); a release counts the attempt (never parks: the agent chose it)."""
    if outcome == Outcome.GATED and required_gates_passed(raw):
        return complete(raw, now)
    if outcome == Outcome.RELEASED:
        new, events, _ = release(raw, reason, 2**31, now)
        return new, events, Outcome.RELEASED
    return raw, [], outcome


def blocked(raw: Raw, target: str, found: list[tuple[str | None, str]], now: str) -> tuple[Raw, list[Event], Outcome]:
    """jit's enforced graph rules refuse `target`: a `transition_blocked` event per rule, as jit logs
    them, and the issue `gated` with the rules named in `dispatch.last_reason` (docs/jit-format.md#graph-rules)."""
    new = deepcopy(raw)
    events = [make_event("transition_blocked", new["id"], now, target=target, rule=name) for name, _ in found if name]
    reason = "; ".join(f"rule '{name}' blocks {target}: {text}" if name else text for name, text in found)
    new.setdefault("context", {})[CTX_LAST_REASON] = reason
    if new["state"] != State.GATED:
        events.append(_state_change(new, State.GATED, now))
    new["updated_at"] = now
    return new, events, Outcome.GATED


def refused(raw: Raw, target: str, found: Sequence[tuple[str | None, str]], now: str) -> list[Event]:
    """jit's `transition_blocked` events for a transition its rules refuse, one per finding of a
    named rule (none for a rules file jit cannot load); a promotion jit refuses logs just these."""
    return [make_event("transition_blocked", raw["id"], now, target=target, rule=name) for name, _ in found if name]


def parked_by_rules(
    raw: Raw, refusals: Sequence[tuple[str, Sequence[tuple[str | None, str]]]], now: str
) -> tuple[Raw, list[Event], Outcome]:
    """jit's rules refuse the `gated` a settle would end in (after a refused `done`, too): a
    `transition_blocked` event per rule and target, and the issue parked, the rules named — where
    jit keeps it `in_progress`, which no finished run can hold (docs/jit-format.md#refused-gated)."""
    events = [make_event("transition_blocked", raw["id"], now, target=target, rule=name)
              for target, found in refusals for name, _ in found if name]  # fmt: skip
    reason = "; ".join(
        f"rule '{name}' blocks {target}: {text}" if name else text for target, found in refusals for name, text in found
    )
    new, released, outcome = _back(raw, reason, CTX_ATTEMPTS, 0, now)
    return new, events + released, outcome


def liveness(raw: Raw) -> tuple[str | None, str | None]:
    """The claim's signs of life: (dispatch.claimed_at, dispatch.heartbeat_at)."""
    context = raw.get("context", {})
    return context.get(CTX_CLAIMED_AT), context.get(CTX_HEARTBEAT_AT)


def still_ours(raw: Raw, assignee: str, run: str | None = None) -> bool:
    """At settle time: the claim is still this runner's (not reaped or reassigned).

    `run`: the claim's own `dispatch.run`, when known. Two runs of one agent share the assignee
    (a pool, two pools of one configuration), so only the run token tells a claim from the next.
    """
    if raw.get("state") != State.IN_PROGRESS or raw.get("assignee") != assignee:
        return False
    return run is None or (raw.get("context") or {}).get(CTX_RUN) == run


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
