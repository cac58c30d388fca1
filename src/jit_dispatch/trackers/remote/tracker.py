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

The user's working tree, index, HEAD and branches are never touched: `.jit/` is materialised in
a scratch directory from the fetched tip (via `git archive`), commits are built with plumbing on
a temporary index holding only `.jit/`, and the fetched tip sits under a private ref that is
deleted on close. Cost follows the size of `.jit/`, not of the repository.

A runner killed between taking a lock and recording its claim leaves a lock on an issue that is
still `ready` on the branch. Such a lock is *orphaned* once older than `orphan_lock_seconds`
(its commit's time): the next runner replaces it atomically (lease on the old lock's id). A
runner killed while its command ran leaves an `in_progress` claim and its lock: recovering those
is the stale-claim reaper's job (`dispatch.claimed_at` records when).
"""

from __future__ import annotations

import io
import os
import random
import secrets
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

from jit_dispatch.domain import transitions
from jit_dispatch.domain.issue import LOCK_PREFIX, Issue, issue_from_raw
from jit_dispatch.domain.selection import Filters
from jit_dispatch.domain.values import Outcome, State
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.base import GateRecord, Liveness, Settlement, Snapshot, TrackerDefaults
from jit_dispatch.trackers.jit.store import JitStore
from jit_dispatch.trackers.remote.git import Git, GitError, last_line, redact

T = TypeVar("T")
BOT_NAME = "github-actions[bot]"
BOT_EMAIL = "41898282+github-actions[bot]@users.noreply.github.com"
# Words git prints when a push lost a race (as opposed to failing): retry or move on.
_RACE_WORDS = ("stale info", "non-fast-forward", "fetch first", "already exists")
# A push can also lose on the server: the ref moved (or appeared) between the advertisement and
# the update, and the server's ref transaction refuses, "[remote rejected] (failed to update ref)"
# after "cannot lock ref '…': is at X but expected Y" / "reference already exists" (git), or
# "(incorrect old value provided)" (GitHub). Any other remote rejection (a hook, branch
# protection, permissions) is a failure.
_SERVER_RACE_WORDS = ("but expected", "reference already exists", "incorrect old value")


@dataclass(frozen=True)
class RemoteSettings:
    branch: str
    jit_path: str = ".jit"  # the store's path inside the repository
    remote: str = "origin"
    lock_prefix: str = LOCK_PREFIX
    author_name: str = BOT_NAME
    author_email: str = BOT_EMAIL
    skip_ci: bool = True
    max_push_attempts: int = 40
    orphan_lock_seconds: float = 600.0


class RemoteJitTracker(TrackerDefaults):
    """The jit store of `<remote>/<branch>:<jit_path>`, behind the same interface as `JitStore`."""

    def __init__(self, git: Git, settings: RemoteSettings, scratch: Path) -> None:
        self.git = git
        self.settings = settings
        self.scratch = scratch
        self.store = JitStore(scratch / "jit")
        self.remote_name = redact(settings.remote)  # a URL may carry a token: never print it
        self.location = f"{self.remote_name}/{settings.branch}:{settings.jit_path}"
        self.tip: str | None = None
        self._private_ref = f"refs/jit-dispatch/tips/{os.getpid()}-{secrets.token_hex(4)}"
        self._shallow = git.out("rev-parse", "--is-shallow-repository") == "true"
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

    def snapshot(self, full_states: Iterable[str] = ("ready",), *, leads: bool = False) -> Snapshot:
        with self._busy:  # a claim may be being recorded in the background
            tip, locks = self._list_remote()
            self._sync_to(tip)
            snapshot = self.store.snapshot(full_states, leads=leads)
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
            _, locks = self._list_remote()
            self._taken = {i for i, sha in locks.items() if self._orphans.get(i) != sha}
            return None
        try:
            with self._busy:
                # Another runner may have claimed, finished and unlocked it since our listing: a
                # lock that can be created again says nothing about the issue. Look once more.
                tip, _ = self._list_remote(locks=False)
                self._sync_to(tip)
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

    def complete(self, issue_id: str, assignee: str, *, gate_runs: Sequence[GateRecord] = ()) -> Settlement:
        return self._settle(issue_id, assignee, lambda store: store.complete(issue_id, assignee, gate_runs=gate_runs))

    def release(
        self,
        issue_id: str,
        assignee: str,
        reason: str,
        max_attempts: int,
        *,
        seen: Liveness | None = None,
        gate_runs: Sequence[GateRecord] = (),
    ) -> Settlement:
        def operation(store: JitStore) -> Settlement:
            return store.release(issue_id, assignee, reason, max_attempts, seen=seen, gate_runs=gate_runs)

        return self._settle(issue_id, assignee, operation)

    def checker_root(self, issue_id: str) -> Path | None:
        """The checkout being run: gates judge the work there, while the record goes to the branch."""
        return self.git.repo / PurePosixPath(self.settings.jit_path).parent

    def gate_history(self, issue_id: str, gate_key: str) -> list[dict[str, object]]:
        with self._busy:
            return self.store.gate_history(issue_id, gate_key)

    def heartbeat(self, issue_id: str, assignee: str) -> bool:
        return self._transact(
            lambda store: store.heartbeat(issue_id, assignee), lambda _: "heartbeat", issue_id, assignee
        )

    def unpark(self, issue_id: str) -> bool:
        with self._busy:
            self._sync_to(self._list_remote(locks=False)[0])
            return self._transact(lambda store: store.unpark(issue_id), lambda _: "unpark", issue_id, "human")

    def issue_ids(self) -> list[str]:
        with self._busy:
            self._sync_to(self._list_remote(locks=False)[0])
            return self.store.issue_ids()

    def close(self) -> None:
        self.git.run("update-ref", "-d", self._private_ref, check=False)

    # ------------------------------------------------------------------ locks
    def _lock_ref(self, issue_id: str) -> str:
        return self.settings.lock_prefix + issue_id

    def _take_lock(self, issue_id: str, assignee: str, run: str) -> bool:
        stamp = transitions.format_timestamp()
        message = f"jit-dispatch lock {issue_id}\n\nagent: {assignee}\nrun: {run}\nat: {stamp}\n"
        empty_tree = self.git.out("hash-object", "-t", "tree", "-w", "--stdin", stdin=b"")
        lock = self.git.out("commit-tree", empty_tree, "-m", message, env=self._author_env())
        self.lock_attempts += 1
        if not self._push(lock, self._lock_ref(issue_id), lease=self._orphans.get(issue_id, "")):
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
            self._push("", self._lock_ref(issue_id), lease=lock)
        except GitError as exc:
            self.notes.append(f"lock {self._lock_ref(issue_id)} left behind: {exc}")

    def _live_locks(self, locks: dict[str, str], states: dict[str, str]) -> set[str]:
        """Locked issues, minus orphaned locks (issue not in progress, lock older than the limit)."""
        suspects = {i: sha for i, sha in locks.items() if states.get(i) == State.READY}
        self._orphans = {}
        if suspects:
            refspecs = [f"+{self._lock_ref(i)}:{self._private_ref}-lock-{n}" for n, i in enumerate(suspects)]
            fetched = self.git.run(
                "fetch", "--no-tags", "--no-write-fetch-head", "--quiet", self.settings.remote, *refspecs, check=False
            )
            if fetched.returncode != 0:
                if b"couldn't find remote ref" not in fetched.stderr:
                    raise GitError(f"git fetch failed: {last_line(fetched)}")
                # A lock vanished since the listing (its runner settled): nothing was fetched, and
                # every lock counts as live this time; a later run looks at their ages again.
                return set(locks)
            times = self.git.out("show", "-s", "--format=%ct", *suspects.values()).split()
            for n in range(len(suspects)):
                self.git.run("update-ref", "-d", f"{self._private_ref}-lock-{n}", check=False)
            now = time.time()
            for (issue_id, sha), committed in zip(suspects.items(), times, strict=True):
                if now - int(committed) > self.settings.orphan_lock_seconds:
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
            tip, locks = self._list_remote()
            self._sync_to(tip)
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
                tip, _ = self._list_remote(locks=False)
                self._sync_to(tip)
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
        commit = self._commit(self._message(verb(value), issue_id, agent))
        self.branch_attempts += 1
        try:
            pushed = self._push(commit, f"refs/heads/{self.settings.branch}", lease=None)
        except GitError:
            self._discard_changes()
            raise
        if pushed:
            self.tip = commit
            self.commits.append(commit)
        else:
            self._discard_changes()
        return pushed, value

    def _message(self, verb: str, issue_id: str, agent: str) -> str:
        """`jit-dispatch: <verb> <short_id> (<agent>)`, verbs claim/done/gated/release/park."""
        verb = {"released": "release", "parked": "park"}.get(verb, verb)
        suffix = " [skip ci]" if self.settings.skip_ci else ""
        return f"jit-dispatch: {verb} {issue_id[:8]} ({agent}){suffix}"

    # ------------------------------------------------------------------ git plumbing
    def _author_env(self) -> dict[str, str]:
        name, email = self.settings.author_name, self.settings.author_email
        return {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }

    def _list_remote(self, locks: bool = True) -> tuple[str, dict[str, str]]:
        """One round trip: the branch tip and every claim lock."""
        patterns = [f"refs/heads/{self.settings.branch}"] + ([self.settings.lock_prefix + "*"] if locks else [])
        proc = self.git.run("ls-remote", self.settings.remote, *patterns, check=False)
        if proc.returncode != 0:
            raise GitError(f"cannot reach remote '{self.remote_name}': {last_line(proc)}")
        tip, found = None, {}
        for line in proc.stdout.decode().splitlines():
            sha, ref = line.split("\t", 1)
            if ref == f"refs/heads/{self.settings.branch}":
                tip = sha
            elif ref.startswith(self.settings.lock_prefix):
                found[ref[len(self.settings.lock_prefix) :]] = sha
        if tip is None:
            raise TrackerError(f"branch '{self.settings.branch}' not found on remote '{self.remote_name}'")
        return tip, found

    def _sync_to(self, tip: str) -> None:
        """Make the scratch `.jit/` equal to `tip`'s, fetching only what is missing."""
        if tip == self.tip:
            return
        if self.git.run("cat-file", "-e", f"{tip}^{{commit}}", check=False).returncode != 0:
            depth = ["--depth=1"] if self._shallow else []
            spec = f"+refs/heads/{self.settings.branch}:{self._private_ref}"
            self.git.run("fetch", "--no-tags", "--no-write-fetch-head", "--quiet", *depth, self.settings.remote, spec)
            tip = self.git.out("rev-parse", self._private_ref)
        path = self.settings.jit_path
        if self.git.run("cat-file", "-e", f"{tip}:{path}", check=False).returncode != 0:
            raise TrackerError(f"{self.settings.remote}/{self.settings.branch} has no '{path}' directory")
        if self.tip is None:
            self._extract(self.git.run("archive", "--format=tar", f"{tip}:{path}").stdout)
        else:
            self._apply_diff(self.tip, tip)
        self.tip = tip

    def _extract(self, archive: bytes) -> None:
        """Regular files and directories only, never outside the scratch store."""
        root = self.store.root
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            for member in tar:
                relative = PurePosixPath(member.name)
                if relative.is_absolute() or ".." in relative.parts:
                    continue
                if member.isdir():
                    (root / relative).mkdir(parents=True, exist_ok=True)
                elif member.isfile() and (data := tar.extractfile(member)) is not None:
                    (root / relative).parent.mkdir(parents=True, exist_ok=True)
                    (root / relative).write_bytes(data.read())

    def _apply_diff(self, old: str, new: str) -> None:
        path = self.settings.jit_path
        listing = self.git.out("diff-tree", "-r", "-z", "--no-renames", "--name-status", old, new, "--", path)
        fields = listing.split("\0")
        changes = [(fields[i], fields[i + 1]) for i in range(0, len(fields) - 1, 2)]
        for status, name in changes:
            self._restore(new, PurePosixPath(name).relative_to(path), deleted=status == "D")

    def _restore(self, commit: str, relative: PurePosixPath, *, deleted: bool = False) -> None:
        target = self.store.root / relative
        if deleted:
            target.unlink(missing_ok=True)
            return
        blob = self.git.run("cat-file", "blob", f"{commit}:{self.settings.jit_path}/{relative}").stdout
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)

    def _discard_changes(self) -> None:
        """Undo what a losing attempt wrote, so the scratch store matches `self.tip` again."""
        assert self.tip is not None
        for changed in self.store.changed:
            relative = PurePosixPath(changed.relative_to(self.store.root).as_posix())
            exists = self.git.run("cat-file", "-e", f"{self.tip}:{self.settings.jit_path}/{relative}", check=False)
            self._restore(self.tip, relative, deleted=exists.returncode != 0)
        self.store.changed.clear()

    def _commit(self, message: str) -> str:
        """A commit on `self.tip` whose tree differs only in the files the store changed."""
        assert self.tip is not None
        path = self.settings.jit_path
        index = {"GIT_INDEX_FILE": str(self.scratch / "index")}
        (self.scratch / "index").unlink(missing_ok=True)
        self.git.run("read-tree", f"--prefix={path}/", f"{self.tip}:{path}", env=index)
        files = sorted(self.store.changed)
        listing = "\n".join(str(f) for f in files).encode()
        blobs = self.git.out("hash-object", "-w", "--stdin-paths", stdin=listing).split()
        entries = "".join(
            f"100644 {blob}\t{path}/{f.relative_to(self.store.root).as_posix()}\n"
            for blob, f in zip(blobs, files, strict=True)
        )
        self.git.run("update-index", "--index-info", stdin=entries.encode(), env=index)
        jit_tree = self.git.out("write-tree", f"--prefix={path}/", env=index)
        root = self._graft(f"{self.tip}^{{tree}}", PurePosixPath(path).parts, jit_tree)
        return self.git.out("commit-tree", root, "-p", self.tip, "-m", message, env=self._author_env())

    def _graft(self, tree: str, parts: tuple[str, ...], subtree: str) -> str:
        """`tree` with the directory at `parts` replaced by `subtree`; reads only that path's levels."""
        entries = [e for e in self.git.out("ls-tree", "-z", tree).split("\0") if e]
        name = parts[0]
        kept = [e for e in entries if e.split("\t", 1)[1] != name]
        child = subtree
        if len(parts) > 1:
            child = self._graft(f"{tree}:{name}" if ":" not in tree else f"{tree}/{name}", parts[1:], subtree)
        kept.append(f"040000 tree {child}\t{name}")
        return self.git.out("mktree", "-z", stdin=("\0".join(kept) + "\0").encode())

    def _push(self, sha: str, ref: str, *, lease: str | None) -> bool:
        """True when the remote took it; False when another runner won the race."""
        args = ["push", "--porcelain", "--no-verify", "--quiet"]
        if lease is not None:
            args.append(f"--force-with-lease={ref}:{lease}")
        proc = self.git.run(*args, self.settings.remote, f"{sha}:{ref}", check=False)
        if proc.returncode == 0:
            return True
        text = (proc.stdout + proc.stderr).decode("utf-8", errors="replace")
        race_words = _SERVER_RACE_WORDS if "remote rejected" in text else _RACE_WORDS
        if any(word in text for word in race_words):
            return False
        raise GitError(f"push to '{self.remote_name}' failed: {last_line(proc)}")
