"""Signed webhooks that wake the pool: GitHub's, and jit events (an events.jsonl line).

GitHub's wake the pool for what can change the ready set: issues, comments, a push to the state
branch, and delivered work moving (docs/delivery.md#github): a pull request closed (merged or
not), a review requesting changes, a push whose commits carry a `Jit-Issue:` trailer.

Both carry `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>` with the shared secret
(`JIT_DISPATCH_WEBHOOK_SECRET`), compared in constant time. Nothing is done for a request whose
signature is missing or wrong, nor twice for one delivery id. A wake is idempotent (it only starts
a fill cycle early), so the worst a replayed body under a new delivery id can do is one early cycle.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from jit_dispatch.domain.delivery import message_trailer_ids

SIGNATURE_HEADER = "X-Hub-Signature-256"
DELIVERY_HEADER = "X-GitHub-Delivery"
EVENT_HEADER = "X-GitHub-Event"
REMEMBERED_DELIVERIES = 4096

# GitHub `issues` actions that can change what is dispatchable.
ISSUE_ACTIONS = frozenset({"opened", "labeled", "unlabeled", "reopened", "closed"})
# jit events after which an issue may have become dispatchable (docs/jit-format.md#events).
JIT_WAKING = frozenset(
    {"issue_created", "issue_completed", "issue_released", "issue_updated", "gate_passed", "gate_removed",
     "dependency_reduced"}
)  # fmt: skip
JIT_WAKING_STATES = frozenset({"ready", "done", "rejected"})  # `issue_state_changed` to these


@dataclass(frozen=True)
class Reply:
    """What to answer, and whether to wake the pool; `kind`/`action`/`delivery` are for the log."""

    status: int
    message: str
    wake: bool = False
    kind: str | None = None
    action: str | None = None
    delivery: str | None = None


def signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    return signature_matches(hmac.new(secret, body, hashlib.sha256), header)


def signature_matches(digest: hmac.HMAC, header: str | None) -> bool:
    """`header` is `sha256=` and the HMAC's hex digest (compared in constant time, as bytes)."""
    if not header:
        return False
    expected = b"sha256=" + digest.hexdigest().encode()
    return hmac.compare_digest(expected, header.strip().encode("utf-8", "replace"))


def sign(secret: bytes, body: bytes) -> str:
    """The header value a sender puts on `body` (the demo and the tests send with it)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class Deliveries:
    """The last delivery ids seen, so a redelivered webhook is acknowledged but not acted on twice.

    Kept as digests: the id header is not signed, so a replayed body may come with ids of any length.
    """

    def __init__(self, size: int = REMEMBERED_DELIVERIES) -> None:
        self.size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, delivery: str) -> bool:
        key = hashlib.sha256(delivery.encode("utf-8", "surrogatepass")).digest()
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            if len(self._seen) > self.size:
                self._seen.popitem(last=False)
            return True


class Receiver:
    """Checks and classifies webhook requests; pure apart from the delivery memory."""

    def __init__(self, secret: bytes, state_branch: str | None) -> None:
        self.secret = secret
        self.state_branch = state_branch
        self.deliveries = Deliveries()

    def github(self, headers: Mapping[str, str], body: bytes) -> Reply:
        if not signature_ok(self.secret, body, headers.get(SIGNATURE_HEADER)):
            return Reply(401, "missing or wrong signature")
        kind = headers.get(EVENT_HEADER) or None
        delivery = headers.get(DELIVERY_HEADER) or None
        payload = _github_payload(headers, body)
        if payload is None:
            return Reply(400, "body is not a JSON object", kind=kind, delivery=delivery)
        action = payload.get("action") if isinstance(payload.get("action"), str) else None
        if delivery and not self.deliveries.first_time("github:" + delivery):
            return Reply(200, "duplicate delivery ignored", kind=kind, action=action, delivery=delivery)
        wake, message = self._github_wakes(kind, action, payload)
        return Reply(200 if wake or kind == "ping" else 202, message, wake, kind, action, delivery)

    def _github_wakes(self, kind: str | None, action: str | None, payload: dict[str, Any]) -> tuple[bool, str]:
        if kind == "ping":
            return False, "pong"
        if kind == "push":
            ref = payload.get("ref")
            if self.state_branch is None or ref == f"refs/heads/{self.state_branch}":
                return True, "push to the state branch"
            if _carries_trailer(payload):
                return True, "push of delivered work (a Jit-Issue trailer)"
            return False, "push to another branch ignored"
        if kind == "issues":
            return (True, "issue changed") if action in ISSUE_ACTIONS else (False, "issue action ignored")
        if kind == "issue_comment":
            return True, "issue comment"
        if kind == "pull_request":
            if action != "closed":
                return False, "pull request action ignored"
            pull = payload.get("pull_request")
            merged = isinstance(pull, dict) and pull.get("merged") is True
            return True, "pull request merged" if merged else "pull request closed without merging"
        if kind == "pull_request_review":
            review = payload.get("review")
            state = review.get("state") if isinstance(review, dict) else None
            if action == "submitted" and isinstance(state, str) and state.lower() == "changes_requested":
                return True, "changes requested"
            return False, "review ignored"
        return False, "event ignored"

    def jit(self, headers: Mapping[str, str], body: bytes) -> Reply:
        if not signature_ok(self.secret, body, headers.get(SIGNATURE_HEADER)):
            return Reply(401, "missing or wrong signature")
        try:
            event = json.loads(body)
        except (ValueError, RecursionError):  # ValueError covers UnicodeDecodeError
            event = None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return Reply(400, "body is not a jit event (a JSON object with a string `type`)")
        kind = event["type"]
        event_id = event.get("id") if isinstance(event.get("id"), str) else None
        delivery = headers.get(DELIVERY_HEADER) or event_id
        if delivery and not self.deliveries.first_time("jit:" + delivery):
            return Reply(200, "duplicate delivery ignored", kind=kind, delivery=delivery)
        to = event.get("to") if kind == "issue_state_changed" else None
        to = to if isinstance(to, str) else None  # a signed list or object is no state (and unhashable)
        if kind in JIT_WAKING or to in JIT_WAKING_STATES:
            return Reply(200, "jit event", True, kind, to, delivery)
        return Reply(202, "event ignored", False, kind, to, delivery)


def _carries_trailer(payload: dict[str, Any]) -> bool:
    """A pushed commit (a merge made by hand, a rebase) whose message has a `Jit-Issue:` trailer line."""
    commits = payload.get("commits")
    messages = [c.get("message") for c in commits if isinstance(c, dict)] if isinstance(commits, list) else []
    return any(isinstance(m, str) and message_trailer_ids(m) for m in messages)


def _github_payload(headers: Mapping[str, str], body: bytes) -> dict[str, Any] | None:
    """GitHub posts JSON, or a form with a `payload` field (content type application/x-www-form-urlencoded)."""
    try:
        if (headers.get("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
            body = (parse_qs(body.decode("utf-8"), max_num_fields=8).get("payload") or [""])[0].encode()
        payload = json.loads(body)
    except (ValueError, RecursionError):  # ValueError covers UnicodeDecodeError; a signed but absurd nesting
        return None
    return payload if isinstance(payload, dict) else None
