"""jit's leases in the git common dir, written as `jit claim acquire` writes them (docs/jit-format.md#leases).

The newest jit coordinates agents through `<git common dir>/jit/`: an append-only `claims.jsonl`
(one operation a line, `seq` numbered), the derived `claims.index.json` (the active leases) and
`locks/claims.lock` (flock, with a `claims.lock.meta` beside it while held). Under
`enforce_leases = "strict"` every write to an issue needs an active lease of the writer's agent.
The dispatcher holds one for each claim, so the command's own jit calls (`JIT_AGENT_ID` is the
dispatcher's agent id) are the lease holder's, and a lease of another agent keeps it off an issue.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jit_dispatch.domain.transitions import chrono, chrono_display, chrono_time, timestamp_ns
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.jit.files import append_lines, atomic_write, dumps_event, dumps_pretty, store_error
from jit_dispatch.trackers.jit.locks import LockTimeout, flock

DEFAULT_TTL_SECONDS = 600  # jit's `coordination.default_ttl_secs`
LOCK_SECONDS = 5.0  # jit's FileLocker timeout for claims.lock
_SEQ = re.compile(rb'"seq":(\d+)')


def lease_ttl(heartbeat: float | None) -> int:
    """Two heartbeat intervals: a runner fences itself after 1.5 without renewing, so its lease
    expires only after its command surely stopped. Without a heartbeat: jit's default (600 s)."""
    if not heartbeat:
        return DEFAULT_TTL_SECONDS
    return max(1, int(-(-2 * heartbeat // 1)))


@dataclass(frozen=True)
class Holder:
    """An active lease on an issue: whose, and until when."""

    agent: str
    lease_id: str
    expires_at: str | None
    last_beat: str

    def words(self) -> str:
        """`leased by agent:x until …`, as jit's `already claimed` message puts it."""
        if self.expires_at is None:
            return f"leased by {self.agent} (indefinite lease, last beat: {self.last_beat})"
        return f"leased by {self.agent} until {self.expires_at}"


@dataclass(frozen=True)
class Paths:
    """Where jit keeps a worktree's leases: the shared `jit/` of the git common dir; the worktree's root and HEAD."""

    shared: Path
    worktree_root: Path
    head: Path


def find_paths(store_root: Path) -> Paths | None:
    """As jit finds them for the store (`repo_control_plane_dir`): `<root>/.git` a directory, or a
    linked worktree's `.git` file pointing at its gitdir, whose `commondir` names the shared one."""
    root = store_root.absolute().parent
    dot_git = root / ".git"
    try:
        if dot_git.is_dir():
            return Paths(dot_git / "jit", _real(root), dot_git / "HEAD")
        if not dot_git.is_file():
            return None
        pointer = dot_git.read_text(encoding="utf-8").strip()
        if not pointer.startswith("gitdir:"):
            return None
        gitdir = root / pointer[len("gitdir:") :].strip()
        common = gitdir
        with contextlib.suppress(FileNotFoundError):
            common = gitdir / (gitdir / "commondir").read_text(encoding="utf-8").strip()
        return Paths(_real(common) / "jit", _real(root), gitdir / "HEAD")
    except (OSError, UnicodeDecodeError):
        return None


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


class Leases:
    """The leases of one repository, read and written under `locks/claims.lock` as jit does."""

    def __init__(
        self, paths: Paths, local_jit: Path, ttl: int = DEFAULT_TTL_SECONDS, wait: Callable[[], float] | None = None
    ) -> None:
        self.paths, self.local_jit, self.ttl = paths, local_jit, ttl
        self.wait = wait or (lambda: LOCK_SECONDS)  # how long to wait for claims.lock (less once cancelled)
        self.index_path = paths.shared / "claims.index.json"
        self.log_path = paths.shared / "claims.jsonl"

    @classmethod
    def of_store(
        cls, store_root: Path, ttl: int = DEFAULT_TTL_SECONDS, wait: Callable[[], float] | None = None
    ) -> Leases | None:
        paths = find_paths(store_root)
        return cls(paths, store_root, ttl, wait) if paths is not None else None

    # ------------------------------------------------------------------ reading
    def holders(self) -> dict[str, Holder]:
        """Every issue's unexpired lease (no lock: jit renames the index into place whole)."""
        index = self._load_index()
        now = time.time_ns()
        return {lease["issue_id"]: _holder(lease) for lease in _leases(index) if not _expired(lease, now)}

    def holder(self, issue_id: str) -> Holder | None:
        return self.holders().get(issue_id)

    # ------------------------------------------------------------------ writing
    def acquire(self, issue_id: str, agent: str) -> Holder | None:
        """A lease for `agent` (our own earlier one replaced); the other agent's lease when refused."""
        with self._locked(agent):
            index = self._load_index()
            self._evict_expired(index)
            mine = []
            for lease in _leases(index):
                if lease["issue_id"] != issue_id:
                    continue
                if lease.get("agent_id") != agent:
                    self._write_index(index)
                    return _holder(lease)
                mine.append(lease)
            for lease in mine:  # left by an earlier run of ours that could not release it
                self._evict(index, lease, "replaced by a new claim of the same agent")
            now = time.time_ns()
            lease = {
                "lease_id": str(uuid.uuid4()),
                "issue_id": issue_id,
                "agent_id": agent,
                "worktree_id": self._worktree_id(),
                "branch": self._branch(),
                "ttl_secs": self.ttl,
                "acquired_at": chrono_time(now),
                "expires_at": chrono_time(now + self.ttl * 1_000_000_000),
                "last_beat": chrono_time(now),
                "stale": False,
            }
            self._append({"op": "acquire", **lease})
            index["leases"] = [*_leases(index), lease]
            self._write_index(index)
        return None

    def renew(self, issue_id: str, agent: str) -> str | None:
        """Extend our lease by the TTL (`jit claim renew`); why not, when it is no longer ours: another
        agent's lease, or ours evicted (`jit claim release`, expiry) — never silently re-taken."""
        with self._locked(agent):
            index = self._load_index()
            self._evict_expired(index)
            lease = next((entry for entry in _leases(index) if entry["issue_id"] == issue_id), None)
            if lease is None or lease.get("agent_id") != agent:
                self._write_index(index)
                return _holder(lease).words() if lease is not None else self.gone(issue_id, agent)
            expires = chrono_time(time.time_ns() + self.ttl * 1_000_000_000) if lease.get("ttl_secs") else None
            renewal = {"lease_id": lease["lease_id"], "new_expires_at": expires, "new_last_beat": lease["last_beat"]}
            self._append({"op": "renew", **renewal})
            lease["expires_at"] = expires
            self._write_index(index)
        return None

    def gone(self, issue_id: str, agent: str) -> str:
        """How `agent`'s last lease on the issue ended, from the log (jit's eviction reason names who)."""
        ending = self._ending(issue_id, agent)
        if ending is None or ending.get("op") == "release":
            return "its jit lease is gone"
        return f"its jit lease was evicted: {ending.get('reason')}"

    def given_up(self, issue_id: str, agent: str) -> bool:
        """`agent` ended its own last lease on the issue: jit's `claim release <issue>` acting as
        `agent` (docs/jit-format.md#agents-that-settle). A plain `release` says nothing of who:
        `jit-dispatch release`, a person's, writes one too."""
        ending = self._ending(issue_id, agent)
        return ending is not None and ending.get("reason") == f"released by {agent} via claim release"

    def _ending(self, issue_id: str, agent: str) -> dict[str, Any] | None:
        """The log entry that ended `agent`'s newest lease on the issue; None while it stands (or none was)."""
        newest, ending = None, None
        try:
            lines = self.log_path.read_bytes().splitlines()
        except OSError:
            return None
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            if entry.get("op") == "acquire" and entry.get("issue_id") == issue_id and entry.get("agent_id") == agent:
                newest, ending = entry.get("lease_id"), None
            elif entry.get("op") in ("release", "force-evict", "auto-evict") and entry.get("lease_id") == newest:
                ending = entry
        return ending

    def release(self, issue_id: str, agent: str, *, force_reason: str | None = None) -> None:
        """Our lease on the issue released (`release`); with `force_reason` (a reaper) any lease evicted."""
        with self._locked(agent):
            index = self._load_index()
            for lease in list(_leases(index)):
                if lease["issue_id"] != issue_id:
                    continue
                if force_reason is not None:
                    self._evict(index, lease, force_reason)
                elif lease.get("agent_id") == agent:
                    now = chrono_time(time.time_ns())
                    self._append({"op": "release", "lease_id": lease["lease_id"], "released_at": now})
                    index["leases"] = [e for e in _leases(index) if e["lease_id"] != lease["lease_id"]]
            self._write_index(index)

    # ------------------------------------------------------------------ internals
    @contextmanager
    def _locked(self, agent: str) -> Iterator[None]:
        """`locks/claims.lock`, exclusive, with jit's `claims.lock.meta` beside it while held."""
        locks = self.paths.shared / "locks"
        try:
            locks.mkdir(parents=True, exist_ok=True)
            (self.paths.shared / "heartbeat").mkdir(exist_ok=True)
        except OSError as exc:
            raise store_error(locks, "create", exc) from None
        lock = locks / "claims.lock"
        try:
            with flock(lock, timeout=min(LOCK_SECONDS, self.wait())):
                meta = locks / "claims.lock.meta"
                now = chrono_time(time.time_ns())
                data = {"pid": os.getpid(), "agent_id": agent, "created_at": now, "last_updated": now}
                atomic_write(meta, dumps_pretty(data))
                try:
                    yield
                finally:
                    with contextlib.suppress(OSError):
                        meta.unlink()
        except LockTimeout as exc:
            raise TrackerError(f"{exc.path}: lock timeout ({exc}); is a jit claim command stuck?") from None

    def _load_index(self) -> dict[str, Any]:
        try:
            data = json.loads(self.index_path.read_bytes())
        except FileNotFoundError:
            now = chrono_time(time.time_ns())
            return {
                "schema_version": 1,
                "generated_at": now,
                "last_seq": 0,  # jit leaves it at 0 and never rewrites generated_at
                "stale_threshold_secs": 3600,
                "leases": [],
                "sequence_gaps": [],
            }
        except (OSError, ValueError) as exc:
            raise TrackerError(f"{self.index_path}: cannot be read as jit's claims index ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("leases"), list):
            raise TrackerError(f"{self.index_path}: field 'leases' must be a list")
        data["leases"] = [lease for lease in data["leases"] if isinstance(lease, dict) and "issue_id" in lease]
        return data

    def _write_index(self, index: dict[str, Any]) -> None:
        atomic_write(self.index_path, dumps_pretty(index))

    def _evict_expired(self, index: dict[str, Any]) -> None:
        now = time.time_ns()
        for lease in [lease for lease in _leases(index) if _expired(lease, now)]:
            at = timestamp_ns(lease.get("expires_at")) or now
            self._evict(index, lease, f"Lease expired at {chrono_display(at)}", op="auto-evict")

    def _evict(self, index: dict[str, Any], lease: dict[str, Any], reason: str, op: str = "force-evict") -> None:
        now = chrono_time(time.time_ns())
        self._append({"op": op, "lease_id": lease["lease_id"], "evicted_at": now, "reason": reason})
        index["leases"] = [e for e in _leases(index) if e.get("lease_id") != lease["lease_id"]]

    def _append(self, operation: dict[str, Any]) -> None:
        """One line of claims.jsonl: schema_version, seq (the largest so far + 1), timestamp, the op."""
        try:
            seq = max((int(m) for m in _SEQ.findall(self.log_path.read_bytes())), default=0) + 1
        except FileNotFoundError:
            seq = 1
        except OSError as exc:
            raise store_error(self.log_path, "read", exc) from None
        entry = {"schema_version": 1, "seq": seq, "timestamp": chrono_time(time.time_ns()), **operation}
        append_lines(self.log_path, [dumps_event(entry)])  # no fsync: as the issue files (docs/jit-format.md#leases)

    def _worktree_id(self) -> str:
        """The worktree's id from `.jit/worktree.json`, created as jit creates it when absent."""
        path = self.local_jit / "worktree.json"
        try:
            identity = json.loads(path.read_bytes())
            if isinstance(identity, dict) and isinstance(identity.get("worktree_id"), str):
                return str(identity["worktree_id"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            raise TrackerError(f"{path}: cannot be read as jit's worktree identity ({exc})") from None
        root = str(self.paths.worktree_root)
        now = time.time_ns()
        rfc3339 = chrono(now, "T", "+00:00")  # chrono's `to_rfc3339()`, what jit hashes
        worktree_id = "wt:" + hashlib.sha256(root.encode() + rfc3339.encode()).hexdigest()[:8]
        branch = self._branch() or "HEAD"
        identity = {"schema_version": 1, "worktree_id": worktree_id, "branch": branch, "root": root}
        identity["created_at"] = chrono_time(now)
        old = os.umask(0o077)  # jit writes it through a 0600 temp file
        try:
            atomic_write(path, dumps_pretty(identity))
        finally:
            os.umask(old)
        return worktree_id

    def _branch(self) -> str | None:
        """`git rev-parse --abbrev-ref HEAD`: the branch checked out, `HEAD` when detached."""
        try:
            head = self.paths.head.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            if isinstance(exc, OSError) and exc.errno not in (errno.ENOENT, errno.EACCES):
                raise store_error(self.paths.head, "read", exc) from None
            return None
        return head.removeprefix("ref: refs/heads/") if head.startswith("ref: refs/heads/") else "HEAD"


def _leases(index: dict[str, Any]) -> list[dict[str, Any]]:
    leases: list[dict[str, Any]] = index["leases"]
    return leases


def _expired(lease: dict[str, Any], now: int) -> bool:
    """jit's `Lease::is_expired`: a finite lease past `expires_at`."""
    expires = timestamp_ns(lease.get("expires_at"))
    return bool(lease.get("ttl_secs")) and expires is not None and now > expires


def _holder(lease: dict[str, Any]) -> Holder:
    expires = lease.get("expires_at")
    return Holder(
        str(lease.get("agent_id")),
        str(lease.get("lease_id")),
        str(expires) if expires is not None else None,
        str(lease.get("last_beat")),
    )
