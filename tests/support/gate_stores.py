"""Stores with jit gate registries in the shapes the real jit stores have, built in the test.

Seed era (d4664f97): `{version, key, title, description, stage, mode, checker?, reserved, auto,
example_integration}`, checker `{type, command, timeout_seconds, working_dir, env}`. Newest
(13275b61): the checker gains `pass_context` (and optional `prompt`, `prompt_file`), the gate a
`priority` after the checker. Manual gates have no `checker` key in either era.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import GIT_IDENTITY
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

ERAS = ("seed", "newest")


def gate(
    era: str,
    key: str,
    stage: str,
    command: str | None = None,
    *,
    timeout: Any = 30,
    working_dir: Any = None,
    env: dict[str, str] | None = None,
    priority: int = 100,
    **checker_extra: Any,
) -> dict[str, Any]:
    """One registry entry: auto with `command`, manual without."""
    entry: dict[str, Any] = {
        "version": 1,
        "key": key,
        "title": key.title(),
        "description": f"the {key} gate",
        "stage": stage,
        "mode": "auto" if command is not None else "manual",
    }
    if command is not None:
        checker: dict[str, Any] = {
            "type": "exec",
            "command": command,
            "timeout_seconds": timeout,
            "working_dir": working_dir,
            "env": env or {},
        }
        if era == "newest":
            checker["pass_context"] = False
        checker.update(checker_extra)
        entry["checker"] = checker
    if era == "newest":
        entry["priority"] = priority
    entry.update({"reserved": {}, "auto": command is not None, "example_integration": None})
    return entry


def gated_repo(
    tmp_path: Path,
    era: str,
    gates: list[dict[str, Any]],
    *specs: NewIssue,
    before_store: Callable[[Path], None] | None = None,
) -> tuple[Path, list[str]]:
    """A git repository (one commit) whose `.jit/` holds `gates` and `specs`; returns (.jit, ids).

    `before_store(repo)` runs first, e.g. the real `jit init` of the era."""
    repo = tmp_path / f"repo-{era}"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    if before_store is not None:
        before_store(repo)
    store = JitStore.init(repo / ".jit")
    (store.root / "gates.json").write_text(json.dumps({"gates": {g["key"]: g for g in gates}}, indent=2))
    ids = store.create_issues(specs)
    if len(ids) > 1:  # the seed era's `jit validate` rejects issues outside the dependency graph
        store.create_issues([NewIssue("epic", labels=("type:epic",), dependencies=tuple(ids))])
    (repo / ".gitignore").write_text(".jit/**/*.lock\n")
    env = {**GIT_IDENTITY, "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", "seed"], check=True, env=env)
    return store.root, ids


def gate_runs(root: Path) -> list[dict[str, Any]]:
    """Every `gate-runs/<run_id>/result.json`, oldest first."""
    runs = [json.loads(p.read_text()) for p in (root / "gate-runs").glob("*/result.json")]
    return sorted(runs, key=lambda r: r["started_at"])
