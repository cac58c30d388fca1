"""GitHub Issues waiting for a merge, the pure part: the markers of the review phase (docs/delivery.md#github).

A delivered issue stays open with the review label (`in-review` by default) and is not
dispatchable (`rules.state_of` reads it as `gated`). Its comments carry the phase:

* `deliver` ends the claim (like `done`, by the claim's nonce) and records where the work went;
* then exactly one ending, carrying the same nonce: `done` (merged), `return` (changes
  requested: back to ready, a review round, not an attempt) or `release` (the pull request was
  closed unmerged: an attempt). Looking a marker up by nonce before posting makes each ending
  happen once, whichever runner notices first.

After a `return` or a `release`, the delivery keys (`dispatch.branch`, …) stay in the issue's
context, so the next run continues the work branch (as the jit trackers keep them): the branch and
its commits are never overwritten by a fresh start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from jit_dispatch.domain.delivery import Delivery, delivery_context
from jit_dispatch.domain.issue import CTX_REVIEW_ROUNDS
from jit_dispatch.domain.markdown import md_code_span, md_text

if TYPE_CHECKING:
    from jit_dispatch.trackers.github.rules import Marker

DEFAULT_REVIEW_LABEL = "in-review"
DELIVER, RETURN = "deliver", "return"
ENDINGS = ("done", RETURN, "release")  # what may follow a `deliver` marker of the same nonce
_URL = re.compile(r"https://[^\s()<>\[\]]+")


def delivery_data(delivery: Delivery) -> dict[str, Any]:
    """The delivery as marker (or lock record) fields."""
    return {
        "branch": delivery.branch,
        "base": delivery.base,
        "delivered_at": delivery.delivered_at,
        "head_sha": delivery.head_sha,
        "pull_request": delivery.pull_request,
        "pull_number": delivery.pull_number,
    }


def delivery_of(data: Mapping[str, Any]) -> Delivery:
    number = data.get("pull_number")
    url = data.get("pull_request")
    return Delivery(
        branch=str(data.get("branch") or ""),
        base=str(data.get("base") or ""),
        delivered_at=str(data.get("delivered_at") or ""),
        head_sha=str(data.get("head_sha") or ""),
        pull_request=str(url) if url else None,
        pull_number=number if isinstance(number, int) and not isinstance(number, bool) else None,
    )


def last_delivery(markers: Iterable[Marker]) -> Marker | None:
    delivered = [m for m in markers if m.kind == DELIVER]
    return delivered[-1] if delivered else None


def ending(markers: Iterable[Marker], delivered: Marker) -> Marker | None:
    """How the delivery ended (done, return, release), if it did."""
    return next((m for m in markers if m.kind in ENDINGS and m.nonce == delivered.nonce), None)


def review_rounds(markers: Iterable[Marker]) -> int:
    """`return` markers since the last reset (`unpark`)."""
    rounds = 0
    for marker in markers:
        if marker.kind == "reset":
            rounds = 0
        elif marker.kind == RETURN:
            rounds += 1
    return rounds


def review_context(markers: list[Marker]) -> dict[str, str]:
    """The review rounds, and where the last delivery went once it came back (returned or released)."""
    context: dict[str, str] = {}
    if rounds := review_rounds(markers):
        context[CTX_REVIEW_ROUNDS] = str(rounds)
    delivered = last_delivery(markers)
    ended = ending(markers, delivered) if delivered is not None else None
    if delivered is None or ended is None or ended.kind == "done":
        return context
    return context | delivery_context(delivery_of(delivered.data))


# ---------------------------------------------------------------------------- what people read


def deliver_text(agent: str, data: Mapping[str, Any]) -> str:
    delivery = delivery_of(data)
    where = f"the work is on {md_code_span(delivery.branch, 120)}"
    url = delivery.pull_request or ""
    if delivery.pull_number is not None and _URL.fullmatch(url):
        where += f" ([pull request #{delivery.pull_number}]({url}))"
    return (
        f"👀 **jit-dispatch**: delivered by {md_code_span(agent, 120)}; {where}. The issue waits for the merge "
        f"into {md_code_span(delivery.base, 120)}."
    )


def settle_text(kind: str, data: Mapping[str, Any], max_attempts: int = 0) -> str:
    """The line people read under a settle marker, for every kind of settle."""
    from jit_dispatch.trackers.github import rules

    agent, attempt = str(data.get("agent", "")), int(data.get("attempt") or 0)
    if kind == "done":
        return merged_text(str(data["note"])) if data.get("note") else rules.done_text(agent, attempt)
    if kind == DELIVER:
        return deliver_text(agent, data)
    if kind == RETURN:
        return return_text(
            str(data.get("reason", "")), int(data.get("round") or 0), max_attempts, bool(data.get("parked"))
        )
    limit = max_attempts or attempt
    return rules.release_text(agent, str(data.get("reason", "")), attempt, limit, bool(data.get("parked")))


def merged_text(note: str) -> str:
    return f"✅ **jit-dispatch**: done: the work reached the base branch ({md_text(note, 300)})."


def return_text(reason: str, rounds: int, max_rounds: int, parked: bool) -> str:
    text = f"🔁 **jit-dispatch**: back to ready after review round {rounds} (at most {max_rounds}): {md_text(reason)}."
    if parked:
        text += "\n\n🅿️ Parked: too many review rounds; remove the `dispatch:parked` label to let runners take it again."
    return text
