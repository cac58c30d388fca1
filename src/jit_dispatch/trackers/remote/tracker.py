"""Remote mode (docs/remote-mode.md): per-issue refs are the log, the state branch is a
folded view of it, and runners in separate clones agree whatever their clocks.

* **The lock is the claim**: `refs/jit-dispatch/claims/<issue-id>`, created only if it does not
  exist (the server creates a ref atomically: one runner per issue). Its commit names agent, run,
  attempt, claim time and the heartbeat interval the holder promises (`locks.LockInfo`).
  Heartbeats re-point the holder's own lock (lease on its previous value), never the branch.
* **Results are refs**: settling creates `refs/jit-dispatch/results/<issue-id>/<attempt>`
  (`results.ResultInfo`) in one atomic push with the deletion of the lock, leased on the lock's
  value: a runner whose lock was reaped or released meanwhile has its late result refused
  (`lost`). The lock is the fencing token.
* **The branch is a fold**: any runner applies every pending result (and every claim the branch
  lacks) to the tip in one commit, pushed with `--atomic` together with the deletion — leased —
  of the result refs it folded. Losing that race is fine: the winner carried our result, or our
  next try carries theirs. A settled runner leaves the fold to any runner still holding a claim;
  the last one folds until its result is on the branch.
* **The view**: `ready`, `status`, `once` and `reap` read the branch plus pending refs.
* **Failures**: whatever another try may fix is retried with jittered backoff within
  `push_budget` (shortened by `hurry`); a permanent refusal fails at once. Right after taking its
  lock, a runner tries one fold carrying its claim, so a branch that refuses it (protection,
  permissions) fails before the command runs.

The view and the fold loop are `view.View`; the git side is `plumbing.Plumbing`; watching locks
die is `liveness.py`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from jit_dispatch.domain.delivery import Delivery
from jit_dispatch.domain.issue import CTX_CLAIMED_AT, CTX_RUN, Issue
from jit_dispatch.domain.selection import Filters
from jit_dispatch.domain.staleness import Claim
from jit_dispatch.domain.values import Outcome, State
from jit_dispatch.trackers.base import ClaimTiming, GateRecord, Liveness, Settlement, Snapshot, TrackerDefaults
from jit_dispatch.trackers.remote import carried, liveness
from jit_dispatch.trackers.remote.clone_leases import CloneLeases
from jit_dispatch.trackers.remote.git import Git, GitError
from jit_dispatch.trackers.remote.locks import LockInfo
from jit_dispatch.trackers.remote.plumbing import Listing, Plumbing, RemoteSettings
from jit_dispatch.trackers.remote.results import COMPLETE, HOLD, RELEASE, ResultInfo
from jit_dispatch.trackers.remote.retry import AGAIN
from jit_dispatch.trackers.remote.view import View
from jit_dispatch.trackers.remote.workspace import Materialised

__all__ = ["RemoteJitTracker", "RemoteSettings"]


class RemoteJitTracker(TrackerDefaults):
    """The jit store of `<remote>/<branch>:<jit_path>` plus its pending refs, as one `Tracker`."""

    def __init__(self, git: Git, settings: RemoteSettings, scratch: Path) -> None:
        self.git = git
        self.settings = settings
        self.plumbing = Plumbing(git, settings, scratch)
        self.store = self.plumbing.store
        # the clone's own jit lease of each claim: for the agent's jit calls; the lock ref is the claim
        self.clone_leases = CloneLeases(git.repo / settings.jit_path, scratch / "identity", settings.heartbeat_seconds)
        self.location = f"{self.plumbing.remote_name}/{settings.branch}:{settings.jit_path}"
        self._own: dict[str, tuple[str, LockInfo]] = {}  # issue id → (sha, content) of the lock we hold
        self._leases: dict[str, str] = {}  # issue id → lock value last listed or watched (others' locks)
        self._seen: dict[str, Issue] = {}  # the last snapshot's issues
        self._waiting: list[tuple[str, Delivery]] | None = None  # the last snapshot's deliveries waiting to merge
        self._lock_mutex = threading.RLock()  # our lock refs: a heartbeat never moves a lease being pushed
        self._taken: set[str] = set()  # issues other runners locked since the snapshot
        self._copies: dict[str, Materialised] = {}  # issue id → the state put into the workspace for its command
        self._timing: dict[str, ClaimTiming] = {}  # issue id → when our lock push was sent, how long it took
        self.lock_attempts = 0
        self.notes: list[str] = []
        self.view = View(self.plumbing, settings, self._own, self.notes)
        self._busy = self.view.busy

    # ------------------------------------------------------------------ interface
    def stats(self) -> dict[str, object]:
        return {
            "sync_attempts": self.lock_attempts,
            "branch_push_attempts": self.view.branch_attempts,
            "commits": list(self.view.commits),
            "notes": list(self.notes),
            "pending_results": list(self.view.pending),
        }

    def hurry(self, seconds: float) -> None:
        self.git.deadline = self.plumbing.git.deadline = time.monotonic() + seconds

    def snapshot(self, full_states: Iterable[str] = ("ready",), *, leads: bool = False) -> Snapshot:
        """The view: the branch, pending results applied, claims the branch lacks folded in. Issues
        come in full (`leads` is for the local store's hot path)."""
        states = tuple(full_states)
        with self._busy:
            listing = self.view.read()
            snapshot = self.store.snapshot(states)
            self._waiting = self.store.awaiting_merge()  # the same view: no second listing to look for merges
            self.plumbing.discard_changes()
            if State.IN_PROGRESS in states:
                snapshot.issues = self.view.beaten(snapshot.issues, listing.locks)
        snapshot.locked = frozenset(listing.locks)  # the lock is the claim: whatever its age, whoever's clock
        self._leases = dict(listing.locks)
        self._seen = {issue.id: issue for issue in snapshot.issues}
        self._taken = set()
        return snapshot

    def claim(self, issue_id: str, assignee: str, run: str, filters: Filters) -> Issue | None:
        """Take the issue's lock ref (the claim); then one try at folding it into the branch."""
        if issue_id in self._taken:
            return None
        seen = self._seen.get(issue_id)
        info = LockInfo.new(assignee, run, (seen.failed_attempts if seen else 0) + 1, self.settings.heartbeat_seconds)
        sha = self.plumbing.note_commit(info.message(issue_id))
        sent = time.monotonic()  # the self-fence counts from here: the lock may land any moment now
        if not self._take_lock(issue_id, sha):
            # Lost a race: others are claiming right now. One listing shows which of our next
            # candidates they hold already; finding that out by pushing costs a push for each.
            self._taken = set(self.plumbing.list_remote().locks)
            return None
        with self._lock_mutex:
            self._own[issue_id] = (sha, info)
        self._timing[issue_id] = ClaimTiming(sent, time.monotonic() - sent)
        try:
            with self._busy:
                # Another runner may have claimed and settled it since our listing: a lock that can
                # be created again says nothing about the issue. Look at the view once more.
                listing = self.view.read(skip=issue_id, exact=True, guard=True)
                folded = self.store.read_issue(issue_id)
                if folded is not None and folded.context.get(CTX_CLAIMED_AT) == info.at and folded.assignee == assignee:
                    return folded  # another runner's fold carried our claim already
                current = self.store.claimable(issue_id, filters)
                if current is None or current.failed_attempts + 1 != info.attempt:
                    self._drop_lock(issue_id)
                    return None
                if (holder := self.clone_leases.acquire(issue_id, assignee)) is not None:
                    self.notes.append(f"{issue_id[:8]} not claimed: this clone's jit lease is {holder}")
                    self._drop_lock(issue_id)
                    return None
                claimed = self.store.claim(issue_id, assignee, run, Filters(issue_id=issue_id), now=info.at)
                self.view.items.append(("claim", issue_id, assignee))
                try:  # one try; a branch that refuses us for good fails here, before the command runs
                    self.view.push_fold(listing)
                except GitError as exc:
                    if not exc.transient:
                        raise
        except BaseException:
            self._drop_lock(issue_id)
            raise
        finally:
            with self._busy:
                self.plumbing.discard_changes()
        return claimed

    def complete(self, issue_id: str, assignee: str, *, gate_runs: Sequence[GateRecord] = ()) -> Settlement:
        return self._settle(issue_id, assignee, COMPLETE, gate_runs=tuple(gate_runs))

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
        fields = {"reason": reason, "max_attempts": max_attempts, "seen": seen, "counted": count_attempt}
        return self._settle(issue_id, assignee, RELEASE, gate_runs=tuple(gate_runs), **fields)

    # ------------------------------------------------------------------ delivery (docs/delivery.md)
    def hold_for_merge(
        self, issue_id: str, assignee: str, delivery: Delivery, *, gate_runs: Sequence[GateRecord] = ()
    ) -> Settlement:
        """Settled like `complete`, as a `hold` result that carries the delivery."""
        return self._settle(issue_id, assignee, HOLD, gate_runs=tuple(gate_runs), delivery=delivery)

    def awaiting_merge(self) -> list[tuple[str, Delivery]]:
        """In the view (the branch plus pending results): the last snapshot's, else a fresh view."""
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            return waiting
        with self._busy:
            try:
                self.view.read()
                self.store.snapshot(full_states=())
                return self.store.awaiting_merge()
            finally:
                self.plumbing.discard_changes()

    def finish_merged(self, issue_id: str, note: str) -> Settlement:
        return self._waiting_change(
            f"finishing {issue_id[:8]} ({note})", "merged", issue_id, lambda: self.store.finish_merged(issue_id, note)
        )

    def return_for_changes(self, issue_id: str, reason: str, max_review_rounds: int) -> Settlement:
        return self._waiting_change(
            f"returning {issue_id[:8]}",
            "return",
            issue_id,
            lambda: self.store.return_for_changes(issue_id, reason, max_review_rounds),
        )

    def release_unmerged(self, issue_id: str, reason: str, max_attempts: int) -> Settlement:
        return self._waiting_change(
            f"releasing {issue_id[:8]}",
            "release",
            issue_id,
            lambda: self.store.release_unmerged(issue_id, reason, max_attempts),
        )

    def _waiting_change(self, what: str, verb: str, issue_id: str, change: Callable[[], Settlement]) -> Settlement:
        """A change to an issue waiting for its merge, folded into the branch as a person's change is
        (no lock: nobody holds a waiting issue); `lost` when it no longer waits."""
        outcome: list[Settlement] = []

        def step(listing: Listing) -> bool | None:
            outcome[:] = [change()]
            if outcome[0].outcome == Outcome.LOST:
                return False
            self.view.items.append((verb, issue_id, "merge-watch"))
            return None

        self.view.folding(what, step)
        return outcome[-1]

    def checker_root(self, issue_id: str) -> Path | None:
        """The checkout being run: gates judge the work there, while the record goes to the branch."""
        return self.git.repo / PurePosixPath(self.settings.jit_path).parent

    def gate_history(self, issue_id: str, gate_key: str) -> list[dict[str, object]]:
        with self._busy:
            return self.store.gate_history(issue_id, gate_key)

    def heartbeat(
        self, issue_id: str, assignee: str, *, interval: float | None = None, deadline: float | None = None
    ) -> bool:
        """Re-point our lock at a fresh commit announcing `interval` (lease on its current value), every
        git call finished by `deadline`; False when the lock is not ours any more."""
        with self._lock_mutex:
            if issue_id not in self._own:
                return False
            sha, info = self._own[issue_id]
            beat = info.next_beat(interval)
            new = self.plumbing.note_commit(beat.message(issue_id), deadline=deadline)
            ref = self.view.lock_ref(issue_id)
            try:
                pushed = self.plumbing.push((new, ref), leases={ref: sha}, deadline=deadline)
            except GitError:
                pushed = False
            if not pushed:
                current = self.plumbing.list_remote(deadline=deadline).locks.get(issue_id)
                if current == sha:  # refused or failed, the lock still ours: not a verdict
                    raise GitError(f"heartbeat of {issue_id[:8]} did not land", transient=True)
                pushed = current == new  # the answer was lost, the beat was not; else the lock is gone
            if pushed:
                self._own[issue_id] = (new, beat)
                if (failed := self.clone_leases.renew(issue_id, assignee)) is not None:
                    self.notes.append(failed)
            return pushed

    def claim_timing(self, issue_id: str) -> ClaimTiming | None:
        return self._timing.get(issue_id)

    def materialise(self, issue_id: str) -> Materialised | None:
        """The view the claim was made on into the workspace's `.jit/` (its own moved aside): the
        tip the claim's fold left, or, when that fold did not land, the view again (our lock puts
        the claim in it). None when the state branch is the one checked out: its `.jit/` is tracked
        there, and a dirty copy would stop the agent's `git pull`/`rebase`.
        docs/delivery.md#when-the-agent-writes-jit-itself"""
        if not self.settings.state_elsewhere:
            return None
        with self._busy:
            try:
                folded = self.store.read_issue(issue_id)
                own = self._own.get(issue_id)
                if own is None or folded is None or folded.context.get(CTX_CLAIMED_AT) != own[1].at:
                    self.view.read()
                target = self.git.repo / self.settings.jit_path
                copy = Materialised(self.store.root, target, self.plumbing.scratch / f"workspace-{issue_id}")
                self._copies[issue_id] = copy
                return copy
            finally:
                self.plumbing.discard_changes()

    def unpark(self, issue_id: str) -> bool:
        def change(listing: Listing) -> bool | None:
            if not self.store.unpark(issue_id):
                return False
            self.view.items.append(("unpark", issue_id, "human"))
            return None

        return self.view.folding(f"unparking {issue_id[:8]}", change)

    def issue_ids(self) -> list[str]:
        with self._busy:
            self.plumbing.sync_to(self.plumbing.list_remote(locks=False).tip)
            return self.store.issue_ids()

    def confirm_dead(self, claims: Sequence[Claim], older_than: float) -> list[Claim]:
        """Of claims stale by their timestamps, those whose lock stayed unchanged for two announced
        heartbeat intervals while this process watched it (`liveness.watch`)."""
        locks = self.plumbing.list_remote().locks
        infos = self.read_locks({c.issue.id: locks[c.issue.id] for c in claims if c.issue.id in locks})
        dead_ids = liveness.watch(self.plumbing, claims, locks, infos, older_than, self.notes)
        self._leases.update({i: locks[i] for i in dead_ids if i in locks})
        return [c for c in claims if c.issue.id in dead_ids]

    def flush(self) -> None:
        """Fold every pending result into the branch (an idle runner, a reaper)."""
        self.view.fold(None, time.monotonic() + self.settings.push_budget)

    def close(self) -> None:
        self.plumbing.close()

    def read_locks(self, locks: dict[str, str]) -> dict[str, LockInfo]:
        return self.view.read_locks(locks)

    # ------------------------------------------------------------------ locks
    def _take_lock(self, issue_id: str, sha: str) -> bool:
        """Create the lock ref; a failure another try may fix is retried, and a try whose answer was
        lost is recognised by the lock's unique commit."""
        ref = self.view.lock_ref(issue_id)

        def step(attempt: int) -> bool:
            self.lock_attempts += 1
            if attempt > 1:
                held = self.plumbing.list_remote().locks.get(issue_id)
                if held is not None:
                    return held == sha
            return self.plumbing.push((sha, ref), leases={ref: ""})

        return self.view.retrying(f"taking the lock of {issue_id[:8]}", step)

    def _drop_lock(self, issue_id: str) -> None:
        """Delete our lock, only if it is still ours (lease on its value). Best effort: a leftover
        lock stops heartbeating and `reap` releases it."""
        with self._lock_mutex:
            own = self._own.pop(issue_id, None)
            if own is None:
                return
            if own[1].agent and (failed := self.clone_leases.release(issue_id, own[1].agent)) is not None:
                self.notes.append(failed)
            try:
                self.plumbing.push(("", self.view.lock_ref(issue_id)), leases={self.view.lock_ref(issue_id): own[0]})
            except GitError as exc:
                self.notes.append(f"lock {self.view.lock_ref(issue_id)} left behind: {exc}")

    # ------------------------------------------------------------------ settling
    def _settle(self, issue_id: str, agent: str, op: str, **fields: Any) -> Settlement:
        """Push the result ref with the deletion of the lock, leased on the lock's value: ours (a
        runner), as watched (reap), or as it is (a person). Then fold until it is on the branch."""
        deadline = time.monotonic() + self.settings.push_budget
        lock_ref = self.view.lock_ref(issue_id)
        sent: dict[str, Any] = {}  # the last result pushed: a lost answer is recognised by its sha
        copy = self._copies.pop(issue_id, None)
        writes = carried.tree_files(copy.writes) if copy is not None else {}
        if writes:
            fields["carries"] = True
        written = copy.writes.get(f"issues/{issue_id}.json", (None, None))[1] if copy is not None else None
        if (
            fields.get("seen") is None
            and issue_id in self._own
            and self.clone_leases.given_up(issue_id, agent, written)
        ):
            fields["given_up"] = True  # the agent's own release, as local mode reads it

        def step(attempt: int) -> Settlement | object:
            with self._busy, self._lock_mutex:
                listing = self.view.read(only=issue_id)
                try:
                    if sent and listing.results.get(sent["ref"]) == sent["sha"]:
                        self._own.pop(issue_id, None)
                        done: Settlement = sent["settlement"]
                        return done
                    own = self._own.get(issue_id)
                    # Ours; else as a reaper watched it die; else (a person's decision) as it is now.
                    lease = own[0] if own else self._leases.get(issue_id) if fields.get("seen") else None
                    lease = lease or listing.locks.get(issue_id)
                    if lease is not None and listing.locks.get(issue_id) != lease:
                        self._own.pop(issue_id, None)  # reaped, released or replaced: the lock fences us out
                        # The view holds the release that took it (folded, or pending): its reason.
                        return Settlement(Outcome.LOST, taken_because=self.store.taken_because(issue_id, agent))
                    result = ResultInfo.new(op, own[1] if own else self._claim_of(issue_id, agent), **fields)
                    settlement = result.apply(self.store, issue_id)  # what the fold will do
                finally:
                    self.plumbing.discard_changes()
                if settlement.outcome == Outcome.LOST:
                    self._drop_lock(issue_id)
                    return settlement
                ref = f"{self.plumbing.results_prefix}{issue_id}/{result.claim.attempt or 0}"
                message = result.message(issue_id)
                sha = self.plumbing.files_commit(message, writes) if writes else self.plumbing.note_commit(message)
                sent.update(ref=ref, sha=sha, settlement=settlement)
                updates, leases = [(sha, ref)], {ref: ""}
                if lease is not None:
                    updates.append(("", lock_ref))
                    leases[lock_ref] = lease
                self.view.branch_attempts += 1
                if not self.plumbing.push(*updates, leases=leases):
                    return AGAIN
                self._own.pop(issue_id, None)
                return settlement

        try:
            settlement: Settlement = self.view.retrying(f"settling {issue_id[:8]} on {self.location}", step, deadline)
        finally:  # the command is over: the clone's lease goes with the claim (a reaper's: none here)
            if (failed := self.clone_leases.release(issue_id, agent)) is not None:
                self.notes.append(failed)
        if settlement.outcome != Outcome.LOST:
            if self.settings.wait_for_fold:
                self.view.fold(sent["ref"], deadline)
            else:
                self.view.fold_if_last(sent["ref"], deadline)
        if self.view.restored:
            settlement = replace(settlement, warnings=(*settlement.warnings, *self.view.restored))
        if copy is not None and copy.kept:
            kept = f"the command wrote {len(copy.kept)} file(s) of .jit/ that are not carried to the state branch"
            kept += " (docs/delivery.md#when-the-agent-writes-jit-itself)"
            settlement = replace(settlement, warnings=(*settlement.warnings, kept))
        return settlement

    def _claim_of(self, issue_id: str, agent: str) -> LockInfo:
        """The claim a reaper or a person settles, as the view shows it."""
        issue = next((i for i in self.store.snapshot((State.IN_PROGRESS,)).issues if i.id == issue_id), None)
        context = issue.context if issue else {}
        attempt = (issue.failed_attempts if issue else 0) + 1
        return LockInfo(agent, context.get(CTX_RUN), attempt, None, context.get(CTX_CLAIMED_AT))
