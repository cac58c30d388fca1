"""What GitHub says about waiting deliveries (docs/delivery.md#github): a pull request merged (done),
closed unmerged (released, an attempt), or reviewed with changes requested (back to ready), and the
review the next run's command reads in its feedback file.

For the callers of `Tracker.awaiting_merge` that have a token: the trailer on the base recognises
merges without any API; this adds the PR's `merged` flag, closes and reviews. Calls per look:
`PullRequests.poll` once for every waiting pull request, then the reviews of each one still open.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from jit_dispatch.delivery.pulls import PullRequests
from jit_dispatch.domain.delivery import Delivery, Feedback, delivery_from_context
from jit_dispatch.domain.values import Outcome
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.base import Settlement, Tracker


@dataclass
class Watched:
    """Issues whose wait ended, with how it was settled and a note for the log; what failed."""

    settled: list[tuple[str, Settlement, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def watch_pull_requests(
    tracker: Tracker,
    pulls: PullRequests,
    waiting: Sequence[tuple[str, Delivery]],
    *,
    max_attempts: int,
    max_review_rounds: int,
) -> Watched:
    """Settle each waiting issue whose pull request merged, closed or asks for changes; the rest wait."""
    watched = Watched()
    with_pr = [(issue_id, d) for issue_id, d in waiting if d.pull_number is not None]
    if not with_pr:
        return watched
    try:
        states = pulls.poll([d.pull_number for _, d in with_pr if d.pull_number is not None])
    except TrackerError as exc:
        watched.notes.append(str(exc))
        return watched
    for issue_id, delivery in with_pr:
        number = delivery.pull_number
        pull = states.get(number) if number is not None else None
        if pull is None:
            continue
        try:
            if pull.merged:
                note = f"pull request #{number} merged"
                settled = tracker.finish_merged(issue_id, note)
            elif pull.state == "closed":
                note = f"pull request #{number} closed without merging"
                settled = tracker.release_unmerged(issue_id, note, max_attempts)
            else:
                feedback = pulls.changes_requested(pull.number, delivery.delivered_at or None)
                if feedback is None:
                    continue
                note = f"pull request #{number}: {feedback.reason}"
                settled = tracker.return_for_changes(issue_id, feedback.reason, max_review_rounds)
        except TrackerError as exc:
            watched.notes.append(f"{issue_id[:8]}: {exc}")
            continue
        if settled.outcome != Outcome.LOST:
            watched.settled.append((issue_id, settled, note))
        watched.notes += [w for w in (settled.error, *settled.warnings) if w]
    return watched


def review_feedback(pulls: PullRequests, context: Mapping[str, str]) -> Feedback | None:
    """The review that sent the issue back, in full (body, inline comments), for the feedback file;
    None when the context names no pull request or GitHub shows no review asking for changes."""
    delivery = delivery_from_context(context)
    if delivery is None or delivery.pull_number is None:
        return None
    try:
        return pulls.changes_requested(delivery.pull_number, delivery.delivered_at or None)
    except TrackerError:
        return None
