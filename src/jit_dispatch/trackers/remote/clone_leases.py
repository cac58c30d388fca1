"""The runner clone's own jit leases in remote mode (docs/remote-mode.md#jit-leases).

Each runner's clone has its own `.git/jit/`, which no other runner sees: the lock ref stays the
claim between runners. A lease there, held for the claim as `jit claim acquire` writes it, serves
the agent's own `jit` calls in that clone under `enforce_leases = "strict"` (docs/jit-format.md#leases).
"""

from __future__ import annotations

import json
from pathlib import Path

from jit_dispatch.domain.values import State
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.jit.leases import Leases, find_paths, lease_ttl
from jit_dispatch.trackers.jit.locks import lock_timeout_from_env


class CloneLeases:
    """Acquire, renew and release the clone's lease of each claim this runner holds."""

    def __init__(self, store_root: Path, identity: Path, heartbeat: float | None) -> None:
        """`store_root`: the clone's `.jit/`; `identity`: where to keep jit's worktree identity when
        the clone has none yet (never written into the user's checkout)."""
        paths = find_paths(store_root)
        local = store_root if (store_root / "worktree.json").is_file() else identity
        self.leases = Leases(paths, local, lease_ttl(heartbeat), lock_timeout_from_env) if paths else None

    def acquire(self, issue_id: str, agent: str) -> str | None:
        """None when held (or the clone is no git worktree); else who holds the clone's lease."""
        if self.leases is None:
            return None
        if not self.leases.local_jit.is_dir():
            self.leases.local_jit.mkdir(parents=True)
        holder = self.leases.acquire(issue_id, agent)
        return holder.words() if holder is not None else None

    def renew(self, issue_id: str, agent: str) -> str | None:
        """Best effort: the lock ref, not this lease, says whether the claim is still ours. Why it
        failed, for the run's notes."""
        try:
            if self.leases is not None:
                self.leases.renew(issue_id, agent)
        except TrackerError as exc:
            return f"this clone's jit lease of {issue_id[:8]} was not renewed: {exc}"
        return None

    def release(self, issue_id: str, agent: str) -> str | None:
        """Best effort too: a lease left behind lapses by its TTL."""
        try:
            if self.leases is not None:
                self.leases.release(issue_id, agent)
        except TrackerError as exc:
            return f"this clone's jit lease of {issue_id[:8]} was left to lapse: {exc}"
        return None

    def given_up(self, issue_id: str, agent: str, written: bytes | None) -> bool:
        """The agent gave the issue back with jit in this clone, as local mode recognises it
        (docs/jit-format.md#agents-that-settle): its own `jit claim release` in the clone's claims
        log, or its copy of the issue (`written`, as the command left it) moved back to
        `ready`/`backlog` while the clone's lease is still its own."""
        if self.leases is None:
            return False
        try:
            if self.leases.given_up(issue_id, agent):
                return True
            holder = self.leases.holder(issue_id)
        except TrackerError:
            return False
        try:
            state = json.loads(written).get("state") if written else None
        except (ValueError, AttributeError):  # not JSON, or not an object: not a release
            return False
        return holder is not None and holder.agent == agent and state in (State.READY, State.BACKLOG)
