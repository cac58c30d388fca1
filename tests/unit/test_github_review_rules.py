"""The review phase of GitHub Issues, the pure part: deliver markers end claims, endings by nonce,
review rounds, the context a returned issue carries, lock records with a delivery."""

from __future__ import annotations

from typing import Any

from jit_dispatch.domain.delivery import Delivery
from jit_dispatch.domain.issue import CTX_BRANCH, CTX_PULL_REQUEST, CTX_REVIEW_ROUNDS
from jit_dispatch.trackers.github import review, rules
from jit_dispatch.trackers.github.records import DELIVER, LockRecord, parse_record, render_record

DELIVERY = Delivery("jit/1-x", "main", "2025-06-01T12:00:00Z", "b" * 40, "https://github.com/o/r/pull/4", 4)


def marker(kind: str, cid: int, nonce: str, **data: Any) -> rules.Marker:
    return rules.Marker(kind, cid, {"nonce": nonce, **data})


def test_a_deliver_marker_ends_its_claim_like_done() -> None:
    markers = [marker("claim", 1, "a"), marker("deliver", 2, "a", **review.delivery_data(DELIVERY))]
    assert rules.live_claims(markers) == [] and rules.last_settle(markers) == markers[1]


def test_the_marker_line_of_every_kind_parses_back() -> None:
    for kind in ("deliver", "return"):
        body = rules.render_marker(kind, {"nonce": "n", "branch": "<b>&"}) + "\ntext"
        parsed = rules.parse_marker({"id": 5, "body": body, "user": {"login": "me"}}, frozenset({"me"}))
        assert parsed is not None and parsed.kind == kind and parsed.data["branch"] == "<b>&"


def test_returned_and_released_issues_carry_the_delivery_finished_ones_do_not() -> None:
    base = [marker("claim", 1, "a"), marker("deliver", 2, "a", **review.delivery_data(DELIVERY))]
    returned = [*base, marker("return", 3, "a", reason="changes requested by x")]
    context = rules.marker_context(returned)
    assert context[CTX_BRANCH] == "jit/1-x" and context[CTX_PULL_REQUEST] == DELIVERY.pull_request
    assert context[CTX_REVIEW_ROUNDS] == "1" and context["dispatch.last_reason"] == "changes requested by x"
    released = [*base, marker("release", 3, "a", reason="closed")]
    assert rules.marker_context(released)[CTX_BRANCH] == "jit/1-x"
    assert CTX_BRANCH not in rules.marker_context([*base, marker("done", 3, "a")])
    assert rules.failed_attempts(released) == 1 and rules.failed_attempts(returned) == 0


def test_review_rounds_count_since_the_last_reset() -> None:
    markers = [marker("return", 1, "a"), marker("return", 2, "b"), marker("reset", 3, "r"), marker("return", 4, "c")]
    assert review.review_rounds(markers) == 1
    assert review.review_rounds(markers[:2]) == 2


def test_the_first_ending_of_a_delivery_is_the_one() -> None:
    delivered = marker("deliver", 2, "a")
    markers = [delivered, marker("done", 3, "a"), marker("return", 4, "a"), marker("done", 5, "other")]
    ended = review.ending(markers, delivered)
    assert ended is not None and ended.comment_id == 3


def test_a_delivery_survives_the_marker_round_trip() -> None:
    assert review.delivery_of(review.delivery_data(DELIVERY)) == DELIVERY
    assert review.delivery_of({"branch": "b", "pull_number": True}).pull_number is None


def test_a_lock_record_carries_the_delivery_and_others_do_not_mention_it() -> None:
    record = LockRecord(DELIVER, 7, "n", "agent:a", "run", 2, delivery=review.delivery_data(DELIVERY))
    parsed = parse_record(render_record(record))
    assert parsed == record
    plain = LockRecord("claim", 7, "n", "agent:a")
    assert "delivery" not in render_record(plain) and parse_record(render_record(plain)) == plain


def test_texts_keep_hostile_values_inert() -> None:
    data = {**review.delivery_data(DELIVERY), "pull_request": "https://x/) [click](https://evil"}
    text = review.deliver_text("agent:`a`", data)
    assert "[click]" not in text and "[pull request" not in text
    assert "@" not in review.merged_text("merged by @everyone").replace("&#64;", "")
    assert "<img" not in review.return_text("changes requested by <img src=x>", 1, 3, False)
