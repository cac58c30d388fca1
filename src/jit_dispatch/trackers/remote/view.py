"""The view of a remote-mode state branch and the folds pushed from it (docs/remote-mode.md#invariants).

A listing of the remote becomes the scratch store's `.jit/`: the branch tip, every pending result
applied in order (issue, attempt), the claims whose lock the tip lacks. A fold commits that view
(plus what a caller changed) and pushes it with `--atomic` together with the deletion, each
leased, of the result refs it carried; a lost race is another try on a fresh view. The tracker
(tracker.py) decides what to claim and settle; this module is what every reader and writer of
the branch shares.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TypeVar

from jit_dispatch.domain.issue import CTX_HEARTBEAT_AT, Issue
from jit_dispatch.domain.selection import Filters
from jit_dispatch.domain.values import Outcome, State
from jit_dispatch.errors import SettlementPending, TrackerError
from jit_dispatch.trackers.remote import carried
from jit_dispatch.trackers.remote.git import GitError
from jit_dispatch.trackers.remote.locks import LockInfo, parse_lock
from jit_dispatch.trackers.remote.plumbing import Listing, Plumbing, RemoteSettings
from jit_dispatch.trackers.remote.results import fold_message, fold_order, parse_result
from jit_dispatch.trackers.remote.retry import AGAIN, retrying

T = TypeVar("T")
_VERBS = {Outcome.RELEASED: "release", Outcome.PARKED: "park", Outcome.LOST: "drop"}
OwnLocks = dict[str, tuple[str, LockInfo]]  # issue id → (sha, content) of a lock this process holds


class _Vanished(Exception):
    """A ref listed a moment ago is gone (folded or settled): list again."""


class View:
    """The scratch store as the view of the remote, and the fold loop on top of it."""

    def __init__(self, plumbing: Plumbing, settings: RemoteSettings, own: OwnLocks, notes: list[str]) -> None:
        self.plumbing = plumbing
        self.store = plumbing.store
        self.settings = settings
        self.own = own  # the tracker's: a lock of ours shows as our claim, not as another runner's
        self.notes = notes  # the tracker's: what the run's summary warns about
        self.busy = threading.RLock()  # the scratch store: one view or fold at a time
        self.items: list[tuple[str, str, str]] = []  # (verb, issue id, agent) the scratch store holds
        self.high: str | None = None  # the newest tip seen: every later tip's events must extend its own
        self.restored: list[str] = []  # what a rewound branch lost and this runner put back, for the report
        self.pending: list[str] = []  # result refs this run left for a later fold
        self.commits: list[str] = []
        self.branch_attempts = 0

    def lock_ref(self, issue_id: str) -> str:
        return self.settings.lock_prefix + issue_id

    # ------------------------------------------------------------------ reading
    def read(
        self, skip: str | None = None, *, exact: bool = False, guard: bool = False, only: str | None = None
    ) -> Listing:
        """List the remote and make the scratch store the view of it (callers commit or discard).

        `exact`: the branch is read again, alone, after the listing. `ls-remote` is no snapshot: it
        reads `refs/heads/…` before `refs/jit-dispatch/…`, so a fold landing in between shows the old
        tip with the folded results already gone, a finished issue looking ready. Read in the other
        order, every result is either listed or on the tip (results only leave the remote by a fold
        that moves the tip); one listed and folded meanwhile replays as `lost`, changing nothing.
        `guard` (views a fold is built on): a tip that lost folded results gets them back. `only`: the
        view of one issue (its pending results and lock), for a settle that decides nothing else:
        the fold that writes the result re-reads everything, and a view applying every result that
        others left pending would cost each settle of a wave in proportion to the wave."""
        for _ in range(5):
            listing = self.plumbing.list_remote()
            if exact:
                listing.tip = self.plumbing.list_remote(locks=False).tip
            self.plumbing.prefetch(listing)
            try:
                self._apply(listing, skip, guard, only)
                return listing
            except _Vanished:
                self.plumbing.discard_changes()
        raise GitError("the remote's pending refs kept changing while being read", transient=True)

    def _apply(self, listing: Listing, skip: str | None, guard: bool = False, only: str | None = None) -> None:
        """Tip + pending results in order (issue, attempt) + claims whose lock the branch lacks
        (except `skip`'s: the claim being checked)."""
        self.plumbing.sync_to(listing.tip)
        self.store.changed.clear()
        if guard:
            self._keep_history(listing.tip)
        self.items = []
        results = listing.results if only is None else self._concerning(only, listing.results)
        for ref, message in self._in_dependency_order(self._messages(results)):
            issue_id = fold_order(ref)[0]
            result = parse_result(message)
            writes = carried.from_tree(self.plumbing.tree_files(listing.results[ref])) if result.carries else {}
            before = carried.apply(self.store, issue_id, writes)  # first, as in local mode: the settle wins
            settlement = result.apply(self.store, issue_id)
            if settlement.outcome == Outcome.LOST:
                carried.undo(self.store, before)  # a fenced-out result carries nothing either
            verb = _VERBS.get(settlement.outcome, str(settlement.outcome))
            self.items.append((verb, issue_id, result.claim.agent or "?"))
        locks = listing.locks if only is None else {i: sha for i, sha in listing.locks.items() if i == only}
        ready = {i: sha for i, sha in locks.items() if i != skip and self.store.state_of(i) == State.READY}
        own = {i: self.own[i][1] for i in ready if i in self.own and self.own[i][0] == ready[i]}
        others = {self.lock_ref(i): sha for i, sha in ready.items() if i not in own}
        infos = {ref[len(self.settings.lock_prefix) :]: parse_lock(m) for ref, m in self._messages(others).items()}
        for issue_id, info in {**infos, **own}.items():
            if info.agent and info.at:  # a lock of an older kind without them only holds the issue
                self.store.claim(issue_id, info.agent, info.run or "", Filters(issue_id=issue_id), now=info.at)
                self.items.append(("claim", issue_id, info.agent))

    def _concerning(self, issue_id: str, results: dict[str, str]) -> dict[str, str]:
        """The pending results a view of `issue_id` needs: its own and its dependencies' (a dependent
        claimed on a pending `done` is ready only once that `done` is applied), transitively."""
        pending = {fold_order(ref)[0] for ref in results}
        needed, todo = {issue_id}, [issue_id]
        while todo:
            issue = self.store.read_issue(todo.pop())
            for dep in issue.dependencies if issue else ():
                if dep not in needed and dep in pending:
                    needed.add(dep)
                    todo.append(dep)
        return {ref: sha for ref, sha in results.items() if fold_order(ref)[0] in needed}

    def _in_dependency_order(self, messages: dict[str, str]) -> Iterator[tuple[str, str]]:
        """Results by issue, then attempt, except that an issue still in `backlog` waits until the
        other issues' results are applied (lazily: each pick sees what the caller applied so far). A
        dependent's result replayed before its dependency's `done` promotes it would be dropped as
        lost, and the issue run again."""
        groups: dict[str, list[tuple[str, str]]] = {}
        for ref, message in sorted(messages.items(), key=lambda item: fold_order(item[0])):
            groups.setdefault(fold_order(ref)[0], []).append((ref, message))
        while groups:
            pick = next((i for i in groups if self.store.state_of(i) != State.BACKLOG), next(iter(groups)))
            yield from groups.pop(pick)

    def _keep_history(self, tip: str) -> None:
        """A tip that lost folded results gets them back (`Plumbing.recover`), reported once."""
        high, self.high = self.high, tip
        if high is None or high == tip or (lost := self.plumbing.recover(high)) is None:
            return
        note, restored = lost
        if restored:
            self.high = high  # until a fold carrying the restored files lands
        if note not in self.restored:
            self.restored.append(note)
            self.notes.append(note)

    def _messages(self, refs: dict[str, str]) -> dict[str, str]:
        messages = self.plumbing.messages(refs)
        if messages is None:
            raise _Vanished
        return messages

    def read_locks(self, locks: dict[str, str]) -> dict[str, LockInfo]:
        """What each listed lock says; a lock deleted since the listing is left out."""
        for _ in range(3):
            messages = self.plumbing.messages({self.lock_ref(i): sha for i, sha in locks.items()})
            if messages is not None:
                return {ref[len(self.settings.lock_prefix) :]: parse_lock(m) for ref, m in messages.items()}
            current = self.plumbing.list_remote().locks  # one vanished (its runner settled): read the rest
            locks = {i: sha for i, sha in locks.items() if current.get(i) == sha}
        return {}

    def beaten(self, issues: list[Issue], locks: dict[str, str]) -> list[Issue]:
        """Claims as alive as their locks say: the lock's last beat as `dispatch.heartbeat_at` (in the
        context only: the branch's record, which a reaper's `seen` compares, is left as it is). So
        `status` and `reap` judge silence by the lock's movement, not by the claim's age."""
        held = {i.id: locks[i.id] for i in issues if i.state == State.IN_PROGRESS and i.id in locks}
        beats = {i: info.beat_at for i, info in self.read_locks(held).items() if info.beat_at} if held else {}
        return [
            replace(issue, context={**issue.context, CTX_HEARTBEAT_AT: beats[issue.id]}) if issue.id in beats else issue
            for issue in issues
        ]

    # ------------------------------------------------------------------ folding
    def push_fold(self, listing: Listing) -> bool:
        """Commit the view (plus what the caller changed) and push it with the deletion of the
        result refs it folded, each leased on its listed value; False when the race was lost."""
        updates = [("", ref) for ref in listing.results]
        if self.store.changed:  # else only results that change nothing (refused on replay) are cleared
            commit = self.plumbing.commit(fold_message(self.items, self.settings.skip_ci))
            updates.insert(0, (commit, f"refs/heads/{self.settings.branch}"))
        if not updates:
            return True
        self.branch_attempts += 1
        if not self.plumbing.push(*updates, leases=dict(listing.results)):
            return False
        if self.store.changed:
            self.plumbing.tip = self.high = updates[0][0]
            self.store.changed.clear()
            self.commits.append(updates[0][0])
        return True

    def fold(self, ref: str | None, deadline: float) -> None:
        """Fold until `ref` (else every pending result) is on the branch, by us or another runner."""

        def change(listing: Listing) -> bool | None:
            return True if (ref not in listing.results if ref else not listing.results) else None

        try:
            self.folding(f"folding {ref or 'pending results'}", change, deadline)
        except TrackerError as exc:
            if ref is None:
                raise
            raise SettlementPending(f"the result is accepted but not yet on the branch: it stays pending as {ref} "
                               f"and the next run folds it ({exc})") from None  # fmt: skip

    def fold_if_last(self, ref: str, deadline: float) -> None:
        """Fold only as the last runner holding a claim: the result ref is durable already and the
        view counts it as settled for everyone. While another runner holds a lock, that runner
        settles after us and finds our result pending, so this one leaves without paying for the
        fleet's fold contention; the last to settle folds everything (as `--wait-for-fold` does)
        (docs/remote-mode.md#leaving-the-fold-to-the-next-runner)."""
        try:
            listing = self.plumbing.list_remote()
        except GitError as exc:
            if not exc.transient:
                raise SettlementPending(f"the result is accepted but not yet on the branch: it stays pending as "
                                        f"{ref} ({exc})") from None  # fmt: skip
            self.pending.append(ref)
            return
        if ref not in listing.results:
            return  # folded meanwhile
        if listing.locks:
            self.pending.append(ref)
            return
        self.fold(ref, deadline)

    def folding(self, what: str, change: Callable[[Listing], bool | None], deadline: float | None = None) -> bool:
        """View the remote, let `change` edit the store (or return the answer: nothing to fold), then
        push the fold; again after a lost race (`retrying`)."""

        def step(attempt: int) -> bool | object:
            with self.busy:
                try:
                    listing = self.read(guard=True)
                    if (answer := change(listing)) is not None:
                        return answer
                    return True if self.push_fold(listing) else AGAIN
                finally:
                    self.plumbing.discard_changes()

        return self.retrying(what, step, deadline)

    def retrying(self, what: str, step: Callable[[int], T | object], deadline: float | None = None) -> T:
        """`retry.retrying` within the push budget (or `deadline`), shortened by `hurry`."""
        budget = deadline or time.monotonic() + self.settings.push_budget
        return retrying(what, step, lambda: min(budget, self.plumbing.git.deadline or budget))
