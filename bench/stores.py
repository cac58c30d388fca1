"""Synthetic jit stores for bench/run.py, shaped like the real data (jit-format.md §12).

~2 KB per issue, 3-5 labels, 2-4 gates with their status, documents, a third with 1-3
dependencies; written in jit's exact bytes (`dumps_pretty(ordered_issue(...))`). Two shapes:

* `real`: the state mix of the real stores, mostly `done` with a few percent `ready`/`backlog`;
* `steady`: a store in steady state with much work queued, about a third `ready` or `backlog`;
  as jit leaves it, an issue is `backlog` only while one of its dependencies is unresolved.

Stores are cached under the results dir (keyed by size, shape and generator version).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from common import BenchError  # first: it makes jit_dispatch importable from the source tree
from jit_dispatch.domain import selection
from jit_dispatch.domain.issue import Gate, issue_from_raw
from jit_dispatch.trackers.jit.files import dumps_event, dumps_pretty, ordered_issue
from jit_dispatch.trackers.jit.store import JitStore

GENERATOR_VERSION = 1  # bump whenever the fixture's shape changes: it is part of the cache key

# Shapes and proportions from jit-format.md §12 (the seed-era and newest real stores).
STATE_WEIGHTS = {"done": 885, "rejected": 30, "ready": 35, "backlog": 30, "gated": 10, "in_progress": 10}
SHAPES = {
    "real": STATE_WEIGHTS,
    "steady": {"done": 600, "rejected": 20, "ready": 180, "backlog": 150, "gated": 25, "in_progress": 25},
}
PRIORITY_WEIGHTS = {"high": 55, "normal": 33, "low": 6, "critical": 6}
GATE_ORDER = ("tdd-reminder", "tests", "clippy", "fmt", "code-review")  # the add order seen in real files
GATE_REGISTRY = {
    "tests": ("All Tests Pass", "Full test suite must pass", "postcheck", "auto", "cargo test --lib", 300),
    "tdd-reminder": ("TDD Reminder", "Write tests first", "precheck", "manual", None, 0),
    "fmt": ("Code Formatted", "Code must be formatted with cargo fmt", "postcheck", "auto", "cargo fmt -- --check", 30),
    "code-review": ("Code Review", "Human review of changes", "postcheck", "manual", None, 0),
    "clippy": ("Clippy Lints Pass", "Zero clippy warnings", "postcheck", "auto", "cargo clippy -- -D warnings", 120),
}
ASSIGNEES = (
    "agent:claude",
    "agent:copilot-session",
    "agent:copilot",
    "copilot:cli-session",
    "agent:copilot-cli",
    "copilot:session-1",
    "human:erank",
    "agent:worker-1",
    "agent:worker-2",
    "ci:github-actions",
)
GATE_UPDATERS = ("auto:executor",) * 5 + (None, None, "human:erank", "agent:claude", "ci:github-actions")
TYPES = ("task",) * 14 + ("story",) * 3 + ("bug",) * 2 + ("epic",)
EPICS = (
    "production-stability",
    "parallel-work",
    "query-engine",
    "documents",
    "gates",
    "web-ui",
    "mcp-server",
    "storage-v2",
    "cli-ux",
    "observability",
    "search",
    "graph",
    "sync",
    "config",
    "onboarding",
    "performance",
)
COMPONENTS = ("storage", "cli", "core", "gates", "events", "query", "docs", "web", "mcp", "graph", "config", "sync")
MILESTONES = ("v0.1", "v0.2", "v0.3", "v0.5", "v1.0", "v1.1")
THINGS = (
    "lease renewal",
    "the claim coordinator",
    "the gate runner",
    "event log compaction",
    "index rebuilds",
    "worktree detection",
    "config loading",
    "short-id resolution",
    "the document archive",
    "label filters",
    "dependency graph export",
    "the JSON output envelope",
    "lock timeout handling",
    "status reporting",
    "bulk updates",
    "the query engine",
    "snapshot export",
    "the search index",
    "the issue view",
    "the MCP tool list",
    "asset resolution",
    "heartbeat files",
)
VERBS = ("Implement", "Add", "Fix", "Refactor", "Document", "Harden", "Support", "Migrate", "Optimize", "Validate")
IDENTS = (
    "JsonStorage::save_issue",
    "ClaimCoordinator",
    "WorktreePaths::detect()",
    "GateRunner::run_checks",
    "query_available",
    "EventLog::append",
    "IssueFilter",
    "resolve_short_id",
    "DocumentReference",
    "ConfigLoader::merge",
)
SENTENCES = (
    "{Verb} {thing} in the {component} layer so that parallel agents never observe a half-written state.",
    "Today `{ident}` re-reads every file on each call; cache the parsed result and invalidate it on write.",
    "The current behaviour is surprising when {thing} meets a missing dependency — fail with a clear error.",
    "Add regression tests covering {thing}, including the empty store and a store with {n} issues.",
    "Keep the on-disk format unchanged: older binaries must still read what we write.",
    "Measure before and after; the target is under {n} ms for a typical repository.",
    "See `dev/design/{slug}.md` for the trade-offs considered and the rejected alternatives.",
    "Errors must name the file and the field, and exit with a documented code (no panics).",
    "Update the CLI help text and the user guide section on {thing}.",
    "Coordinate with the {component} owners: this changes the contract of `{ident}`.",
    "Edge cases: concurrent writers, a stale lock file, unicode titles (é, ü, →) and very long labels.",
    "Once this lands, {thing} can be enabled by default behind the `{component}.{slug}` setting.",
    "Make the JSON output stable (sorted keys where order is not meaningful) so scripts can diff it.",
    "Document the migration path for repositories created before the {component} schema change.",
)
SECTIONS = ("## Goal", "## Context", "## Tasks", "## Acceptance Criteria", "## Notes", "## References")
DOC_KINDS = (
    ("dev/design", "Design Document", "design"),
    ("dev/plans", "Implementation Plan", "implementation-plan"),
    ("dev/studies", "Study", "analysis"),
    ("dev/sessions", "Session Notes", None),
)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _timestamp(ns: int, rng: random.Random, plus_zero: float = 0.0) -> str:
    """jit's RFC 3339 styles: `Z` with 9 fraction digits, sometimes `+00:00` (docs/jit-format.md#timestamps)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{fraction:09d}" + ("+00:00" if rng.random() < plus_zero else "Z")


def _slug(rng: random.Random) -> str:
    return "-".join(rng.choice(THINGS).replace("the ", "").split()[:2]).lower()


def _description(rng: random.Random) -> str:
    """Markdown of a realistic length: median ~0.9 KB, long tail to ~6 KB (the real files' shape)."""
    target = min(6000, max(150, int(rng.lognormvariate(math.log(850), 0.55))))
    parts: list[str] = []
    length = 0
    sections = iter(SECTIONS)
    while length < target:
        if parts and rng.random() < 0.3 and (heading := next(sections, None)):
            parts.append(f"\n\n{heading}\n\n")
        words = {
            "Verb": rng.choice(VERBS),
            "thing": rng.choice(THINGS),
            "component": rng.choice(COMPONENTS),
            "ident": rng.choice(IDENTS),
            "n": rng.choice((10, 50, 100, 200, 500, 1000)),
            "slug": _slug(rng),
        }
        sentence = rng.choice(SENTENCES).format(**words)
        parts.append(f"\n- {sentence}" if rng.random() < 0.3 else sentence + ("\n" if rng.random() < 0.2 else " "))
        length += len(parts[-1])
    return "".join(parts).strip()


def _documents(rng: random.Random, short: str) -> list[dict]:
    docs = []
    for _ in range(rng.choice((1, 1, 1, 2))):
        folder, label, doc_type = rng.choice(DOC_KINDS)
        doc: dict = {
            "path": f"{folder}/{_slug(rng)}-{short}.md",
            "commit": f"{rng.getrandbits(160):040x}" if rng.random() < 0.1 else None,
            "label": label,
            "doc_type": doc_type,
        }
        if rng.random() < 0.9:
            doc["format"] = "markdown"
        if rng.random() < 0.15:
            doc["assets"] = [
                {
                    "original_path": f"https://example.org/{_slug(rng)}/{n}",
                    "resolved_path": None,
                    "asset_type": "external",
                    "mime_type": None,
                    "content_hash": None,
                    "is_shared": False,
                }
                for n in range(rng.randint(1, 4))
            ]
        docs.append(doc)
    return docs


def _gates_status(rng: random.Random, gates: list[str], state: str, ns: int) -> dict:
    if state in ("ready", "backlog"):
        return {}  # what the real ready/backlog issues carry
    if state == "in_progress":
        keys = [g for g in gates if GATE_REGISTRY[g][2] == "precheck"]
    elif state == "rejected":
        keys = [g for g in gates if rng.random() < 0.4]
    else:
        keys = list(gates)
    status: dict[str, dict] = {}
    for key in rng.sample(keys, len(keys)):  # jit writes a HashMap: random key order
        value = "passed"
        if state == "gated" and key == "code-review":
            value = "pending"
        elif state == "gated" and rng.random() < 0.2:
            value = "failed"
        ns_gate = ns + rng.randrange(10**9, 3600 * 10**9)
        status[key] = {"status": value, "updated_by": rng.choice(GATE_UPDATERS), "updated_at": _timestamp(ns_gate, rng)}
    return status


def generate_issues(size: int, rng: random.Random, weights: dict[str, int] = STATE_WEIGHTS) -> list[dict]:
    """Issues in creation order; dependencies point at earlier issues only (no cycles, none dangling).

    A `backlog` issue waits on an earlier unresolved one (without one it is `ready`); other
    issues depend only on resolved ones, so the store is as jit leaves it.
    """
    ids = [_uuid(rng) for _ in range(size)]
    states = rng.choices(list(weights), weights=list(weights.values()), k=size)
    priorities = rng.choices(list(PRIORITY_WEIGHTS), weights=list(PRIORITY_WEIGHTS.values()), k=size)
    resolved: list[int] = []  # indexes of earlier done/rejected issues
    unresolved: list[int] = []
    ns = int(datetime(2025, 11, 1, tzinfo=UTC).timestamp()) * 10**9
    issues = []
    for i, issue_id in enumerate(ids):
        ns += rng.randrange(20 * 10**9, 1200 * 10**9)
        state = states[i]
        deps: set[int] = set()
        if state == "backlog":
            if unresolved:
                deps.add(rng.choice(unresolved[-200:]))
            else:
                state = "ready"
        if resolved and (deps or rng.random() < 1 / 3):
            for _ in range(rng.randint(0 if deps else 1, 3 - len(deps))):
                deps.add(rng.choice(resolved[-500:]))
        (resolved if state in ("done", "rejected") else unresolved).append(i)
        gates = [g for g in GATE_ORDER if g == "code-review" or rng.random() < 0.5]
        while len(gates) < 2:
            gates = [g for g in GATE_ORDER if g == "code-review" or rng.random() < 0.5]
        gates = gates if len(gates) <= 4 else gates[1:]
        labels = [f"type:{rng.choice(TYPES)}", f"epic:{rng.choice(EPICS)}", f"component:{rng.choice(COMPONENTS)}"]
        if rng.random() < 0.8:
            labels.append(f"milestone:{rng.choice(MILESTONES)}")
        if state == "rejected":
            labels.append(f"resolution:{rng.choice(('duplicate', 'wont-fix', 'obsolete'))}")
        elif rng.random() < 0.1:
            labels.append(f"story:{_slug(rng)}")
        if state in ("done", "in_progress") or (state in ("gated", "rejected") and rng.random() < 0.5):
            assignee = rng.choice(ASSIGNEES) if state == "in_progress" or rng.random() < 0.7 else None
        else:
            assignee = None
        created = _timestamp(ns, rng, plus_zero=0.05)
        updated_ns = ns + (rng.randrange(10**9, 30 * 86400 * 10**9) if state != "ready" else 0)
        issues.append(
            {
                "id": issue_id,
                "title": f"{rng.choice(VERBS)} {rng.choice(THINGS)}"
                + (f" ({rng.choice(COMPONENTS)})" if rng.random() < 0.3 else ""),
                "description": _description(rng),
                "state": state,
                "priority": priorities[i],
                "assignee": assignee,
                "dependencies": [ids[d] for d in sorted(deps)],
                "gates_required": gates,
                "gates_status": _gates_status(rng, gates, state, ns),
                "context": {},
                "documents": _documents(rng, issue_id[:8]) if rng.random() < 0.36 else [],
                "labels": labels,
                "created_at": created,
                "updated_at": _timestamp(updated_ns, rng, plus_zero=0.1),
            }
        )
    return issues


def gates_json() -> dict:
    gates = {}
    for key, (title, description, stage, mode, command, timeout) in GATE_REGISTRY.items():
        gate: dict = {"version": 1, "key": key, "title": title, "description": description, "stage": stage}
        gate["mode"] = mode
        if command:
            gate["checker"] = {
                "type": "exec",
                "command": command,
                "timeout_seconds": timeout,
                "working_dir": None,
                "env": {},
            }
        gate.update(reserved={}, auto=mode == "auto", example_integration=None)
        gates[key] = gate
    return {"gates": gates}


def pick_target(issues: list[dict]) -> tuple[str, list[str]]:
    """Make the benchmark deterministic: the issue `once` takes completes as `done` and unblocks one.

    The dispatcher's own selection names the first dispatchable issue; its gates are all marked
    passed (so the run settles `done`, the path that goes on to promote backlog issues), and the
    first backlog issue is made to wait on it alone.
    """
    states = {raw["id"]: raw["state"] for raw in issues}
    by_id = {raw["id"]: raw for raw in issues}
    registry = {k: Gate(k, v[2], v[3]) for k, v in GATE_REGISTRY.items()}
    ready = [issue_from_raw(raw) for raw in issues if raw["state"] == "ready"]
    plan = selection.plan(ready, states, registry, selection.Filters(), run_gates=False)  # gates left to jit
    if plan.dispatchable:
        target = by_id[plan.dispatchable[0].id]
    elif ready:  # every ready issue held by the manual precheck: release one
        target = by_id[ready[0].id]
    else:
        raise BenchError("the generated store has no ready issue; use a larger size")
    passed_at = target["created_at"].replace("+00:00", "Z")
    target["gates_status"] = {
        key: {"status": "passed", "updated_by": "auto:executor", "updated_at": passed_at}
        for key in target["gates_required"]
    }
    promoted = []
    for raw in issues:
        if raw["state"] == "backlog":
            raw["dependencies"] = [target["id"], *(d for d in raw["dependencies"] if states[d] in ("done", "rejected"))]
            promoted.append(raw["id"])
            break
    return target["id"], promoted


@dataclass
class Fixture:
    root: Path  # the .jit directory
    size: int
    shape: str
    target: str  # the issue `once` claims
    stats: dict = field(default_factory=dict)


def build_store(root: Path, size: int, shape: str = "real") -> dict:
    """Write a synthetic store at `root` (a `.jit` path); returns its description."""
    started = time.perf_counter()
    rng = random.Random(f"jit-dispatch-bench-{size}" if shape == "real" else f"jit-dispatch-bench-{shape}-{size}")
    issues = generate_issues(size, rng, SHAPES[shape])
    target, promoted = pick_target(issues)
    JitStore.init(root)  # layout as `jit init` makes it; the files below replace its empty ones
    sizes = []
    for raw in issues:
        data = dumps_pretty(ordered_issue(raw)).encode("utf-8")
        (root / "issues" / f"{raw['id']}.json").write_bytes(data)
        sizes.append(len(data))
    (root / "index.json").write_text(
        dumps_pretty({"schema_version": 2, "all_ids": [raw["id"] for raw in issues], "deleted_ids": []}),
        encoding="utf-8",
    )
    (root / "gates.json").write_text(dumps_pretty(gates_json()), encoding="utf-8")
    with open(root / "events.jsonl", "w", encoding="utf-8") as events:
        for raw in issues:  # the dispatcher only appends here; one creation event per issue is enough
            event = {"type": "issue_created", "id": _uuid(rng), "issue_id": raw["id"]}
            event.update(timestamp=raw["created_at"], title=raw["title"], priority=raw["priority"])
            events.write(dumps_event(event) + "\n")
    states = Counter(raw["state"] for raw in issues)
    return {
        "generator_version": GENERATOR_VERSION,
        "size": size,
        "shape": shape,
        "target": target,
        "promoted": promoted,
        "states": dict(states.most_common()),
        "with_dependencies": sum(1 for raw in issues if raw["dependencies"]),
        "file_bytes_median": int(statistics.median(sizes)),
        "file_bytes_mean": int(statistics.fmean(sizes)),
        "file_bytes_total": sum(sizes),
        "build_seconds": round(time.perf_counter() - started, 2),
    }


def cached_store(results: Path, size: int, shape: str = "real") -> Fixture:
    """The store of `size` issues of `shape` from the cache, built on first use."""
    key = f"{size}-v{GENERATOR_VERSION}" if shape == "real" else f"{size}-{shape}-v{GENERATOR_VERSION}"
    home = results / "stores" / key
    meta_path = home / "bench-store.json"
    if not meta_path.is_file():
        home.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{size}-building-", dir=home.parent))
        print(f"building a {size}-issue {shape} store in {home} …", flush=True)
        try:
            meta = build_store(building / ".jit", size, shape)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        (building / "bench-store.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            building.rename(home)
        except OSError:  # another run built it meanwhile, or a stale copy without metadata
            shutil.rmtree(home, ignore_errors=True)
            building.rename(home)
    meta = json.loads(meta_path.read_text())
    return Fixture(home / ".jit", size, shape, meta["target"], meta)
