"""GitHub Issues with a claim the server arbitrates: one git ref per claimed issue (`--github-lock refs`).

Creating the ref is the claim (422 when it exists), so no list endpoint's lag can let two runners
win. The winner re-reads the issue, then labels it and posts the claim comment people read. Every
later move of the ref is a fast-forward from the commit its writer saw: heartbeats, the settle (the
result is on the ref before anything else is written), and a reaper's release. See `records`.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from jit_dispatch.domain.delivery import Delivery
from jit_dispatch.domain.issue import CTX_CLAIMED_AT, CTX_HEARTBEAT_AT, Issue, parse_timestamp
from jit_dispatch.domain.selection import Filters
from jit_dispatch.domain.staleness import LockWatch, lock_is_dead
from jit_dispatch.domain.transitions import format_timestamp
from jit_dispatch.domain.values import Outcome, State
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.base import GateRecord, Liveness, Settlement, Snapshot
from jit_dispatch.trackers.github import review, rules
from jit_dispatch.trackers.github.api import FAILURES
from jit_dispatch.trackers.github.locks import ClaimRefs
from jit_dispatch.trackers.github.records import CLAIM, DELIVER, DONE, RELEASE, LockRecord, ref_name
from jit_dispatch.trackers.github.tracker import FINISHED_LATER, GitHubTracker, _Held, refuse_uncounted

EDIT_MARGIN = 1.5  # seconds before the fence by which a beat's claim comment edit gives up (1 s timeouts: 0.5 s spare)


class RefLockedTracker(GitHubTracker):
    def __init__(self, *args: Any, heartbeat: float = 0.0, check: bool = True, **kwargs: Any) -> None:
        """`heartbeat`: the interval announced in each claim; `check`: fail now without `contents: write`."""
        super().__init__(*args, **kwargs)
        self.refs = ClaimRefs(self.api, self.settings.lock_prefix)
        self.heartbeat_seconds = heartbeat or 0.0
        self._watch = LockWatch()
        self._locks: dict[int, str] | None = None  # the last listing of lock refs (ours), None: not read yet
        self._locks_read = -1  # `api.writes` when they were listed: reused for claims while nothing was written
        self._foreign: dict[int, tuple[str, str]] = {}  # other refs under the lock prefix: number → (sha, why)
        if check:
            self.refs.check_access()

    def _locked(self) -> frozenset[str]:
        return frozenset(rules.issue_id(n) for n in self._locks or {})

    def _read_locks(self) -> dict[int, str]:
        """List the lock refs (a hint: lists lag); refs under the prefix that are no lock of ours go to
        `_foreign` — they block their issue, and only `reap --foreign` (or a person) removes them."""
        listed = self.refs.list()
        self._locks_read = self.api.writes
        self._foreign = {n: (sha, why) for n, sha in listed.items() if (why := self.refs.foreign(n, sha))}
        self._locks = {n: sha for n, sha in listed.items() if n not in self._foreign}
        return self._locks

    def _held_back(self) -> dict[str, str]:
        return {rules.issue_id(n): _foreign_text(self.refs.prefix, n, why) for n, (_, why) in self._foreign.items()}

    def remove_foreign(self) -> list[str]:
        """`reap --foreign`: delete refs under the lock prefix that are no lock of ours (if unchanged)."""
        notes = []
        with self.api.doing(f"remove foreign refs in {self.settings.repo}"):
            self._read_locks()
            for number, (sha, why) in sorted(self._foreign.items()):
                self.refs.delete(number, sha)
                notes.append(f"removed {ref_name(self.refs.prefix, number)}: it {why}")
        return notes

    # ------------------------------------------------------------------ claim
    def claim(self, issue_id: str, assignee: str, run: str, filters: Filters) -> Issue | None:
        """Create the lock ref (the compare-and-set), re-read the issue, then label and comment."""
        number = self._number(issue_id)
        with self.api.doing(f"claim {issue_id}"):
            if self.refs.get(number) is not None:  # taken since the listing: one read, not five (a stampede)
                return None
            if self._dispatchable(number, filters) is None:
                return None
            markers = self._markers(number)
            nonce = secrets.token_hex(8)
            record = LockRecord(CLAIM, number, nonce, assignee, run, rules.failed_attempts(markers) + 1)
            record = replace(record, heartbeat=self.heartbeat_seconds)
            sha = self.refs.commit(record)
            sent = time.monotonic()
            if not self.refs.create(number, sha):
                return None  # another runner holds it
            took = time.monotonic() - sent
            labelled = False
            try:
                found = self._dispatchable(number, filters)  # re-check after winning: closed, taken back, parked?
                if found is None:
                    self._give_back(number, sha, record, labelled)
                    return None
                raw, current = found
                self._add_label(number, rules.CLAIMED_LABEL)
                labelled = True
                data = {
                    "nonce": nonce,
                    "agent": assignee,
                    "run": run,
                    "at": format_timestamp(),
                    "attempt": record.attempt,
                }
                text = rules.render_marker("claim", data) + "\n" + rules.claim_text(assignee, run)
                posted = self._post_comment(number, text, "claim", nonce)
            except FAILURES:
                self._give_back(number, sha, record, labelled)
                raise
        self._held[issue_id] = _Held(
            nonce, posted, assignee, run, lock=sha, record=record, claim_data=data, sent=sent, took=took
        )
        claimed = dict(raw, labels=[*raw.get("labels", []), {"name": rules.CLAIMED_LABEL}])
        return rules.to_issue(
            claimed, self.settings, [*markers, rules.Marker("claim", posted, data)], current.dependencies
        )

    def _give_back(self, number: int, sha: str, record: LockRecord, labelled: bool) -> None:
        """A claim that failed half-way or was no longer wanted. The lock first says "never started" (so
        the next `once` finishes the give-back if a rate limit stops it here), then comment, label, lock.
        Best effort, with a settle's patience for limits."""
        with contextlib.suppress(*FAILURES), self.api.persistent():
            freed = self._unstart(number, sha, record)
            if freed is None:
                return
            if (mine := rules.find_marker(self._markers(number), "claim", record.nonce)) is not None:
                self._delete_comment(mine.comment_id)
            if labelled:
                self._remove_label(number, rules.CLAIMED_LABEL)
            self.refs.delete(number, freed)

    def _unstart(self, number: int, seen: str, record: LockRecord) -> str | None:
        """Move the lock (if still at `seen`) to a release that is no attempt; its commit, or None: lost."""
        sha = self.refs.commit(replace(record.settled(RELEASE, "the claim never started"), started=False), seen)
        return sha if self.refs.move(number, sha) else None

    def heartbeat(
        self, issue_id: str, assignee: str, *, interval: float | None = None, deadline: float | None = None
    ) -> bool:
        """Re-point the lock at a child commit (a fast-forward: fails once the lock is not ours), announcing
        `interval`. Through the heartbeat's own connection, every request (connect, read, retries) ends by
        `deadline`: past it the runner has fenced itself, and an answer would be useless."""
        held = self._held.get(issue_id)
        if held is None:
            return False
        api = self._beat_api()
        refs = self.refs.over(api)
        with held.mutex:
            if held.settling:
                return False
            record = held.record.beaten()
            record = replace(record, heartbeat=interval) if interval else record
            with api.doing(f"heartbeat {issue_id}"), api.until(deadline):
                sha = refs.commit(record, held.lock)
                if not refs.move(self._number(issue_id), sha):
                    return False
            held.lock, held.record = sha, record
        # The claim comment's `beat` is for people (status); the move was the sign of life. The edit ends
        # well before the fence (whole-second timeouts), or is left to a later beat: never holds this one.
        edit_by = deadline - EDIT_MARGIN if deadline is not None else None
        with contextlib.suppress(TrackerError), api.doing(f"heartbeat {issue_id}"), api.until(edit_by):
            self._edit_claim(api, held, held.claim_data)
        return True

    # ------------------------------------------------------------------ settle
    def complete(self, issue_id: str, assignee: str, *, gate_runs: Sequence[GateRecord] = ()) -> Settlement:
        """No gate registry on GitHub Issues: `gate_runs` is always empty."""
        if issue_id not in self._held:
            return super().complete(issue_id, assignee)
        return self._settle_held(issue_id, DONE, "", 0)

    def hold_for_merge(
        self, issue_id: str, assignee: str, delivery: Delivery, *, gate_runs: Sequence[GateRecord] = ()
    ) -> Settlement:
        """The `deliver` record on the lock first, as every settle; then marker, labels, the lock deleted."""
        if issue_id not in self._held:
            return super().hold_for_merge(issue_id, assignee, delivery)
        return self._settle_held(issue_id, DELIVER, "", 0, review.delivery_data(delivery))

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
        """The runner's own release; or a person's (`release`) or the reaper's (`seen`), fenced on the lock."""
        refuse_uncounted(count_attempt)
        if issue_id in self._held:
            return self._settle_held(issue_id, RELEASE, reason, max_attempts)
        number = self._number(issue_id)
        with self.api.doing(f"release {issue_id}"):
            sha = self.refs.get(number)
            record = self.refs.record(sha) if sha else None
        if sha is None or record is None:
            return super().release(issue_id, assignee, reason, max_attempts)  # no lock: a claim by comment only
        if record.kind != CLAIM:
            return self._settled(record, self._finish(number, record, sha))
        if seen is not None and (sha := self._watch_until_dead(number, sha, record)) is None:
            return Settlement(Outcome.LOST, record.attempt - 1)
        if seen is not None:
            with self.api.doing(f"release {issue_id}"):
                started = rules.find_marker(self._markers(number), "claim", record.nonce) is not None
            if not started:
                return self._free(number, sha, record)
        return self._fence(number, sha, record.settled(RELEASE, reason, record.attempt >= max_attempts, max_attempts))

    def _free(self, number: int, seen: str, record: LockRecord) -> Settlement:
        """A dead lock whose claim comment was never posted: its command never ran, so no attempt is
        counted — the lock (fenced first) and the label are simply given back."""
        with self.api.doing(f"free the lock of #{number}"):
            if (sha := self._unstart(number, seen, record)) is None:
                return Settlement(Outcome.LOST, record.attempt - 1)
            self._remove_label(number, rules.CLAIMED_LABEL)
            self.refs.delete(number, sha)
        return Settlement(Outcome.RELEASED, record.attempt - 1)

    def _settle_held(
        self, issue_id: str, kind: str, reason: str, max_attempts: int, delivery: dict[str, Any] | None = None
    ) -> Settlement:
        held = self._held[issue_id]
        with held.mutex:  # a heartbeat in flight lands first; none starts after
            held.settling = True
            parked = kind == RELEASE and held.record.attempt >= max_attempts
            record = replace(held.record.settled(kind, reason, parked, max_attempts), delivery=delivery)
            settlement = self._fence(self._number(issue_id), held.lock, record)
        return settlement

    def _fence(self, number: int, seen: str, record: LockRecord) -> Settlement:
        """Write the result onto the lock (only if it still points at `seen`), then finish the settle."""
        with self.api.doing(f"settle #{number}"), self.api.persistent():
            sha = self.refs.commit(record, seen)
            if not self.refs.move(number, sha):
                return Settlement(Outcome.LOST, record.attempt - 1)
        return self._settled(record, self._finish(number, record, sha))

    @staticmethod
    def _settled(record: LockRecord, warnings: tuple[str, ...]) -> Settlement:
        if record.kind in (DONE, DELIVER):
            outcome = Outcome.DONE if record.kind == DONE else Outcome.IN_REVIEW
            return Settlement(outcome, record.attempt - 1, warnings=warnings)
        outcome = Outcome.PARKED if record.parked else Outcome.RELEASED
        return Settlement(outcome, record.attempt, warnings=warnings)

    def _finish(self, number: int, record: LockRecord, sha: str) -> tuple[str, ...]:
        """Everything of a settle after its result is on the lock; idempotent, so anyone may finish it."""
        data: dict[str, Any] = {
            "nonce": record.nonce,
            "agent": record.agent,
            "run": record.run,
            "attempt": record.attempt,
        }
        if record.kind == RELEASE:
            data |= {"reason": record.reason, "parked": record.parked}
        if record.kind == DELIVER:
            data |= dict(record.delivery or {})
        try:
            with self.api.doing(f"finish the settle of #{number}"), self.api.persistent():
                now, gone = self._current(number)
                if gone is not None:  # nothing to finish: the lock goes, once
                    self.refs.delete(number, sha)
                    return (f"#{number} {gone}: its {record.kind} is recorded nowhere else; its lock ref was removed",)
                if record.started:  # a claim that never started gets no marker: it is no attempt
                    self._remember(
                        rules.issue_id(number), *self._settle_comment(number, record.kind, data, record.max_attempts)
                    )
                self._close_and_unlabel(number, record.kind, record.parked, now)
                self.refs.delete(number, sha)
        except TrackerError as exc:
            return (f"{exc}; the result is recorded, and {FINISHED_LATER}",)
        return ()

    # ------------------------------------------------------------------ repair and reap
    def repair(self) -> list[str]:
        """Finish settles recorded on a lock; drop `dispatch:claimed` that no lock and no claim backs."""
        notes: list[str] = []
        with self.api.doing(f"repair settles in {self.settings.repo}"), self.api.persistent():
            locks = self._read_locks()
            for number, sha in sorted(locks.items()):
                record = self.refs.record(sha)
                if record is None or record.kind == CLAIM or (taken := self._take_over(number, sha, record)) is None:
                    continue
                notes += [f"finished the {record.kind} settle of #{number} left half-done"]
                notes += self._finish(number, record, taken)
            for raw in self._claimed_issues(keep=True):
                number = raw["number"]
                if number in locks or number in self._foreign or self.refs.get(number) is not None:
                    continue
                markers = self._markers(number)
                if rules.live_claims(markers):
                    continue  # a claim by comment only: the reaper's, by its timestamps
                last = rules.last_settle(markers)
                notes.append(f"removed {rules.CLAIMED_LABEL} from #{number}: no lock and no live claim")
                notes += self.finish_step(number, last.kind if last else "", bool(last and last.data.get("parked")))
        return notes

    def _take_over(self, number: int, listed: str, record: LockRecord) -> str | None:
        """A repair finishes a settle only after moving its lock on (a fast-forward from what the list
        showed): the lock must still be that result (lists lag), and of repairs racing, one wins."""
        if self.refs.get(number) != listed:
            return None  # finished, or claimed again, since the list was read
        sha = self.refs.commit(record, listed)
        return sha if self.refs.move(number, sha) else None

    def snapshot(self, full_states: Iterable[str] = ("ready",), *, leads: bool = False) -> Snapshot:
        """For the reaper and status, also issues under a claim lock but not (yet) labelled claimed."""
        snapshot = super().snapshot(full_states, leads=leads)
        with self.api.doing(f"read the claim locks of {self.settings.repo}"):
            fresh, self._locks_read = self._locks_read == self.api.writes, -1  # the repair's listing, this run's
            if self._locks is None or (State.IN_PROGRESS in full_states and not fresh):
                self._read_locks()
            snapshot.locked = self._locked()
            snapshot.held_back = self._held_back()
            snapshot.warnings += [f"{issue}: {why}" for issue, why in snapshot.held_back.items()]
        if State.IN_PROGRESS not in full_states:
            return snapshot
        assert self._locks is not None
        snapshot.now = self.api.github_now()  # lock commit dates are GitHub's: ages on GitHub's clock
        with self.api.doing(f"read the claim locks of {self.settings.repo}"):
            claimed = {i.id: n for n, i in enumerate(snapshot.issues) if i.state == State.IN_PROGRESS}
            for number, sha in sorted(self._locks.items()):
                self._watch.see(str(number), sha, time.monotonic())  # the reaper's first sighting
                record = self.refs.record(sha)
                if record is not None and record.kind != CLAIM:
                    unfinished = f"#{number}: its {record.kind} settle is unfinished"
                    snapshot.warnings.append(f"{unfinished}; {FINISHED_LATER}")
                if record is None or record.kind != CLAIM:
                    continue
                beat = self.refs.dates.get(sha) or format_timestamp()  # GitHub's clock, not the runner's
                if (index := claimed.get(rules.issue_id(number))) is not None:
                    snapshot.issues[index] = _beaten(snapshot.issues[index], beat)
                    continue
                if (gone := self._gone(number)) is not None:
                    snapshot.warnings.append(
                        f"#{number} {gone} while its claim lock stands; its runner's settle removes it"
                    )
                    continue
                issue = rules.to_issue(self._get(number), self.settings)
                issue = replace(issue, state=State.IN_PROGRESS, assignee=record.agent)
                snapshot.issues.append(_beaten(issue, beat))
                snapshot.states[issue.id] = State.IN_PROGRESS
        return snapshot

    def _watch_until_dead(self, number: int, sha: str, record: LockRecord) -> str | None:
        """The clock-free rule: the lock is dead once this process has seen it unchanged for two of its
        announced heartbeat intervals (domain/staleness.py). None: it moved (alive, or settled)."""
        if record.heartbeat <= 0:
            return None  # a claim that announced no heartbeat is never judged dead by watching
        while True:
            unchanged = self._watch.see(str(number), sha, time.monotonic())
            if lock_is_dead(unchanged_for=unchanged, interval=record.heartbeat, age=math.inf, older_than=0):
                return sha
            time.sleep(max(0.05, min(record.heartbeat / 2, 2 * record.heartbeat - unchanged)))
            with self.api.doing(f"watch the lock of #{number}"):
                if self.refs.get(number) != sha:
                    return None


def _beaten(issue: Issue, beat: str) -> Issue:
    """The lock's last move as the heartbeat; a claim time ahead of it came from a runner's fast clock."""
    claimed = issue.context.get(CTX_CLAIMED_AT) or beat
    try:
        claimed = min(claimed, beat, key=parse_timestamp)
    except ValueError:
        claimed = beat
    return replace(issue, context={**issue.context, CTX_CLAIMED_AT: claimed, CTX_HEARTBEAT_AT: beat})


def _foreign_text(prefix: str, number: int, why: str) -> str:
    ref = ref_name(prefix, number)
    return (
        f"{ref} {why}: no runner can claim #{number} while it exists; remove it with "
        f"`jit-dispatch reap --foreign` (or `git push origin :{ref}`), or choose another --lock-prefix"
    )
