"""What one dispatch did: the value the engine returns and every report renders. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

from jit_dispatch.domain.delivery import Delivery
from jit_dispatch.domain.gates import GateRun, Step
from jit_dispatch.domain.issue import Issue
from jit_dispatch.domain.selection import Held
from jit_dispatch.domain.values import Outcome

HELD_IN_FULL = 20  # held issues the report lists (title and all); the others are only counted


@dataclass
class Result:
    """What one dispatch did, for the reports and the exit code."""

    outcome: Outcome
    agent: str
    store: str
    issue: Issue | None = None
    attempt: int | None = None
    exit_code: int | None = None
    duration_seconds: float | None = None
    reason: str | None = None
    command: str | None = None
    output_tail: str = ""
    output_bytes: int = 0
    cancelled_by: int | None = None
    promoted: tuple[str, ...] = ()
    held: list[Held] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sync: dict[str, object] = field(default_factory=dict)  # remote mode: push attempts, commits
    gates: list[GateRun] = field(default_factory=list)  # gate and check runs, in the order they ran
    planned: list[Step] = field(default_factory=list)  # dry run: what would run
    failed_gate: str | None = None  # the key (or check command) that decided a failure
    delivery: Delivery | None = None  # where the work went (`--deliver`)
    merged: list[str] = field(default_factory=list)  # waiting deliveries settled before selecting, one line each
