"""The narrow interface every tracker backend implements (jit files, remote jit, GitHub Issues)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, cast

from jit_dispatch.domain.delivery import Delivery
from jit_dispatch.domain.issue import Gate, Issue
from jit_dispatch.domain.selection import Filters, resolve_issue_id
from jit_dispatch.domain.staleness import Claim
from jit_dispatch.domain.values import Outcome
from jit_dispatch.errors import TrackerError


class Lead(Protocol):
    """A ready issue read only as far as selection needs (`snapshot(leads=True)`); `parse()` reads it in full."""

    id: str
    path: str

    def parse(self) -> Issue:
        """The issue in full; ValueError for a file that cannot be read as one."""


@dataclass
class Snapshot:
    """What selection needs: every ready issue (in full, or as a `Lead`), and the state of every issue."""

    issues: list[Issue]  # with `snapshot(leads=True)`, ready issues may be leads until `full()` reads them
    states: dict[str, str]
    gates: dict[str, Gate]
    all_ids: list[str]
    warnings: list[str] = field(default_factory=list)
    locked: frozenset[str] = frozenset()  # remote mode: issues under another runner's claim lock
    leases: dict[str, tuple[str, str]] = field(default_factory=dict)  # jit's leases: issue → (agent, in words)
    rule_holds: dict[str, str] = field(default_factory=dict)  # claims jit's enforced rules refuse: issue → why
    held_back: dict[str, str] = field(default_factory=dict)  # issue → why the tracker cannot dispatch it (GitHub)
    now: datetime | None = None  # the clock its claims' timestamps are on, when not this machine's (GitHub's)

    def holds(self, agent: str | None = None) -> dict[str, str]:
        """What cannot be dispatched to `agent` (any agent, without one), each with the reason: issues
        under another agent's jit lease, claims jit's enforced rules refuse, and what the tracker
        holds back (a foreign ref under the GitHub lock prefix)."""
        held = {issue: words for issue, (holder, words) in self.leases.items() if holder != agent}
        return {**self.held_back, **self.rule_holds, **held}

    def full(self, issue: Issue) -> Issue | None:
        """The issue in full; a lead whose file is unreadable as an issue is warned about, dropped, None.

        Dropped as a full snapshot would have it: gone from `issues` and `states`, its file untouched.
        """
        lead = cast("Lead | Issue", issue)  # a lead stands in for the issue until read here
        if isinstance(lead, Issue):
            return lead
        try:
            return lead.parse()
        except ValueError as exc:  # invalid JSON/UTF-8, too deep, IssueFormatError
            self.warnings.append(f"{lead.path}: {exc}; skipped (left untouched)")
            self.issues = [i for i in self.issues if i is not issue]
            self.states.pop(lead.id, None)
            return None


# A gate run record as jit writes it to `gate-runs/<run_id>/result.json` (domain.gates.run_record).
GateRecord = Mapping[str, Any]

# A claim's signs of life as last seen: (dispatch.claimed_at, dispatch.heartbeat_at).
Liveness = tuple[str | None, str | None]


@dataclass(frozen=True)
class ClaimTiming:
    """Our claim on the runner's monotonic clock: the first "beat" the self-fence counts from."""

    sent: float  # when the claim's write was sent (it landed later)
    took: float  # how long it took to be confirmed


@dataclass(frozen=True)
class Settlement:
    """How a claim was settled, and what that changed besides."""

    outcome: Outcome  # done | gated | in-review | rejected | released | parked | lost
    failed_attempts: int = 0
    promoted: tuple[str, ...] = ()
    error: str | None = None  # settled, but a later write failed (e.g. promoting): exit 3 with this line
    warnings: tuple[str, ...] = ()  # the outcome is recorded, but something after it is left to a repair
    taken_because: str | None = None  # lost: the reason of whoever released the claim (a person, a reaper), if known
    by_agent: bool = False  # the command settled its issue with jit itself; ours only completed it
    reason: str | None = None  # the store's words for the outcome (a `done` jit's graph rules refuse)


class StateCopy(Protocol):
    """The state in the workspace's `.jit/` while the command runs (remote mode).

    docs/delivery.md#when-the-agent-writes-jit-itself"""

    def restore(self) -> None:
        """After the command: note what it wrote there (for the settle to carry), then put the
        workspace's own `.jit/` back as it was."""


class Tracker(Protocol):
    location: str

    def snapshot(self, full_states: Iterable[str] = ("ready",), *, leads: bool = False) -> Snapshot:
        """Every issue's state; issues in `full_states` in full (selection needs only `ready`).

        `leads`: ready issues may come as leads, read in full only by `Snapshot.full` (a jit store)."""

    def issue_ids(self) -> list[str]:
        """Every issue id, for resolving `--issue` prefixes."""

    def resolve_issue_id(self, given: str) -> str:
        """A full id or a unique prefix (GitHub: `12`, `#12`, the URL); ValueError when none or several."""

    def record_result(self, result: Any, render: Callable[[Any], str]) -> str | None:
        """Keep the finished run's report, Markdown by `render(result)`, in the tracker (GitHub: the
        settle comment); a warning or None. The caller renders: trackers do not import the report."""

    def repair(self) -> list[str]:
        """Finish settles a runner recorded but did not complete (GitHub); what was done, as notes."""

    def claim(self, issue_id: str, assignee: str, run: str, filters: Filters) -> Issue | None:
        """Take the issue if it is still dispatchable; None when someone else was faster."""

    def complete(self, issue_id: str, assignee: str, *, gate_runs: Sequence[GateRecord] = ()) -> Settlement:
        """`done`, or `gated` while a required gate is not passed. `gate_runs` (jit's run records of
        this cycle's checkers) are recorded in the same change: run files, `gates_status`, events."""

    def release(
        self,
        issue_id: str,
        assignee: str,
        reason: str,
        max_attempts: int,
        *,
        seen: Liveness | None = None,
        gate_runs: Sequence[GateRecord] = (),
        count_attempt: bool = True,
    ) -> Settlement:
        """Give the claim back with a reason; parks at `max_attempts`. With `seen` (the reaper), only if
        the claim still shows the signs of life seen then: a heartbeat landing meanwhile wins.
        `count_attempt=False`: a person's release, which is not a failed attempt."""

    def hold_for_merge(
        self, issue_id: str, assignee: str, delivery: Delivery, *, gate_runs: Sequence[GateRecord] = ()
    ) -> Settlement:
        """The command's work is delivered: keep the issue out of the ready set until it merges
        (Outcome.IN_REVIEW). `lost` when the claim is no longer ours, as complete() does."""

    def awaiting_merge(self) -> list[tuple[str, Delivery]]:
        """Every issue waiting for its delivery to merge, with where it went (cheap: one scan)."""

    def finish_merged(self, issue_id: str, note: str) -> Settlement:
        """The delivery reached the base: done, with the promotions/events a done settle writes.
        `note`: how it was recognised."""

    def return_for_changes(self, issue_id: str, reason: str, max_review_rounds: int) -> Settlement:
        """Changes were requested: back to ready (keeping dispatch.branch etc. so the next run continues
        the work branch), review_rounds + 1, not a failed attempt; parked past max_review_rounds."""

    def release_unmerged(self, issue_id: str, reason: str, max_attempts: int) -> Settlement:
        """The PR was closed without merging: released, an attempt counted, the branch kept."""

    def checker_root(self, issue_id: str) -> Path | None:
        """The repository root gate checkers run in (jit: the store's parent); None without a registry."""

    def gate_history(self, issue_id: str, gate_key: str) -> list[dict[str, Any]]:
        """Earlier run records of the gate for the issue, oldest first (for `pass_context`)."""

    def heartbeat(
        self, issue_id: str, assignee: str, *, interval: float | None = None, deadline: float | None = None
    ) -> bool:
        """Show a sign of life of our claim; False when it is no longer ours. `interval`: the heartbeat
        interval to announce from now on (lock refs); `deadline`: the monotonic time after which an
        answer is useless (the runner has fenced itself), so no I/O may last beyond it."""

    def taken_by(self, issue_id: str, assignee: str) -> str | None:
        """Who holds our claim now, in words (another agent's jit lease, another assignee); None: ours."""

    def issue_now(self, issue_id: str) -> Issue | None:
        """The issue as stored now, where the command may have changed it with jit; None: not known here."""

    def unpark(self, issue_id: str) -> bool:
        """Lift the parking (a person's decision); False when it was not parked."""

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

    def materialise(self, issue_id: str) -> StateCopy | None:
        """Before the command: make the workspace's `.jit/` the state the claim was made on, when the
        store lives elsewhere (remote mode); None: the agent's jit calls reach the store as it is."""

    def claim_timing(self, issue_id: str) -> ClaimTiming | None:
        """When our claim of the issue was sent and how long it took to land (the heartbeat's first
        reference); None when the backend cannot tell (the heartbeat then starts with the command)."""


class NoDelivery:
    """The delivery methods of a backend that does not record deliveries: nothing waits, nothing to hold."""

    location: str

    def awaiting_merge(self) -> list[tuple[str, Delivery]]:
        """Nothing delivered waits here unless the backend records deliveries."""
        return []

    def hold_for_merge(
        self, issue_id: str, assignee: str, delivery: Delivery, *, gate_runs: Sequence[GateRecord] = ()
    ) -> Settlement:
        raise TrackerError(f"{self.location}: this tracker cannot wait for a merge (use --done-on success)")

    def finish_merged(self, issue_id: str, note: str) -> Settlement:
        raise TrackerError(f"{self.location}: this tracker cannot wait for a merge")

    def return_for_changes(self, issue_id: str, reason: str, max_review_rounds: int) -> Settlement:
        raise TrackerError(f"{self.location}: this tracker cannot wait for a merge")

    def release_unmerged(self, issue_id: str, reason: str, max_attempts: int) -> Settlement:
        raise TrackerError(f"{self.location}: this tracker cannot wait for a merge")


class TrackerDefaults(NoDelivery):
    """What most backends share: one location, prefix ids, nothing to keep, nothing to hurry."""

    location: str

    def issue_ids(self) -> list[str]:
        raise NotImplementedError

    def location_of(self, issue_id: str) -> str:
        return self.location

    def resolve_issue_id(self, given: str) -> str:
        return resolve_issue_id(given, self.issue_ids())

    def repair(self) -> list[str]:
        """Nothing is ever left half-settled here."""
        return []

    def record_result(self, result: Any, render: Callable[[Any], str]) -> str | None:
        """The result lives in the step summary and the events already."""
        return None

    def hurry(self, seconds: float) -> None:
        """Nothing slow to cut short."""

    def checker_root(self, issue_id: str) -> Path | None:
        """No gate registry: only `--check` commands run."""
        return None

    def taken_by(self, issue_id: str, assignee: str) -> str | None:
        """No leases here: a claim taken away shows at the heartbeat and the settle."""
        return None

    def issue_now(self, issue_id: str) -> Issue | None:
        """The command's own jit calls do not reach this store (remote mode: they go to its clone)."""
        return None

    def gate_history(self, issue_id: str, gate_key: str) -> list[dict[str, Any]]:
        return []

    def stats(self) -> dict[str, object]:
        return {}

    def confirm_dead(self, claims: Sequence[Claim], older_than: float) -> list[Claim]:
        """Timestamps are the only evidence (they come from this machine's clock, or jit's)."""
        return list(claims)

    def flush(self) -> None:
        """Every write is complete when it returns."""

    def claim_timing(self, issue_id: str) -> ClaimTiming | None:
        return None

    def materialise(self, issue_id: str) -> StateCopy | None:
        """The workspace's `.jit/` is the store (local mode), or there is none (GitHub)."""
        return None
