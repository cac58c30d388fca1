"""The agent's own `jit` writes, carried from the workspace's `.jit/` to the state branch (remote mode;
docs/delivery.md#when-the-agent-writes-jit-itself).

The run's result ref carries them: its commit's tree holds, for each file the command wrote,
`base/<path>` (as it was put into the workspace) and `agent/<path>` (as the command left it).
The fold applies them just before the result's settle (as in local mode, where the settle is
written on the issue as the agent left it), as a three-way merge on what the branch holds then,
so nothing another runner folded meanwhile is overwritten; a fenced-out result carries nothing:

* `events.jsonl`: the agent's new lines are appended.
* `index.json`: ids the agent added (or deleted) are added to the current lists.
* `issues/<id>.json`: a new issue is written as jit wrote it; a changed one gets the fields the
  agent changed (keys of `context` and `gates_status` one by one), except, on the dispatched
  issue, the fields the settle owns (`state`, `assignee`, `updated_at`, `dispatch.*`).
* `gate-runs/<run>/result.json`: a new run record is written as jit wrote it.

Anything else the command wrote in `.jit/` (gates.json, config) is not carried; the run says so.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from jit_dispatch.trackers.jit.files import atomic_write, dumps_pretty, ordered_issue
from jit_dispatch.trackers.jit.store import JitStore

BASE, AGENT = "base/", "agent/"
Writes = dict[str, tuple[bytes | None, bytes | None]]  # path in .jit/ → (as put there, as the command left it)
_CARRIED = re.compile(
    r"^(events\.jsonl|index\.json|issues/[0-9a-f-]{1,64}\.json|gate-runs/[A-Za-z0-9._-]{1,128}/result\.json)$"
)
_SETTLED = ("state", "assignee", "updated_at")  # the dispatched issue's fields the settle owns
_MERGED_BY_KEY = ("context", "gates_status")


def carried(path: str) -> bool:
    """Whether a write of this store path reaches the state branch (the rest stay in the workspace)."""
    return _CARRIED.match(path) is not None and ".." not in path


def tree_files(writes: Writes) -> dict[str, bytes]:
    """The result commit's tree: `base/…` and `agent/…` for each carried write."""
    files: dict[str, bytes] = {}
    for path, (base, agent) in writes.items():
        if base is not None:
            files[BASE + path] = base
        if agent is not None:
            files[AGENT + path] = agent
    return files


def from_tree(files: dict[str, bytes]) -> Writes:
    """The writes a result commit's tree carries (paths not carried are left out)."""
    writes: Writes = {}
    for name, data in files.items():
        side, _, path = name.partition("/")
        if not carried(path) or side + "/" not in (BASE, AGENT):
            continue
        base, agent = writes.get(path, (None, None))
        writes[path] = (data, agent) if side + "/" == BASE else (base, data)
    return writes


def apply(store: JitStore, issue_id: str, writes: Writes) -> dict[Path, bytes | None]:
    """Merge the agent's writes into `store`, before the settle of `issue_id` is applied (which then
    wins for its own fields, as in local mode). What the files held before, for `undo`."""
    before: dict[Path, bytes | None] = {}
    for path, (base, agent) in sorted(writes.items()):
        target = store.root / path
        if target.is_symlink() or any(p.is_symlink() for p in target.parents if store.root in p.parents):
            continue
        current = target.read_bytes() if target.is_file() else None
        if path == "events.jsonl":
            lines = _new_events(base or b"", agent or b"")
            if lines:
                before[target] = current
                store.append_event_lines(lines)
            continue
        merged = _merged(path, base, agent, current, issue_id)
        if merged is None or merged == current:
            continue
        before[target] = current
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, merged.decode("utf-8"))
        store.changed.add(target)
    if any(path.startswith("issues/") for path in writes):
        store.forget_view()
    return before


def undo(store: JitStore, before: dict[Path, bytes | None]) -> None:
    """Put back what `apply` changed (its result was fenced out: nothing of it is folded)."""
    for target, data in before.items():
        if data is None:
            target.unlink(missing_ok=True)
        else:
            atomic_write(target, data.decode("utf-8"))


def _merged(path: str, base: bytes | None, agent: bytes | None, current: bytes | None, issue_id: str) -> bytes | None:
    """The file's new content, or None to leave it as it is."""
    if agent is None:  # the agent deleted it: jit never deletes these files; nothing to carry
        return None
    dispatched = path == f"issues/{issue_id}.json"
    if (current is None or current == base) and not dispatched:
        return agent  # new, or changed by nobody else meanwhile: as jit wrote it
    if base is None or current is None:  # created by the agent and by someone else meanwhile: theirs stands
        return None
    try:
        was, now, cur = (json.loads(data) for data in (base, agent, current))
    except ValueError:
        return None
    if not all(isinstance(d, dict) for d in (was, now, cur)):
        return None
    if path == "index.json":
        return dumps_pretty(_merged_index(was, now, cur)).encode()
    if path.startswith("issues/"):
        return dumps_pretty(ordered_issue(_merged_issue(was, now, cur, dispatched))).encode()
    return None


def _merged_index(was: dict[str, Any], now: dict[str, Any], cur: dict[str, Any]) -> dict[str, Any]:
    for key in ("all_ids", "deleted_ids"):
        added = [i for i in now.get(key, []) if i not in was.get(key, [])]
        if added:
            cur[key] = [*cur.get(key, []), *(i for i in added if i not in cur.get(key, []))]
    return cur


def _merged_issue(was: dict[str, Any], now: dict[str, Any], cur: dict[str, Any], dispatched: bool) -> dict[str, Any]:
    """`cur` with the fields the agent changed from `was` to `now`; on the dispatched issue, the
    settle's own fields stay the settle's."""
    for key in now.keys() | was.keys():
        if now.get(key) == was.get(key) or (dispatched and key in _SETTLED):
            continue
        if key in _MERGED_BY_KEY and isinstance(now.get(key), dict) and isinstance(cur.get(key), dict):
            old, new, merged = was.get(key) or {}, now[key], dict(cur[key])
            for sub in new.keys() | old.keys():
                if new.get(sub) == old.get(sub) or (dispatched and key == "context" and sub.startswith("dispatch.")):
                    continue
                if sub in new:
                    merged[sub] = new[sub]
                else:
                    merged.pop(sub, None)
            cur[key] = merged
        elif key in now:
            cur[key] = now[key]
        else:
            cur.pop(key, None)
    if not dispatched and str(now.get("updated_at", "")) > str(cur.get("updated_at", "")):
        cur["updated_at"] = now["updated_at"]
    return cur


def _new_events(base: bytes, agent: bytes) -> list[str]:
    """The lines the agent appended (all its lines not in the copy put there, when it rewrote the file)."""
    if agent.startswith(base):
        lines = agent[len(base) :].decode("utf-8", errors="replace").splitlines()
    else:
        before = set(base.splitlines())
        lines = [line.decode("utf-8", errors="replace") for line in agent.splitlines() if line not in before]
    return [line for line in lines if line.strip()]


def read_writes(before: dict[str, bytes], after: dict[str, bytes], wrote: list[str]) -> Writes:
    """The carried writes among the paths `wrote`: (as put there, as the command left it)."""
    return {path: (before.get(path), after.get(path)) for path in wrote if carried(path)}
