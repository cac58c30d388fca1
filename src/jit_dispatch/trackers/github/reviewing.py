"""GitHub Issues after a delivery: which issues wait for a merge, and the three ways the wait ends
(merged, changes requested, closed unmerged). Markers and rules: `review`; see docs/delivery.md#github.

Between `access.IssueAccess` (whose reads and writes it uses) and `GitHubTracker`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from jit_dispatch.domain.delivery import Delivery
from jit_dispatch.domain.issue import PARKED_LABEL
from jit_dispatch.domain.transitions import format_timestamp
from jit_dispatch.domain.values import Outcome
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.base import NoDelivery, Settlement
from jit_dispatch.trackers.github import review, rules
from jit_dispatch.trackers.github.access import IssueAccess
from jit_dispatch.trackers.github.api import FAILURES

Ending = Callable[[list[rules.Marker], rules.Marker], tuple[dict[str, Any], int]]  # → marker data, limit


class ReviewPhase(IssueAccess, NoDelivery):
    # GitHubTracker's
    def _settle_comment(
        self, number: int, kind: str, data: dict[str, Any], max_attempts: int = 0
    ) -> tuple[int, str, str]:
        raise NotImplementedError

    # ------------------------------------------------------------------ waiting
    def awaiting_merge(self) -> list[tuple[str, Delivery]]:
        """Issues with the review label and a `deliver` marker whose wait has not ended.

        One listing of the labelled issues (open, and closed ones: a `Closes #N` merge closes the
        issue before anyone notices), then one comment read per labelled issue. An ending recorded
        but not finished (labels) is finished here; a person's label on an issue never delivered
        is left alone.
        """
        waiting: list[tuple[str, Delivery]] = []
        with self.api.doing(f"list issues waiting for a merge in {self.settings.repo}"):
            for raw in self.api.list("/issues", {"state": "all", "labels": self.settings.review_label}):
                if rules.is_pull_request(raw) or rules.has_label(raw, rules.CLAIMED_LABEL):
                    continue
                number = int(raw["number"])
                if raw.get("state") == "closed" and raw.get("state_reason") not in (None, "completed"):
                    self._best_effort(self._remove_label, number, self.settings.review_label)
                    continue  # not planned: a person's decision, nothing to wait for
                markers = self._markers(number)
                delivered = review.last_delivery(markers)
                if delivered is None:
                    continue
                ended = review.ending(markers, delivered)
                if ended is not None:
                    self._best_effort(self._leave_review, number, ended.kind == "done", bool(ended.data.get("parked")))
                    continue
                waiting.append((rules.issue_id(number), review.delivery_of(delivered.data)))
        return waiting

    @staticmethod
    def _best_effort(write: Callable[..., None], *args: Any) -> None:
        """A repair while listing: a failure leaves it to the next scan, never stops the listing."""
        with contextlib.suppress(*FAILURES):
            write(*args)

    # ------------------------------------------------------------------ how the wait ends
    def finish_merged(self, issue_id: str, note: str) -> Settlement:
        """Closed as completed (as a `done` settle does), the review label removed; `done` marker with `note`."""

        def done(markers: list[rules.Marker], delivered: rules.Marker) -> tuple[dict[str, Any], int]:
            attempt = int(delivered.data.get("attempt") or rules.failed_attempts(markers) + 1)
            return {"agent": delivered.agent, "attempt": attempt, "note": note}, 0

        return self._end(issue_id, "done", done)

    def return_for_changes(self, issue_id: str, reason: str, max_review_rounds: int) -> Settlement:
        """Back to ready (the ready label was never removed), one more review round; parked past the limit."""

        def back(markers: list[rules.Marker], delivered: rules.Marker) -> tuple[dict[str, Any], int]:
            rounds = review.review_rounds(markers) + 1
            data = {"agent": delivered.agent, "reason": reason, "round": rounds, "parked": rounds > max_review_rounds}
            return data, max_review_rounds

        return self._end(issue_id, review.RETURN, back)

    def release_unmerged(self, issue_id: str, reason: str, max_attempts: int) -> Settlement:
        """Released with an attempt counted (parked at `max_attempts`); the work branch is left as it is."""

        def release(markers: list[rules.Marker], delivered: rules.Marker) -> tuple[dict[str, Any], int]:
            attempt = rules.failed_attempts(markers) + 1
            data = {"agent": delivered.agent, "reason": reason, "attempt": attempt, "parked": attempt >= max_attempts}
            return data, max_attempts

        return self._end(issue_id, "release", release)

    def _end(self, issue_id: str, kind: str, make: Ending) -> Settlement:
        """Post the ending marker once (by the delivery's nonce), then the labels. `lost` when the issue
        no longer waits (taken back by a person) or another ending was recorded first."""
        number = self._number(issue_id)
        with self.api.doing(f"settle {issue_id}"), self.api.persistent():
            raw = self._get(number)
            markers = self._markers(number)
            attempts = rules.failed_attempts(markers)
            delivered = review.last_delivery(markers)
            ended = review.ending(markers, delivered) if delivered is not None else None
            waiting = rules.has_label(raw, self.settings.review_label) and not rules.has_label(raw, rules.CLAIMED_LABEL)
            closed_done = raw.get("state") == "closed" and raw.get("state_reason") in (None, "completed")
            allowed = raw.get("state") == "open" or (kind == "done" and closed_done)
            if delivered is None or (ended is not None and ended.kind != kind):
                return Settlement(Outcome.LOST, attempts)
            if ended is None and not (waiting and allowed):
                if waiting and raw.get("state") == "closed":  # closed by a person: nothing waits any more
                    self._remove_label(number, self.settings.review_label)
                return Settlement(Outcome.LOST, attempts)
            data, limit = make(markers, delivered)
            if ended is None:
                data = {"nonce": delivered.nonce, "at": format_timestamp(), **data}
                self._settle_comment(number, kind, data, limit)
            else:
                data = dict(ended.data)  # ended already (another runner, or a retry): as recorded
            parked = bool(data.get("parked"))
            attempts = int(data["attempt"]) if kind == "release" else attempts
        warnings: tuple[str, ...] = ()
        try:
            with self.api.doing(f"finish the settle of {issue_id}"), self.api.persistent():
                self._leave_review(number, kind == "done", parked)
        except TrackerError as exc:  # the ending is recorded; awaiting_merge finishes it
            warnings = (f"{exc}; the result is recorded, and the next scan for merges finishes it",)
        if kind == "done":
            return Settlement(Outcome.DONE, attempts, warnings=warnings)
        return Settlement(Outcome.PARKED if parked else Outcome.RELEASED, attempts, warnings=warnings)

    def _leave_review(self, number: int, close: bool, parked: bool) -> None:
        if close:
            self.api.write(lambda: self.api.request("PATCH", f"/issues/{number}", input=rules.CLOSE))
        if parked:
            self._add_label(number, PARKED_LABEL)
        self._remove_label(number, self.settings.review_label)
