"""Remote mode (design §3.7): the git remote is the lock, so runners in separate clones agree.

Two kinds of remote writes, for two jobs:

* **Exclusivity**: one ref per claimed issue, `refs/jit-dispatch/claims/<issue-id>`, created with
  `--force-with-lease=<ref>:` (must not exist). The server creates a ref atomically, so exactly
  one runner gets each issue, and runners claiming different issues never conflict. The command
  starts as soon as the lock is ours.
* **The record**: every state change (claim, settle) is a commit on the state branch. A push
  rejected as non-fast-forward re-reads the new tip and replays the operation on it (jit's own
  rules re-checked), with jittered backoff. The claim is recorded in the background while the
  command runs, so runners never wait for each other on the branch before starting work.

The git side (listing, the scratch checkout, commits on a temporary index, leased pushes) is
`plumbing.Plumbing`; this module is the protocol.

A runner killed between taking a lock and recording its claim leaves a lock on an issue that is
still `ready` on the branch. Such a lock is *orphaned* once older than `orphan_lock_seconds`
(its commit's time): the next runner replaces it atomically (lease on the old lock's id). A
runner killed while its command ran leaves an `in_progress` claim and its lock: recovering those
is the stale-claim reaper's job (`dispatch.claimed_at` records when).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from jit_dispatch.domain import transitions
from jit_dispatch.domain.issue import Issue, issue_from_raw
from jit_dispatch.domain.selection import Filters
from jit_dispatch.domain.values import Outcome, State
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.base import Liveness, Settlement, Snapshot, TrackerDefaults
from jit_dispatch.trackers.jit.store import JitStore
from jit_dispatch.trackers.remote.git import Git, GitError
from jit_dispatch.trackers.remote.plumbing import Plumbing, RemoteSettings

T = TypeVar("T")
__all__ = ["RemoteJitTracker", "RemoteSettings"]


class RemoteJitTracker(TrackerDefaults):
    """The jit store of `<remote>/<branch>:<jit_path>`, behind the same interface as `JitStore`."""

    def __init__(self, git: Git, settings: RemoteSettings, scratch: Path) -> None:
        self.git = git
        self.settings = settings
        self.plumbing = Plumbing(git, settings, scratch)
        self.store = self.plumbing.store
        self.location = f"{self.plumbing.remote_name}/{settings.branch}:{settings.jit_path}"
        self._orphans: dict[str, str] = {}  # issue id → sha of an orphaned lock we may replace
        self._own_locks: dict[str, str] = {}  # issue id → sha of our lock commit
        self._busy = threading.RLock()  # one state transaction at a time (claim record, heartbeat, settle)
        self._recordings: dict[str, threading.Thread] = {}  # issue id → thread recording its claim
        self._recording_errors: dict[str, BaseException] = {}
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
        with self._busy:  # a claim may be being recorded in the background
            tip, locks = self.plumbing.list_remote()
            self.plumbing.sync_to(tip)
            snapshot = self.store.snapshot(full_states)
        snapshot.locked = frozenset(self._live_locks(locks, snapshot.states))
        self._taken = set()
        return snapshot

    def claim(self, issue_id: str, assignee: str, run: str, filters: Filters) -> Issue | None:
        """Take the issue's lock ref, then record the claim on the branch (retries in the background)."""
        if issue_id in self._taken:
            return None
        with self._busy:
            if self.store.claimable(issue_id, filters) is None:
                return None
        if not self._take_lock(issue_id, assignee, run):
            # Lost a race: others are claiming right now. One listing shows which of our next
            # candidates they hold already; finding that out by pushing costs a push for each.
            _, locks = self.plumbing.list_remote()
            self._taken = {i for i, sha in locks.items() if self._orphans.get(i) != sha}
            return None
        try:
            with self._busy:
                # Another runner may have claimed, finished and unlocked it since our listing: a
                # lock that can be created again says nothing about the issue. Look once more.
                tip, _ = self.plumbing.list_remote(locks=False)
                self.plumbing.sync_to(tip)
                current = self.store.claimable(issue_id, filters)
                if current is None:
                    self._drop_lock(issue_id)
                    return None
                # One synchronous try at the record: a branch that refuses us (protection,
                # permissions) fails here, before the command runs. A lost race goes on below.
                claim = lambda store: store.claim(issue_id, assignee, run, filters)  # noqa: E731
                pushed, recorded = self._attempt(claim, lambda _: "claim", issue_id, assignee)
        except BaseException:
            self._drop_lock(issue_id)
            raise
        if pushed:
            if recorded is None:  # changed under us between the check and the record
                self._drop_lock(issue_id)
            return recorded
        raw, _ = transitions.claim(current.raw, assignee, run, transitions.format_timestamp())
        recording = threading.Thread(
            target=self._record_claim, args=(issue_id, assignee, run, filters), name="record-claim", daemon=True
        )
        self._recordings[issue_id] = recording
        recording.start()
        return issue_from_raw(raw)

    def complete(self, issue_id: str, assignee: str) -> Settlement:
        return self._settle(issue_id, assignee, lambda store: store.complete(issue_id, assignee))

    def release(
        self, issue_id: str, assignee: str, reason: str, max_attempts: int, *, seen: Liveness | None = None
    ) -> Settlement:
        return self._settle(
            issue_id, assignee, lambda store: store.release(issue_id, assignee, reason, max_attempts, seen=seen)
        )

    def heartbeat(self, issue_id: str, assignee: str) -> bool:
        return self._transact(
            lambda store: store.heartbeat(issue_id, assignee), lambda _: "heartbeat", issue_id, assignee
        )

    def unpark(self, issue_id: str) -> bool:
        with self._busy:
            self.plumbing.sync_to(self.plumbing.list_remote(locks=False)[0])
            return self._transact(lambda store: store.unpark(issue_id), lambda _: "unpark", issue_id, "human")

    def issue_ids(self) -> list[str]:
        with self._busy:
            self.plumbing.sync_to(self.plumbing.list_remote(locks=False)[0])
            return self.store.issue_ids()

    def close(self) -> None:
        self.plumbing.close()

    # ------------------------------------------------------------------ locks
    def _lock_ref(self, issue_id: str) -> str:
        return self.settings.lock_prefix + issue_id

    def _take_lock(self, issue_id: str, assignee: str, run: str) -> bool:
        stamp = transitions.format_timestamp()
        message = f"jit-dispatch lock {issue_id}\n\nagent: {assignee}\nrun: {run}\nat: {stamp}\n"
        empty_tree = self.git.out("hash-object", "-t", "tree", "-w", "--stdin", stdin=b"")
        lock = self.git.out("commit-tree", empty_tree, "-m", message, env=self.plumbing.author_env())
        self.lock_attempts += 1
        if not self.plumbing.push(lock, self._lock_ref(issue_id), lease=self._orphans.get(issue_id, "")):
            return False
        self._own_locks[issue_id] = lock
        return True

    def _drop_lock(self, issue_id: str) -> None:
        """Delete the lock we hold for the issue, only if it is still that lock (lease on its id).

        Best effort: a leftover lock is harmless once the issue is settled.
        """
        lock = self._own_locks.pop(issue_id, None)
        if lock is None:
            return
        try:
            self.plumbing.push("", self._lock_ref(issue_id), lease=lock)
        except GitError as exc:
            self.notes.append(f"lock {self._lock_ref(issue_id)} left behind: {exc}")

    def _live_locks(self, locks: dict[str, str], states: dict[str, str]) -> set[str]:
        """Locked issues, minus orphaned locks (issue not in progress, lock older than the limit)."""
        suspects = {i: sha for i, sha in locks.items() if states.get(i) == State.READY}
        self._orphans = {}
        if suspects:
            times = self.plumbing.lock_commit_times([self._lock_ref(i) for i in suspects], list(suspects.values()))
            if times is None:
                # A lock vanished since the listing (its runner settled): nothing was fetched, and
                # every lock counts as live this time; a later run looks at their ages again.
                return set(locks)
            now = time.time()
            for (issue_id, sha), committed in zip(suspects.items(), times, strict=True):
                if now - committed > self.settings.orphan_lock_seconds:
                    self._orphans[issue_id] = sha
        return set(locks) - set(self._orphans)

    # ------------------------------------------------------------------ the record
    def _record_claim(self, issue_id: str, assignee: str, run: str, filters: Filters) -> None:
        try:
            claimed = self._transact(
                lambda store: store.claim(issue_id, assignee, run, filters), lambda _: "claim", issue_id, assignee
            )
            if claimed is None:
                self.notes.append(f"{issue_id[:8]} changed on {self.location} before the claim was recorded")
        except BaseException as exc:  # reported by _settle, in the thread that settles
            self._recording_errors[issue_id] = exc

    def _settle(self, issue_id: str, assignee: str, operation: Callable[[JitStore], Settlement]) -> Settlement:
        recording = self._recordings.pop(issue_id, None)
        if recording is not None:
            budget = None if self.git.deadline is None else max(0.0, self.git.deadline - time.monotonic())
            recording.join(budget)
            if recording.is_alive():
                raise TrackerError("the claim was still being recorded when time ran out")
            if issue_id in self._recording_errors:
                raise TrackerError(f"recording the claim failed: {self._recording_errors.pop(issue_id)}")
        with self._busy:
            tip, locks = self.plumbing.list_remote()
            self.plumbing.sync_to(tip)
            settlement = self._transact(operation, lambda done: done.outcome, issue_id, assignee)
        if issue_id not in self._own_locks and issue_id in locks and settlement.outcome != Outcome.LOST:
            self._own_locks[issue_id] = locks[issue_id]  # a reaped runner's lock: settled here, freed here
        self._drop_lock(issue_id)
        return settlement

    def _transact(self, operation: Callable[[JitStore], T], verb: Callable[[T], str], issue_id: str, agent: str) -> T:
        """Apply `operation` to the branch tip and push it; on a lost race, replay on the new tip."""
        with self._busy:
            return self._transact_locked(operation, verb, issue_id, agent)

    def _transact_locked(
        self, operation: Callable[[JitStore], T], verb: Callable[[T], str], issue_id: str, agent: str
    ) -> T:
        for attempt in range(1, self.settings.max_push_attempts + 1):
            if attempt > 1:
                time.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))
                tip, _ = self.plumbing.list_remote(locks=False)
                self.plumbing.sync_to(tip)
            pushed, value = self._attempt(operation, verb, issue_id, agent)
            if pushed:
                return value
        raise TrackerError(
            f"could not push to {self.location} after {self.settings.max_push_attempts} attempts (too much contention)"
        )

    def _attempt(
        self, operation: Callable[[JitStore], T], verb: Callable[[T], str], issue_id: str, agent: str
    ) -> tuple[bool, T]:
        """One try on the current tip: (True, value) when pushed or nothing to write; (False, _) on a lost race."""
        self.store.changed.clear()
        value = operation(self.store)
        if not self.store.changed:  # nothing to write: not ours, or no longer claimable
            return True, value
        commit = self.plumbing.commit(self._message(verb(value), issue_id, agent))
        self.branch_attempts += 1
        try:
            pushed = self.plumbing.push(commit, f"refs/heads/{self.settings.branch}", lease=None)
        except GitError:
            self.plumbing.discard_changes()
            raise
        if pushed:
            self.plumbing.tip = commit
            self.commits.append(commit)
        else:
            self.plumbing.discard_changes()
        return pushed, value

    def _message(self, verb: str, issue_id: str, agent: str) -> str:
        """`jit-dispatch: <verb> <short_id> (<agent>)`, verbs claim/done/gated/release/park."""
        verb = {"released": "release", "parked": "park"}.get(verb, verb)
        suffix = " [skip ci]" if self.settings.skip_ci else ""
        return f"jit-dispatch: {verb} {issue_id[:8]} ({agent}){suffix}"
