"""Pending results: a settlement kept as a ref until a fold writes it to the branch (remote mode).

`refs/jit-dispatch/results/<issue-id>/<attempt>` points at an empty-tree commit whose message
holds the operation (complete, or release with its reason), the claim it settles (agent, run,
attempt, claim time) and when it happened. It is created in one atomic push with the deletion of
the claim lock (leased on the lock's value), so only the lock's holder — or a reaper that watched
the lock die — can settle. Any runner folds pending results into `.jit/` in order (issue, attempt);
applying one is replaying jit's own transitions with the recorded times.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jit_dispatch.domain import boundedjson, transitions
from jit_dispatch.domain.delivery import Delivery
from jit_dispatch.domain.selection import Filters
from jit_dispatch.domain.values import Outcome, State
from jit_dispatch.trackers.base import GateRecord, Liveness, Settlement
from jit_dispatch.trackers.jit.store import JitStore
from jit_dispatch.trackers.remote.locks import LockInfo, int_or_none, note_fields, render_note

COMPLETE, RELEASE, HOLD = "complete", "release", "hold"  # hold: delivered, waiting for the merge
_DELIVERY_FIELDS = ("branch", "base", "delivered-at", "head-sha", "pull-request", "pull-number")


@dataclass(frozen=True)
class ResultInfo:
    op: str  # complete | release
    claim: LockInfo  # the claim it settles (its agent is the assignee)
    at: str  # when it was settled (the settling machine's clock: a record, never a judgement)
    reason: str = ""
    max_attempts: int = 0
    seen: Liveness | None = None  # a reaper's: release only a claim still showing these signs of life
    gate_runs: tuple[GateRecord, ...] = ()  # jit's run records of this attempt's gates, folded with it
    counted: bool = True  # False: a person's release (`release --no-attempt`), not a failed attempt
    delivery: Delivery | None = None  # hold: where the work went
    carries: bool = False  # the commit's tree holds the agent's own jit writes (carried.py)
    given_up: bool = False  # the agent gave the issue back with jit in its clone (clone_leases.py)

    @classmethod
    def new(cls, op: str, claim: LockInfo, **fields: object) -> ResultInfo:
        return cls(op, claim, transitions.format_timestamp(), **fields)  # type: ignore[arg-type]

    def message(self, issue_id: str) -> str:
        fields = {
            "op": self.op,
            "agent": self.claim.agent,
            "run": self.claim.run,
            "attempt": self.claim.attempt,
            "claimed-at": self.claim.at,
            "settled-at": self.at,
            "reason": self.reason or None,
            "max-attempts": self.max_attempts or None,
            "seen-claimed-at": self.seen[0] if self.seen else None,
            "seen-heartbeat-at": self.seen[1] if self.seen else None,
            "gate-runs": json.dumps(list(self.gate_runs), ensure_ascii=True) if self.gate_runs else None,
            "attempt-counted": None if self.counted else "no",
            "carries-writes": "yes" if self.carries else None,
            "released-by-agent": "yes" if self.given_up else None,
        }
        if self.delivery is not None:
            d = self.delivery
            values = (d.branch, d.base, d.delivered_at, d.head_sha, d.pull_request, d.pull_number)
            fields.update(zip(_DELIVERY_FIELDS, values, strict=True))
        return render_note(f"jit-dispatch result {issue_id}", fields)

    def apply(self, store: JitStore, issue_id: str) -> Settlement:
        """Replay the claim (when the branch never got it) and the settlement on `store`."""
        agent = self.claim.agent or ""
        if store.state_of(issue_id) == State.READY and self.claim.at:
            store.claim(issue_id, agent, self.claim.run or "", Filters(issue_id=issue_id), now=self.claim.at)
        if self.op == COMPLETE:
            return store.complete(issue_id, agent, now=self.at, gate_runs=self.gate_runs, given_up=self.given_up)
        if self.op == HOLD and self.delivery is not None:
            runs, given_up = self.gate_runs, self.given_up
            return store.hold_for_merge(issue_id, agent, self.delivery, now=self.at, gate_runs=runs, given_up=given_up)
        if self.op == RELEASE:
            return store.release(
                issue_id,
                agent,
                self.reason,
                self.max_attempts,
                seen=self.seen,
                now=self.at,
                gate_runs=self.gate_runs,
                count_attempt=self.counted,
                given_up=self.given_up,
            )
        return Settlement(Outcome.LOST)


def parse_result(message: str) -> ResultInfo:
    fields = dict(reversed(note_fields(message)))  # the first of a repeated key counts
    claim = LockInfo(
        agent=fields.get("agent"),
        run=fields.get("run"),
        attempt=int_or_none(fields.get("attempt")),
        at=fields.get("claimed-at"),
    )
    seen = None
    if "seen-claimed-at" in fields or "seen-heartbeat-at" in fields:
        seen = (fields.get("seen-claimed-at"), fields.get("seen-heartbeat-at"))
    return ResultInfo(
        op=fields.get("op", ""),
        claim=claim,
        at=fields.get("settled-at") or transitions.format_timestamp(),
        reason=fields.get("reason", ""),
        max_attempts=int_or_none(fields.get("max-attempts")) or 0,
        seen=seen,
        gate_runs=_gate_runs(fields.get("gate-runs", "")),
        counted=fields.get("attempt-counted") != "no",
        delivery=_delivery(fields),
        carries=fields.get("carries-writes") == "yes",
        given_up=fields.get("released-by-agent") == "yes",
    )


def _delivery(fields: dict[str, str]) -> Delivery | None:
    """A hold's delivery, from the fields its message carries (None without branch and base)."""
    branch, base, at, head, url, number = (fields.get(key, "") for key in _DELIVERY_FIELDS)
    if not branch or not base:
        return None
    return Delivery(branch, base, at, head, url or None, int(number) if number.isdigit() else None)


def _gate_runs(text: str) -> tuple[GateRecord, ...]:
    """The run records a result carries (one JSON line); an unreadable field carries none."""
    if not text:
        return ()
    try:
        records: Any = boundedjson.loads(text)
    except ValueError:
        return ()
    if not isinstance(records, list):
        return ()
    return tuple(r for r in records if isinstance(r, dict) and isinstance(r.get("run_id"), str))


def fold_order(ref: str) -> tuple[str, int]:
    """Results fold by issue, then attempt: a release and the next claim's result apply in order."""
    head, _, attempt = ref.rpartition("/")
    return head.rpartition("/")[2], int(attempt) if attempt.isdigit() else 0


def fold_message(items: list[tuple[str, str, str]], skip_ci: bool) -> str:
    """A fold commit's message for its (verb, issue id, agent) items: `jit-dispatch: <verb>
    <short_id> (<agent>)` for one change; `fold N: …` for several."""
    suffix = " [skip ci]" if skip_ci else ""
    if len(items) == 1:
        verb, issue_id, agent = items[0]
        return f"jit-dispatch: {verb} {issue_id[:8]} ({agent}){suffix}"
    shown = ", ".join(f"{verb} {issue_id[:8]}" for verb, issue_id, _ in items[:6])
    more = ", …" if len(items) > 6 else ""
    body = "\n".join(f"{verb} {issue_id} ({agent})" for verb, issue_id, agent in items)
    return f"jit-dispatch: fold {len(items)}: {shown}{more}{suffix}\n\n{body}\n"
