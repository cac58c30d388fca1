"""The narrow interface every tracker backend implements (jit files, remote jit, GitHub Issues)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from jit_dispatch.domain.issue import Gate, Issue
from jit_dispatch.domain.selection import Filters, resolve_issue_id
from jit_dispatch.domain.staleness import Claim
from jit_dispatch.domain.values import Outcome


@dataclass
class Snapshot:
    """What selection needs: every ready issue in full, and the state of every issue."""

    issues: list[Issue]
    states: dict[str, str]
    gates: dict[str, Gate]
    all_ids: list[str]
    warnings: list[str] = field(default_factory=list)
    locked: frozenset[str] = frozenset()  # remote mode: issues under another runner's claim lock


# A claim's signs of life as last seen: (dispatch.claimed_at, dispatch.heartbeat_at).
Liveness = tuple[str | None, str | None]


@dataclass(frozen=True)
class Settlement:
    outcome: Outcome  # done | gated | released | parked | lost
    failed_attempts: int = 0
    promoted: tuple[str, ...] = ()


class Tracker(Protocol):
    location: str

    def snapshot(self, full_states: Iterable[str] = ("ready",)) -> Snapshot:
        """Every issue's state; issues in `full_states` in full (selection needs only `ready`)."""

    def issue_ids(self) -> list[str]:
        """Every issue id, for resolving `--issue` prefixes."""

    def resolve_issue_id(self, given: str) -> str:
        """A full id or a unique prefix (GitHub: `12`, `#12`, the URL); ValueError when none or several."""

    def record_result(self, result: Any, max_attempts: int) -> str | None:
        """Keep the finished run's report in the tracker (GitHub: the settle comment); a warning or None."""

    def claim(self, issue_id: str, assignee: str, run: str, filters: Filters) -> Issue | None:
        """Take the issue if it is still dispatchable; None when someone else was faster."""

    def complete(self, issue_id: str, assignee: str) -> Settlement: ...

    def release(
        self, issue_id: str, assignee: str, reason: str, max_attempts: int, *, seen: Liveness | None = None
    ) -> Settlement:
        """Give the claim back with a reason; parks at `max_attempts`. With `seen` (the reaper), only if
        the claim still shows the signs of life seen then: a heartbeat landing meanwhile wins."""

    def heartbeat(self, issue_id: str, assignee: str) -> bool:
        """Refresh `dispatch.heartbeat_at` of our claim; False when it is no longer ours."""

    def unpark(self, issue_id: str) -> bool:
        """Remove `dispatch:parked` (a person's decision); False when it was not parked."""

    def location_of(self, issue_id: str) -> str:
        """Where the issue lives, for the report (one tracker may span several stores)."""

    def hurry(self, seconds: float) -> None:
        """Finish what is left within `seconds` (the run was cancelled; the runner kills us soon)."""

    def stats(self) -> dict[str, object]:
        """Backend figures for the report (remote mode: push attempts, commits)."""

    def confirm_dead(self, claims: Sequence[Claim], older_than: float) -> list[Claim]:
        """Of claims stale by their timestamps, those whose holder is dead by the backend's own evidence
        (remote mode: a lock watched unchanged for two heartbeat intervals); the rest are alive."""

    def flush(self) -> None:
        """Write down what others left pending (remote mode: fold pending results into the branch)."""


class TrackerDefaults:
    """What most backends share: one location, prefix ids, nothing to keep, nothing to hurry."""

    location: str

    def issue_ids(self) -> list[str]:
        raise NotImplementedError

    def location_of(self, issue_id: str) -> str:
        return self.location

    def resolve_issue_id(self, given: str) -> str:
        return resolve_issue_id(given, self.issue_ids())

    def record_result(self, result: Any, max_attempts: int) -> str | None:
        """The result lives in the step summary and the events already."""
        return None

    def hurry(self, seconds: float) -> None:
        """Nothing slow to cut short."""

    def stats(self) -> dict[str, object]:
        return {}

    def confirm_dead(self, claims: Sequence[Claim], older_than: float) -> list[Claim]:
        """Timestamps are the only evidence (they come from this machine's clock, or jit's)."""
        return list(claims)

    def flush(self) -> None:
        """Every write is complete when it returns."""
