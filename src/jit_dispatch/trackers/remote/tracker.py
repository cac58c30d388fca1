"""Remote mode (docs/architecture.md#remote-mode): the git remote is the lock, so runners in separate
clones agree, whatever their clocks.

* **The lock is the claim**: one ref per claimed issue, `refs/jit-dispatch/claims/<issue-id>`,
  created only if it does not exist (the server creates a ref atomically: one runner per issue).
  Its commit names agent, run, attempt, claim time and the heartbeat interval the holder promises
  (`locks.LockInfo`). Every lock holds its issue; nobody takes over a lock by its age.
* **Heartbeats re-point the holder's own lock** (lease on its previous value), never the branch.
* **The record**: the claim and the settlement are commits on the state branch, replayed on the
  new tip when the push loses a race. The claim is recorded in the background while the command
  runs; a claim that never made it is folded into the settling commit. The settling commit and the
  deletion of the lock go in one atomic push with a lease on the lock: a runner whose lock was
  reaped or released meanwhile has its late result refused (`lost`): the lock is the fencing token.
* **Failures**: a refusal or error that another try may fix is retried with jittered backoff
  within `push_budget`; a permanent one (permissions, protection) fails at once — and the first
  record attempt happens before the command starts, so it fails there.

The git side (listing, the scratch checkout, commits on a temporary index, leased pushes) is
`plumbing.Plumbing`; liveness and reaping are `liveness.py`.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from jit_dispatch.domain import transitions
from jit_dispatch.domain.issue import Issue, issue_from_raw
from jit_dispatch.domain.selection import Filters
from jit_dispatch.domain.staleness import Claim
from jit_dispatch.domain.values import Outcome, State
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.base import Liveness, Settlement, Snapshot, TrackerDefaults
from jit_dispatch.trackers.jit.store import JitStore
from jit_dispatch.trackers.remote import liveness
from jit_dispatch.trackers.remote.git import Git, GitError
from jit_dispatch.trackers.remote.locks import LockInfo, parse_lock
from jit_dispatch.trackers.remote.plumbing import Plumbing, RemoteSettings

T = TypeVar("T")
__all__ = ["RemoteJitTracker", "RemoteSettings"]
_AGAIN = object()  # a step lost a race: re-read and try again


class RemoteJitTracker(TrackerDefaults):
    """The jit store of `<remote>/<branch>:<jit_path>`, behind the same interface as `JitStore`."""

    def __init__(self, git: Git, settings: RemoteSettings, scratch: Path) -> None:
        self.git = git
        self.settings = settings
        self.plumbing = Plumbing(git, settings, scratch)
        self.store = self.plumbing.store
        self.location = f"{self.plumbing.remote_name}/{settings.branch}:{settings.jit_path}"
        self._own: dict[str, tuple[str, LockInfo]] = {}  # issue id → (sha, content) of the lock we hold
        self._leases: dict[str, str] = {}  # issue id → lock value last listed or watched (others' locks)
        self._infos: dict[str, LockInfo] = {}  # issue id → what its lock says (locks read so far)
        self._busy = threading.RLock()  # the scratch store: one branch transaction at a time
        self._lock_mutex = threading.RLock()  # our lock refs: a heartbeat never moves a lease being pushed
        self._settling: set[str] = set()  # issues whose background claim record must stop
        self._taken: set[str] = set()  # issues other runners locked since the snapshot
        self.lock_attempts = 0
        self.branch_attempts = 0
        self.commits: list[str] = []
        self.notes: list[str] = []

    # ------------------------------------------------------------------ interface
    def stats(self) -> dict[str, object]:
        return {
            "sync_attempts": self.lock_attempts,
            "branch_push_attempts": self.branch_attempts,
            "commits": list(self.commits),
            "notes": list(self.notes),
        }

    def hurry(self, seconds: float) -> None:
        self.git.deadline = time.monotonic() + seconds

    def snapshot(self, full_states: Iterable[str] = ("ready",)) -> Snapshot:
        """The branch, plus claims whose lock exists but whose record has not landed (folded in when
        `in_progress` issues are wanted in full, so `status` and `reap` see them as claims)."""
        full_states = tuple(full_states)
        with self._busy:
            tip, locks = self.plumbing.list_remote()
            self.plumbing.sync_to(tip)
            snapshot = self.store.snapshot(full_states)
            unrecorded = {i: sha for i, sha in locks.items() if snapshot.states.get(i) == State.READY}
            if unrecorded and State.IN_PROGRESS in full_states:
                self.store.changed.clear()
                folded = [i for i, info in self.read_locks(unrecorded).items() if self._fold_claim(i, info)]
                if folded:
                    snapshot = self.store.snapshot(full_states)
                self.plumbing.discard_changes()
        snapshot.locked = frozenset(locks)  # the lock is the claim: whatever its age, whoever's clock
        self._leases = dict(locks)
        self._taken = set()
        return snapshot

    def claim(self, issue_id: str, assignee: str, run: str, filters: Filters) -> Issue | None:
        """Take the issue's lock ref (the claim), then record it on the branch (retried in the background)."""
        if issue_id in self._taken:
            return None
        with self._busy:
            current = self.store.claimable(issue_id, filters)
        if current is None:
            return None
        info = LockInfo.new(assignee, run, current.failed_attempts + 1, self.settings.heartbeat_seconds)
        sha = self.plumbing.lock_commit(info.message(issue_id))
        if not self._take_lock(issue_id, sha):
            # Lost a race: others are claiming right now. One listing shows which of our next
            # candidates they hold already; finding that out by pushing costs a push for each.
            self._taken = set(self.plumbing.list_remote()[1])
            return None
        with self._lock_mutex:
            self._own[issue_id] = (sha, info)
        try:
            with self._busy:
                # Another runner may have claimed, finished and unlocked it since our listing: a
                # lock that can be created again says nothing about the issue. Look once more.
                self.plumbing.sync_to(self.plumbing.list_remote(locks=False)[0])
                if self.store.claimable(issue_id, filters) is None:
                    self._drop_lock(issue_id)
                    return None
                # One synchronous try at the record: a branch that refuses us (protection,
                # permissions) fails here, before the command runs. Anything else goes on below.
                try:
                    record = self._record_operation(issue_id, info)
                    recorded = self._attempt(record, lambda _: "claim", issue_id, assignee)
                except GitError as exc:
                    if not exc.transient:
                        raise
                    recorded = _AGAIN
        except BaseException:
            self._drop_lock(issue_id)
            raise
        if recorded is None:  # changed under us between the check and the record
            self._drop_lock(issue_id)
            return None
        if recorded is _AGAIN:
            threading.Thread(target=self._record_claim, args=(issue_id, info), name="record-claim", daemon=True).start()
            raw, _ = transitions.claim(current.raw, assignee, run, info.at or transitions.format_timestamp())
            return issue_from_raw(raw)
        assert isinstance(recorded, Issue)
        return recorded

    def complete(self, issue_id: str, assignee: str) -> Settlement:
        return self._settle(issue_id, assignee, lambda store: store.complete(issue_id, assignee))

    def release(
        self, issue_id: str, assignee: str, reason: str, max_attempts: int, *, seen: Liveness | None = None
    ) -> Settlement:
        return self._settle(
            issue_id, assignee, lambda store: store.release(issue_id, assignee, reason, max_attempts, seen=seen)
        )

    def heartbeat(self, issue_id: str, assignee: str) -> bool:
        """Re-point our lock at a fresh commit (lease on its current value); False when it is not ours any more."""
        with self._lock_mutex:
            if issue_id not in self._own:
                return False
            sha, info = self._own[issue_id]
            beat = info.next_beat()
            new = self.plumbing.lock_commit(beat.message(issue_id))
            ref = self._lock_ref(issue_id)
            try:
                pushed = self.plumbing.push((new, ref), leases={ref: sha})
            except GitError:
                pushed = False
            if not pushed and self.plumbing.list_remote()[1].get(issue_id) == new:
                pushed = True  # the answer was lost, the beat was not
            if pushed:
                self._own[issue_id] = (new, beat)
            return pushed

    def unpark(self, issue_id: str) -> bool:
        return self._transact(lambda store: store.unpark(issue_id), lambda _: "unpark", issue_id, "human")

    def issue_ids(self) -> list[str]:
        with self._busy:
            self.plumbing.sync_to(self.plumbing.list_remote(locks=False)[0])
            return self.store.issue_ids()

    def confirm_dead(self, claims: Sequence[Claim], older_than: float) -> list[Claim]:
        """Of claims stale by their timestamps, those whose lock stayed unchanged for two announced
        heartbeat intervals while this process watched it (`liveness.watch`)."""
        _, locks = self.plumbing.list_remote()
        infos = self.read_locks({c.issue.id: locks[c.issue.id] for c in claims if c.issue.id in locks})
        dead_ids = liveness.watch(self.plumbing, claims, locks, infos, older_than, self.notes)
        self._leases.update({i: locks[i] for i in dead_ids if i in locks})
        return [c for c in claims if c.issue.id in dead_ids]

    def close(self) -> None:
        self.plumbing.close()

    # ------------------------------------------------------------------ locks
    def _lock_ref(self, issue_id: str) -> str:
        return self.settings.lock_prefix + issue_id

    def read_locks(self, locks: dict[str, str]) -> dict[str, LockInfo]:
        """What each listed lock says; a lock deleted since the listing is left out."""
        for _ in range(3):
            messages = self.plumbing.lock_messages(locks)
            if messages is not None:
                infos = {i: parse_lock(m) for i, m in messages.items()}
                self._infos.update(infos)
                return infos
            current = self.plumbing.list_remote()[1]  # one vanished (its runner settled): read the rest
            locks = {i: sha for i, sha in locks.items() if current.get(i) == sha}
        return {}

    def _take_lock(self, issue_id: str, sha: str) -> bool:
        """Create the lock ref; a failure another try may fix is retried, and a try whose answer was
        lost is recognised by the lock's unique commit."""
        ref = self._lock_ref(issue_id)

        def step(attempt: int) -> bool:
            self.lock_attempts += 1
            if attempt > 1:
                held = self.plumbing.list_remote()[1].get(issue_id)
                if held is not None:
                    return held == sha
            return self.plumbing.push((sha, ref), leases={ref: ""})

        return self._retrying(f"taking the lock of {issue_id[:8]}", step)

    def _drop_lock(self, issue_id: str) -> None:
        """Delete our lock, only if it is still ours (lease on its value). Best effort: a leftover
        lock stops heartbeating and `reap` releases it."""
        with self._lock_mutex:
            own = self._own.pop(issue_id, None)
            if own is None:
                return
            try:
                self.plumbing.push(("", self._lock_ref(issue_id)), leases={self._lock_ref(issue_id): own[0]})
            except GitError as exc:
                self.notes.append(f"lock {self._lock_ref(issue_id)} left behind: {exc}")

    def _fold_claim(self, issue_id: str, info: LockInfo) -> bool:
        """Write a claim its lock records into the scratch store (the issue is `ready` on the branch)."""
        if info.agent is None or info.at is None:  # not a claim lock of this version: it only holds the issue
            return False
        claimed = self.store.claim(issue_id, info.agent, info.run or "", Filters(issue_id=issue_id), now=info.at)
        return claimed is not None

    # ------------------------------------------------------------------ the record
    def _record_operation(self, issue_id: str, info: LockInfo) -> Callable[[JitStore], Issue | None]:
        assert info.agent is not None and info.at is not None
        agent, run, at = info.agent, info.run or "", info.at

        def record(store: JitStore) -> Issue | None:
            if issue_id in self._settling:  # the settling commit carries the claim
                return None
            return store.claim(issue_id, agent, run, Filters(issue_id=issue_id), now=at)

        return record

    def _record_claim(self, issue_id: str, info: LockInfo) -> None:
        try:
            claimed = self._transact(self._record_operation(issue_id, info), lambda _: "claim", issue_id, info.agent)
            if claimed is None and issue_id not in self._settling:
                self.notes.append(f"{issue_id[:8]} changed on {self.location} before the claim was recorded")
        except Exception as exc:  # the settling commit will carry the claim
            self.notes.append(f"recording the claim of {issue_id[:8]} failed ({exc}); the settlement carries it")

    def _settle(self, issue_id: str, agent: str, operation: Callable[[JitStore], Settlement]) -> Settlement:
        """Apply `operation` on the tip and push it together with the deletion of the issue's lock,
        leased on the lock's value: ours (a runner), or as last listed or watched (reap, a person)."""
        self._settling.add(issue_id)
        ref = self._lock_ref(issue_id)
        landed: list[tuple[str, Settlement]] = []  # (our last event's id, settlement) of a push whose answer failed

        def step(attempt: int) -> Settlement | object:
            with self._busy, self._lock_mutex:
                tip, locks = self.plumbing.list_remote()
                self.plumbing.sync_to(tip)
                if landed and self._has_event(landed[-1][0]):
                    return landed[-1][1]
                own = self._own.get(issue_id)
                lease = own[0] if own else self._leases.get(issue_id)
                if lease is not None and locks.get(issue_id) != lease:
                    # Reaped, released or replaced meanwhile: the lock is the fencing token.
                    self._own.pop(issue_id, None)
                    return Settlement(Outcome.LOST)
                info = own[1] if own else self._infos.get(issue_id)
                self.store.changed.clear()
                if info is not None and self.store.snapshot(()).states.get(issue_id) == State.READY:
                    self._fold_claim(issue_id, info)  # its record never landed: this commit carries it
                settlement = operation(self.store)
                if settlement.outcome == Outcome.LOST:
                    self.plumbing.discard_changes()
                    self._drop_lock(issue_id)
                    return settlement
                commit = self.plumbing.commit(self._message(settlement.outcome, issue_id, agent))
                self.branch_attempts += 1
                updates = [(commit, self._branch_ref)]
                leases = None
                if lease is not None:
                    updates.append(("", ref))
                    leases = {ref: lease}
                landed.append((self._last_event_id(), settlement))
                if not self._push_commit(commit, *updates, leases=leases):
                    landed.clear()
                    return _AGAIN
                self._own.pop(issue_id, None)
                return settlement

        return self._retrying(f"settling {issue_id[:8]} on {self.location}", step)

    def _transact(
        self, operation: Callable[[JitStore], T], verb: Callable[[T], str], issue_id: str, agent: str | None
    ) -> T:
        """Apply `operation` to the branch tip and push it; on a lost race, replay on the new tip."""

        def step(attempt: int) -> T | object:
            with self._busy:
                self.plumbing.sync_to(self.plumbing.list_remote(locks=False)[0])
                return self._attempt(operation, verb, issue_id, agent)

        return self._retrying(f"writing {issue_id[:8]} to {self.location}", step)

    def _attempt(
        self, operation: Callable[[JitStore], T], verb: Callable[[T], str], issue_id: str, agent: str | None = None
    ) -> T | object:
        """One try on the current tip: the value when pushed or nothing to write; _AGAIN on a lost race."""
        self.store.changed.clear()
        value = operation(self.store)
        if not self.store.changed:  # nothing to write: not ours, or no longer claimable
            return value
        commit = self.plumbing.commit(self._message(verb(value), issue_id, agent))
        self.branch_attempts += 1
        return value if self._push_commit(commit, (commit, self._branch_ref)) else _AGAIN

    def _push_commit(self, commit: str, *updates: tuple[str, str], leases: dict[str, str] | None = None) -> bool:
        """Push a commit built from the scratch store's changes; the scratch store follows what the remote took."""
        try:
            pushed = self.plumbing.push(*updates, leases=leases)
        except BaseException:
            self.plumbing.discard_changes()
            raise
        if not pushed:
            self.plumbing.discard_changes()
            return False
        self.plumbing.tip = commit
        self.store.changed.clear()
        self.commits.append(commit)
        return True

    def _retrying(self, what: str, step: Callable[[int], T | object]) -> T:
        """Run `step` until it returns a value: again after a lost race or a transient failure, with
        jittered backoff, within the push budget (shortened by `hurry`)."""
        deadline = time.monotonic() + self.settings.push_budget
        why = "every try lost a race"
        for attempt in itertools.count(1):
            if attempt > 1:
                pause = random.uniform(0, min(2.0, 0.05 * 2**attempt))
                end = min(deadline, self.git.deadline or deadline)
                if time.monotonic() + pause >= end:
                    raise TrackerError(f"{what}: gave up after {attempt - 1} attempts within the push budget ({why})")
                time.sleep(pause)
            try:
                value = step(attempt)
            except GitError as exc:
                if not exc.transient:
                    raise
                why = str(exc)
                continue
            if value is not _AGAIN:
                return value  # type: ignore[return-value]
        raise AssertionError("unreachable")

    @property
    def _branch_ref(self) -> str:
        return f"refs/heads/{self.settings.branch}"

    def _last_event_id(self) -> str:
        lines = (self.store.root / "events.jsonl").read_bytes().splitlines()
        return json.loads(lines[-1])["id"] if lines else ""

    def _has_event(self, event_id: str) -> bool:
        """Whether the synced tip's event log holds this event (a push whose answer was lost landed)."""
        path = self.store.root / "events.jsonl"
        return bool(event_id) and path.exists() and event_id.encode() in path.read_bytes()

    def _message(self, verb: str, issue_id: str, agent: str | None = None) -> str:
        """`jit-dispatch: <verb> <short_id> (<agent>)`, verbs claim/done/gated/release/park."""
        verb = {"released": "release", "parked": "park"}.get(verb, verb)
        suffix = " [skip ci]" if self.settings.skip_ci else ""
        return f"jit-dispatch: {verb} {issue_id[:8]} ({agent}){suffix}"
