"""The small vocabularies every layer shares: issue states, priorities, run outcomes.

`StrEnum`s, so they print, compare and serialise as the plain strings jit and the step outputs
use (`State.IN_PROGRESS == "in_progress"`), while code names them instead of spelling them.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """jit's issue states (docs/jit-format.md#issue-files)."""

    BACKLOG = "backlog"
    READY = "ready"
    IN_PROGRESS = "in_progress"
    GATED = "gated"
    DONE = "done"
    REJECTED = "rejected"
    ARCHIVED = "archived"


# A dependency in one of these no longer blocks its dependents.
RESOLVED_STATES = frozenset({State.DONE, State.REJECTED})
# Nothing is left to do for an issue in one of these.
TERMINAL_STATES = (State.DONE, State.REJECTED, State.ARCHIVED)


class Priority(StrEnum):
    """jit's priorities, most urgent first."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """Lower sorts first."""
        return PRIORITY_RANK[self]

    @classmethod
    def parse(cls, text: object) -> Priority:
        """A priority as people write it (`high`, `HIGH`): the one parser for flags, variables and dispatch.toml."""
        try:
            return cls(str(text).strip().lower())
        except ValueError:
            choices = ", ".join(cls)
            raise ValueError(f"{str(text)!r} is not a priority (one of {choices})") from None


PRIORITY_RANK: dict[str, int] = {priority: rank for rank, priority in enumerate(Priority)}

DEFAULT_READY_LABEL = "dispatch"  # GitHub Issues: the label that makes an issue ready (here: the CLI default)


class Outcome(StrEnum):
    """How one run ended: the `outcome` of the summary, `--json` and the Action's outputs."""

    DONE = "done"
    GATED = "gated"
    REJECTED = "rejected"  # only ever by the agent itself, with jit (docs/jit-format.md#agents-that-settle)
    IN_REVIEW = "in-review"  # delivered, waiting for the merge (docs/delivery.md): not a failure
    RELEASED = "released"
    PARKED = "parked"
    LOST = "lost"
    IDLE = "idle"
    DRY_RUN = "dry-run"
    ERROR = "error"

    @property
    def failed(self) -> bool:
        """The run did not get its issue done: exit 1 (3 for `error`), a warning or error annotation."""
        return self in FAILED_OUTCOMES

    @property
    def claimed(self) -> bool:
        """An issue was actually taken (not just looked at)."""
        return self not in (Outcome.IDLE, Outcome.DRY_RUN)


FAILED_OUTCOMES = frozenset({Outcome.RELEASED, Outcome.PARKED, Outcome.LOST, Outcome.ERROR})
