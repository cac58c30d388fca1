"""The GitHub claim lock, the pure part: ref names and the record each lock commit carries.

GitHub has one compare-and-set that does not depend on list consistency: creating a git ref
fails (422) when it exists. A claim creates `<lock-prefix>gh-<number>` pointing at a small commit
whose message is a `LockRecord`. Every later change is a fast-forward (`force: false`) from the
commit its writer last saw, so it fails when someone else moved the ref meanwhile:

    claim ──heartbeat──▶ claim' ──settle──▶ done | release   (the runner)
    claim ──────────────────────reap──────▶ release          (a reaper that watched it stay silent)

The settle record is written before anything else of the settle: once it is on the ref, the
result is durable, and any later `once`, `reap` or `status --repair` finishes the settle from it
(marker comment, close or park, unlabel, delete the ref).
See docs/github-issues.md#what-each-failure-leaves-and-who-repairs-it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

CLAIM, DONE, RELEASE, DELIVER = "claim", "done", "release", "deliver"
_HEAD = re.compile(r"\Ajit-dispatch (claim|done|release|deliver) #\d+\n\n(\{.*\})\s*\Z", re.S)
# git check-ref-format, as GitHub applies it: no control characters, space, ~ ^ : ? * [ \, no "..",
# no "@{", no component starting with "." or ending in ".lock", no "//".
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock/")


@dataclass(frozen=True)
class LockRecord:
    """What a lock commit says: who holds the issue, and how the claim ended (if it did)."""

    kind: str  # claim | done | release | deliver
    number: int
    nonce: str
    agent: str
    run: str = ""
    attempt: int = 1  # the attempt this claim runs (1 + failed attempts before it)
    heartbeat: float = 0.0  # seconds between re-pointings the holder announced; 0: none
    beat: int = 0  # heartbeats so far (each one is a new commit)
    reason: str = ""  # release: why
    parked: bool = False  # release: the attempt limit was reached
    max_attempts: int = 0  # release: the limit it was counted against
    delivery: Mapping[str, Any] | None = None  # deliver: where the work went (review.delivery_data)
    started: bool = True  # release: False when the command never ran (not an attempt: no marker)

    def settled(self, kind: str, reason: str = "", parked: bool = False, max_attempts: int = 0) -> LockRecord:
        return replace(self, kind=kind, reason=reason, parked=parked, max_attempts=max_attempts)

    def beaten(self) -> LockRecord:
        return replace(self, beat=self.beat + 1)


def render_record(record: LockRecord) -> str:
    """The commit message: a headline people can read, then the record as one JSON line."""
    data = {k: v for k, v in asdict(record).items() if k not in ("kind", "number") and v is not None}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"jit-dispatch {record.kind} #{record.number}\n\n{text}\n"


def parse_record(message: str) -> LockRecord | None:
    """A lock commit's record, or None when the message is not one of ours."""
    match = _HEAD.match(message or "")
    if match is None:
        return None
    try:
        data: Any = json.loads(match.group(2))
        number = int(message.split("#", 1)[1].split("\n", 1)[0])
        return LockRecord(
            kind=match.group(1),
            number=number,
            nonce=str(data["nonce"]),
            agent=str(data.get("agent", "")),
            run=str(data.get("run", "")),
            attempt=int(data.get("attempt", 1)),
            heartbeat=float(data.get("heartbeat", 0)),
            beat=int(data.get("beat", 0)),
            reason=str(data.get("reason", "")),
            parked=bool(data.get("parked", False)),
            max_attempts=int(data.get("max_attempts", 0)),
            delivery=data["delivery"] if isinstance(data.get("delivery"), dict) else None,
            started=bool(data.get("started", True)),
        )
    except (KeyError, TypeError, ValueError):
        return None


def check_lock_prefix(prefix: str) -> str:
    """A ref namespace GitHub accepts: `refs/` + one more component at least, ending in `/`."""
    if not prefix.startswith("refs/") or not prefix.endswith("/") or prefix.count("/") < 2:
        raise ValueError(f"{prefix!r} must start with refs/ and end with / (e.g. refs/jit-dispatch/claims/)")
    if prefix.startswith(("refs/heads/", "refs/tags/", "refs/pull/")) or _BAD_REF.search(prefix):
        raise ValueError(f"{prefix!r} is not a ref namespace GitHub accepts for locks (not heads/, tags/, pull/)")
    return prefix


def ref_name(prefix: str, number: int) -> str:
    return f"{prefix}gh-{number}"


def number_of(prefix: str, ref: str) -> int | None:
    """The issue number a lock ref names, or None for any other ref."""
    tail = ref[len(prefix) :] if ref.startswith(prefix) else ""
    return int(tail[3:]) if re.fullmatch(r"gh-[1-9]\d{0,11}", tail) else None
