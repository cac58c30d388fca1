#!/usr/bin/env python3
"""Benchmark `jit-dispatch once` as users run it: a whole process, against a floor.

    .venv/bin/python bench/run.py                        # full run, ~4 min on 2 cores → bench/results/latest.md
    .venv/bin/python bench/run.py --quick                # smoke run, seconds → bench/results/quick.md
    .venv/bin/python bench/run.py --sizes 1000,10000 --runs 9 --profile 10000
    .venv/bin/python bench/run.py --rev HEAD~3             # the package as committed at a revision

What it measures (every figure is a median of alternating runs, after one warm-up of each side):

1. Scale. Synthetic stores of 1k/10k/50k issues shaped like the real data (jit-format.md §12):
   ~2 KB per issue, 3-5 labels, 2-4 gates with their status, documents, a third with 1-3
   dependencies, mostly `done` with a few percent `ready`/`backlog`; written in jit's exact
   bytes (`dumps_pretty(ordered_issue(...))`). `jit-dispatch once --command true` claims and
   completes the top issue (outcome `done`, which also promotes the backlog issues it unblocks),
   against the floor: `python -c` that json-parses every issue file listed in index.json, same
   interpreter.
   Stores are cached under bench/results/stores/ (keyed by size and generator version); each
   measured dispatch runs on a working copy that is put back to the cached bytes afterwards.
2. Overhead on the real 175-issue store: `once --command 'sleep 0.5'` minus `bash -c 'sleep 0.5'`.
3. Peak RSS (`os.wait4` ru_maxrss: the dispatcher and its children) while the command prints
   200 MB, against the same run with a tiny output.

The measured processes import a frozen copy of the package (the working tree at start, or
`--rev`), so edits made to src/ during a run do not mix into it. Bytecode is cached under the
results dir even if PYTHONDONTWRITEBYTECODE is set (an installed package has its .pyc files;
`--no-pyc-cache` measures without). Page caches cannot be dropped without root, so all figures
are warm-cache figures; the load average is recorded, as other work on the machine skews them.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    from jit_dispatch import selection
    from jit_dispatch.jit_store import JitStore
    from jit_dispatch.jitfiles import dumps_event, dumps_pretty, ordered_issue
    from jit_dispatch.models import Gate, issue_from_raw
except ImportError:  # run by a python without the package installed: use the source tree
    sys.path.insert(0, str(ROOT / "src"))
    from jit_dispatch import selection
    from jit_dispatch.jit_store import JitStore
    from jit_dispatch.jitfiles import dumps_event, dumps_pretty, ordered_issue
    from jit_dispatch.models import Gate, issue_from_raw

GENERATOR_VERSION = 1  # bump whenever the fixture's shape changes: it is part of the cache key
DEFAULT_SIZES = (1000, 10000, 50000)
SEED_STORE = ROOT.parent / "shared" / "fixtures" / "jit-repo-seed-era" / ".jit"
BIG_OUTPUT_BYTES = 200_000_000
QUICK_OUTPUT_BYTES = 20_000_000
SLEEP_SECONDS = 0.5
OVERHEAD_TARGET_SECONDS = 0.3

# The floor: read index.json, json-parse every issue file it lists, keep nothing (keeping 50k parsed
# issues alive doubles the time through allocation and the cyclic GC; the dispatcher keeps no such list).
FLOOR_CODE = (
    "import collections,json,os,sys;d=sys.argv[1];"
    "collections.deque((json.loads(open(os.path.join(d,'issues',i+'.json'),'rb').read())"
    " for i in json.load(open(os.path.join(d,'index.json')))['all_ids']),maxlen=0)"
)


OUTCOME_LINE = re.compile(r"^jit-dispatch: (done|gated|released|parked|lost|idle|error)\b", re.MULTILINE)


class BenchError(Exception):
    pass


# ===================================================================== synthetic stores

# Shapes and proportions from jit-format.md §12 (the seed-era and newest real stores).
STATE_WEIGHTS = {"done": 885, "rejected": 30, "ready": 35, "backlog": 30, "gated": 10, "in_progress": 10}
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
    """jit's RFC 3339 styles: `Z` with 9 fraction digits, sometimes `+00:00` (jit-format §3.3)."""
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


def generate_issues(size: int, rng: random.Random) -> list[dict]:
    """Issues in creation order; dependencies point at earlier issues only (no cycles, none dangling)."""
    ids = [_uuid(rng) for _ in range(size)]
    states = rng.choices(list(STATE_WEIGHTS), weights=list(STATE_WEIGHTS.values()), k=size)
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
    plan = selection.plan(ready, states, registry, selection.Filters())
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
    target: str  # the issue `once` claims
    stats: dict = field(default_factory=dict)


def build_store(root: Path, size: int) -> dict:
    """Write a synthetic store at `root` (a `.jit` path); returns its description."""
    started = time.perf_counter()
    rng = random.Random(f"jit-dispatch-bench-{size}")
    issues = generate_issues(size, rng)
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
        "target": target,
        "promoted": promoted,
        "states": dict(states.most_common()),
        "with_dependencies": sum(1 for raw in issues if raw["dependencies"]),
        "file_bytes_median": int(statistics.median(sizes)),
        "file_bytes_mean": int(statistics.fmean(sizes)),
        "file_bytes_total": sum(sizes),
        "build_seconds": round(time.perf_counter() - started, 2),
    }


def cached_store(results: Path, size: int) -> Fixture:
    """The store of `size` issues from the cache, built on first use."""
    home = results / "stores" / f"{size}-v{GENERATOR_VERSION}"
    meta_path = home / "bench-store.json"
    if not meta_path.is_file():
        home.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{size}-building-", dir=home.parent))
        print(f"building a {size}-issue store in {home} …", flush=True)
        try:
            meta = build_store(building / ".jit", size)
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
    return Fixture(home / ".jit", size, meta["target"], meta)


class WorkingCopy:
    """A copy of a cached store, put back to the cached bytes after every run that writes it.

    Every jit write renames a whole file into place (new inode) or appends to events.jsonl, so
    comparing (inode, size, mtime) with the state after the copy finds each changed file cheaply.
    """

    def __init__(self, source: Path, target: Path) -> None:
        self.source = source
        self.root = target
        shutil.copytree(source, target, copy_function=shutil.copyfile)
        self.events_size = (target / "events.jsonl").stat().st_size
        self.manifest = {sub: self._scan(sub) for sub in ("", "issues")}

    def _scan(self, sub: str) -> dict[str, tuple[int, int, int, bool]]:
        found = {}
        with os.scandir(self.root / sub) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                found[entry.name] = (entry.inode(), st.st_size, st.st_mtime_ns, entry.is_dir(follow_symlinks=False))
        return found

    def restore(self) -> int:
        """Undo every change since the copy; the number of entries put back."""
        changed = 0
        for sub, before in self.manifest.items():
            now = self._scan(sub)
            for name, sig in now.items():
                path = self.root / sub / name
                if sig == before.get(name) or (sub == "" and name == "issues"):
                    continue
                changed += 1
                if name not in before:  # lock files, temp files
                    shutil.rmtree(path) if sig[3] else path.unlink()
                elif sub == "" and name == "events.jsonl" and sig[0] == before[name][0]:
                    os.truncate(path, self.events_size)  # appended in place
                else:
                    tmp = path.with_name(path.name + ".bench-restore")
                    shutil.copyfile(self.source / sub / name, tmp)
                    os.replace(tmp, path)
            for name in before.keys() - now.keys():
                changed += 1
                shutil.copyfile(self.source / sub / name, self.root / sub / name)
            if changed:
                self.manifest[sub] = self._scan(sub)
        return changed


# ===================================================================== measuring


def clean_env(pycache: Path | None) -> dict[str, str]:
    """No GitHub Actions or jit settings of the caller leak into the measured runs.

    With `pycache`, bytecode is cached there (src/ stays untouched) even when the caller set
    PYTHONDONTWRITEBYTECODE: an installed package has its .pyc files, so users do not pay for
    compiling the dispatcher's modules on every run.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "JIT_", "RUNNER_"))}
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def bytecode_note(env: dict[str, str]) -> str:
    if env.get("PYTHONPYCACHEPREFIX") and not env.get("PYTHONDONTWRITEBYTECODE"):
        return f"cached in {env['PYTHONPYCACHEPREFIX']} (as an installed package has its .pyc files)"
    if env.get("PYTHONDONTWRITEBYTECODE"):
        return "as the environment has it: PYTHONDONTWRITEBYTECODE=1, uncached modules are compiled on every run"
    return "as the environment has it"


def dispatcher_argv(override: str | None) -> list[str]:
    """The console script users run (prefer the project's venv), else `python -m jit_dispatch`."""
    if override:
        return [override]
    for candidate in (ROOT / ".venv" / "bin" / "jit-dispatch", Path(sys.executable).parent / "jit-dispatch"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    return [sys.executable, "-m", "jit_dispatch"]


def interpreter_of(argv: list[str]) -> str:
    """The python the dispatcher runs on (the console script's shebang), for a same-interpreter floor."""
    if len(argv) > 1:
        return argv[0]
    with open(argv[0], "rb") as script:
        first = script.readline().decode(errors="replace").strip()
    if first.startswith("#!") and "python" in first:
        words = first[2:].split()
        return words[-1] if words[0].endswith("/env") else words[0]
    return sys.executable


@dataclass
class Run:
    seconds: float
    stdout: str


def run_timed(
    argv: Sequence[str],
    env: dict[str, str],
    expect: Callable[[Run], str | None] | None = None,
    ok_codes: tuple[int, ...] = (0,),
) -> Run:
    started = time.perf_counter()
    proc = subprocess.run(list(argv), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    run = Run(time.perf_counter() - started, proc.stdout)
    problem = f"exit code {proc.returncode}" if proc.returncode not in ok_codes else (expect(run) if expect else None)
    if problem:
        shown = " ".join(argv)
        raise BenchError(f"{shown}: {problem}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}")
    return run


def alternate(
    a: Callable[[], float], b: Callable[[], float], runs: int, label: str = ""
) -> tuple[list[float], list[float]]:
    """One warm-up of each, then A B A B …; the raw times of each side."""
    a()
    b()
    times_a: list[float] = []
    times_b: list[float] = []
    for i in range(runs):
        times_a.append(a())
        times_b.append(b())
        if label:
            print(f"  {label} {i + 1}/{runs}: {times_a[-1]:.3f}s / {times_b[-1]:.3f}s", flush=True)
    return times_a, times_b


def done_check(target: str) -> Callable[[Run], str | None]:
    """Each measured dispatch must do the same work: claim the target and settle `done`."""
    wanted = f"jit-dispatch: done {target[:8]}"

    def check(run: Run) -> str | None:
        return None if wanted in run.stdout else f"expected {wanted!r} in the output"

    return check


@dataclass
class ScaleRow:
    size: int
    stats: dict
    runs: int
    dispatch: list[float]
    floor: list[float]


def bench_scale(fixture: Fixture, work: Path, runs: int, cmd: list[str], python: str, env: dict) -> ScaleRow:
    copy = WorkingCopy(fixture.root, work / f"scale-{fixture.size}" / ".jit")
    store = str(copy.root)
    check = done_check(fixture.target)

    def dispatch() -> float:
        run = run_timed([*cmd, "once", "--agent", "bench", "--command", "true", "--jit-dir", store], env, check)
        if copy.restore() < 2:
            raise BenchError("the dispatch changed fewer files than a claim and a completion write")
        return run.seconds

    def floor() -> float:
        return run_timed([python, "-c", FLOOR_CODE, store], env).seconds

    times_d, times_f = alternate(dispatch, floor, runs, label=f"{fixture.size} issues: dispatch / floor")
    shutil.rmtree(copy.root.parent)
    return ScaleRow(fixture.size, fixture.stats, runs, times_d, times_f)


@dataclass
class OverheadResult:
    runs: int
    dispatch: list[float]
    shell: list[float]
    outcome: str


def bench_overhead(seed: Path, work: Path, runs: int, cmd: list[str], env: dict) -> OverheadResult:
    sleep = f"sleep {SLEEP_SECONDS:g}"
    outcomes: Counter[str] = Counter()

    def dispatch() -> float:
        target = work / "seed" / ".jit"
        shutil.rmtree(target.parent, ignore_errors=True)
        shutil.copytree(seed, target, copy_function=shutil.copyfile)  # plain copies: writable
        argv = [*cmd, "once", "--agent", "bench", "--command", sleep, "--jit-dir", str(target)]
        run = run_timed(argv, env, ok_codes=(0, 1))  # 1: the command "failed"; still a whole dispatch, counted
        found = OUTCOME_LINE.findall(run.stdout)
        outcome = found[-1] if found else "?"
        if outcome not in ("done", "gated"):
            reason = re.search(r"^\s*reason: (.*)$", run.stdout, re.MULTILINE)
            outcome += f" ({reason.group(1).strip()})" if reason else ""
        outcomes[outcome] += 1
        return run.seconds

    def shell() -> float:
        return run_timed(["bash", "-c", sleep], env).seconds

    times_d, times_s = alternate(dispatch, shell, runs, label="real store: dispatch / bash")
    shutil.rmtree(work / "seed", ignore_errors=True)
    shown = ", ".join(f"{name} ×{count}" for name, count in outcomes.most_common())
    return OverheadResult(runs, times_d, times_s, f"{shown} (warm-up included)")


@dataclass
class RssResult:
    label: str
    output_bytes: int
    max_rss_kb: int
    seconds: float


# A child's ru_maxrss also counts the process it was forked from: at exec, Linux keeps the
# high-water RSS of the image being replaced (a copy of the forking parent). So the bench, itself
# tens of MB by now, does not fork the dispatcher; this small helper (`python -I -S`, ~5 MB) does,
# and reports os.wait4's ru_maxrss: the dispatcher's own peak, or its children's if larger.
RSS_HELPER = """
import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)} {time.perf_counter() - started}")
"""


def peak_rss(argv: list[str], env: dict, scratch: Path) -> tuple[int, float]:
    """ru_maxrss (KiB on Linux) of `argv` and its waited-for descendants, and its wall time."""
    result = scratch / "rss-result.txt"
    with open(scratch / "rss-stderr.txt", "w+b") as errors:
        helper = [sys.executable, "-I", "-S", "-c", RSS_HELPER, str(result), *argv]
        subprocess.run(helper, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, check=True)
        max_rss, code, seconds = result.read_text().split()
        if int(code):
            errors.seek(0)
            raise BenchError(f"{' '.join(argv)}: exit code {code}: {errors.read()[-2000:]!r}")
    return int(max_rss), float(seconds)


def bench_rss(fixture: Fixture, work: Path, cmd: list[str], env: dict, output_bytes: int, runs: int) -> list[RssResult]:
    copy = WorkingCopy(fixture.root, work / "rss" / ".jit")
    big = f'yes "some line of output 0123456789" | head -c {output_bytes}'
    once = [*cmd, "once", "--agent", "bench", "--jit-dir", str(copy.root), "--command"]
    cases = [
        ("the measuring helper alone (execs `true`): the floor of this measure", ["true"], 0),
        ("tiny output (`true`)", [*once, "true"], 0),
        (f"{output_bytes / 1e6:g} MB of output", [*once, big], output_bytes),
    ]
    results = []
    for label, argv, size in cases:
        samples = []
        for _ in range(runs):
            samples.append(peak_rss(argv, env, work))
            copy.restore()
        rss = max(s[0] for s in samples)
        results.append(RssResult(label, size, rss, statistics.median(s[1] for s in samples)))
    shutil.rmtree(copy.root.parent)
    return results


def bench_startup(cmd: list[str], python: str, env: dict, runs: int) -> tuple[list[float], list[float]]:
    """`jit-dispatch --version` (imports the whole CLI, touches no store) against `python -c 'import json'`."""
    return alternate(
        lambda: run_timed([*cmd, "--version"], env).seconds,
        lambda: run_timed([python, "-c", "import json"], env).seconds,
        runs,
    )


def profile_dispatch(fixture: Fixture, work: Path, python: str, env: dict, results: Path) -> str:
    """cProfile of one `once` on the store (after a warm run); the top functions by cumulative time."""
    import pstats  # only here: most runs do not profile

    copy = WorkingCopy(fixture.root, work / "profile" / ".jit")
    out = results / f"profile-{fixture.size}.pstats"
    argv = [python, "-m", "cProfile", "-o", str(out), "-m", "jit_dispatch", "once", "--agent", "bench"]
    argv += ["--command", "true", "--jit-dir", str(copy.root)]
    for _ in range(2):
        run_timed(argv, env, done_check(fixture.target))
        copy.restore()
    shutil.rmtree(copy.root.parent)
    text = io.StringIO()
    stats = pstats.Stats(str(out), stream=text)
    stats.sort_stats("cumulative").print_stats("jit_dispatch", 20)  # the package's own functions
    stats.sort_stats("tottime").print_stats(15)  # where the time is actually spent
    return "\n".join(line for line in text.getvalue().splitlines() if not line.startswith(("   Ordered", "   List")))


# ===================================================================== report


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def machine() -> dict[str, str]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = str(len(os.sched_getaffinity(0)))
    except AttributeError:
        nproc = str(os.cpu_count())
    return {
        "nproc": nproc,
        "cpu": cpu or platform.processor() or "?",
        "os": f"{platform.system()} {platform.release()}",
    }


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def snapshot_code(work: Path, rev: str | None) -> tuple[Path, str]:
    """A frozen copy of the package to measure: the working tree now, or `rev` as committed.

    Others may edit src/ while a run takes minutes; every measured process imports this copy
    (it goes first on PYTHONPATH, ahead of the editable install's path).
    """
    target = work / "code"
    package = Path("src") / "jit_dispatch"
    if rev is None:
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))
        try:
            head = _git("rev-parse", "--short", "HEAD")
            dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "src")
        except (OSError, subprocess.CalledProcessError):
            return target / "src", "working tree (not a git checkout?)"
        return target / "src", f"working tree at start: HEAD {head}" + (
            ", src/ with uncommitted changes" if dirty else ""
        )
    try:
        sha = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", sha, str(package)], capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BenchError(f"--rev {rev}: not a commit of {ROOT} ({exc})") from None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        try:
            tar.extractall(target, filter="data")
        except TypeError:  # Python < 3.11.4: no extraction filters (our own repository's archive)
            tar.extractall(target)
    return target / "src", f"{rev} as committed ({sha[:10]})"


def render(
    *,
    argv: list[str],
    cmd: list[str],
    python: str,
    python_version: str,
    scale: list[ScaleRow],
    startup: tuple[list[float], list[float]] | None,
    overhead: OverheadResult | None,
    overhead_note: str,
    rss: list[RssResult],
    rss_store: int,
    profile: str,
    bytecode: str,
    load: tuple[str, str],
    code: str,
    elapsed: float,
) -> str:
    info = machine()
    lines = [
        "# jit-dispatch benchmark",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; code: {code}",
        f"- machine: {info['nproc']} CPUs (nproc), {info['cpu']}, {info['os']}",
        f"- load average: {load[0]} at the start, {load[1]} at the end (other work on the machine skews timings)",
        f"- python: {python_version} ({python}); bytecode {bytecode}",
        f"- dispatcher: `{' '.join(cmd)}`",
        f"- command: `{' '.join(argv)}` ({elapsed:.0f} s in all)",
        "- whole-process wall time, warm page cache; medians of alternating runs after one warm-up each",
        "",
        "## Dispatch vs floor",
        "",
        "`jit-dispatch once --agent bench --command true --jit-dir STORE` (claims the top issue, settles"
        " `done`, promotes the backlog issues it unblocks, at least one) vs the floor `python -c` that"
        " json-parses every issue file listed in index.json and keeps nothing.",
        "",
        "| issues | store (files) | states | runs | dispatch median (s) | floor median (s) | ratio | dispatch min"
        " (s) | floor min (s) | dispatch − floor (s) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in scale:
        s = row.stats
        states = ", ".join(f"{k} {v}" for k, v in s["states"].items())
        store = (
            f"{s['file_bytes_total'] / 1e6:.1f} MB, median {s['file_bytes_median']} B, mean {s['file_bytes_mean']} B"
        )
        d, f = median(row.dispatch), median(row.floor)
        lines.append(
            f"| {row.size} | {store} | {states} | {row.runs} | {d:.3f} | {f:.3f} | {d / f:.2f}x"
            f" | {min(row.dispatch):.3f} | {min(row.floor):.3f} | {d - f:+.3f} |"
        )
    if startup:
        d, f = median(startup[0]), median(startup[1])
        lines += [
            "",
            "## Startup",
            "",
            "| process | median (s) |",
            "|---|---:|",
            f"| `jit-dispatch --version` (imports the CLI, no store) | {d:.3f} |",
            f"| `python -c 'import json'` | {f:.3f} |",
            f"| difference: the dispatcher's import cost | {d - f:+.3f} |",
        ]
    lines += ["", "## Overhead on the real 175-issue store", ""]
    if overhead:
        d, s = median(overhead.dispatch), median(overhead.shell)
        verdict = "within" if d - s <= OVERHEAD_TARGET_SECONDS else "OVER"
        lines += [
            f"{overhead.runs} alternating runs; outcome of the dispatches: {overhead.outcome}.",
            "",
            "| process | median (s) | min (s) |",
            "|---|---:|---:|",
            f"| `jit-dispatch once --command 'sleep {SLEEP_SECONDS:g}'` | {d:.3f} | {min(overhead.dispatch):.3f} |",
            f"| `bash -c 'sleep {SLEEP_SECONDS:g}'` | {s:.3f} | {min(overhead.shell):.3f} |",
            f"| **dispatcher overhead** | **{d - s:.3f}** | {verdict} the {OVERHEAD_TARGET_SECONDS} s target |",
        ]
    else:
        lines.append(overhead_note)
    lines += [
        "",
        "## Peak memory",
        "",
        f"`os.wait4` ru_maxrss of `jit-dispatch once` (dispatcher and its children) on the {rss_store}-issue store,"
        " dispatcher stdout to /dev/null, forked by a ~5 MB helper (a child's ru_maxrss includes the RSS of"
        " the process it was forked from); the largest of the runs.",
        "",
        "| command output | peak RSS (MB) | wall median (s) |",
        "|---|---:|---:|",
    ]
    for r in rss:
        lines.append(f"| {r.label} | {r.max_rss_kb / 1024:.1f} | {r.seconds:.3f} |")
    if len(rss) == 3:
        lines.append(f"| growth with output | {(rss[2].max_rss_kb - rss[1].max_rss_kb) / 1024:+.1f} | |")
    if profile:
        lines += ["", "## Profile", "", "```", profile.strip(), "```"]
    return "\n".join(lines) + "\n"


# ===================================================================== main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", help="comma-separated store sizes (default 1000,10000,50000; --quick: 1000)")
    parser.add_argument("--runs", type=int, help="runs per side (default 15, 7 from 50k issues; --quick: 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: few runs, 20 MB of output; writes quick.md")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results", help="cache and report dir")
    parser.add_argument("--seed-store", type=Path, default=SEED_STORE, help="the real 175-issue .jit directory")
    parser.add_argument("--rev", help="measure the package as committed at this git revision (default: working tree)")
    parser.add_argument(
        "--dispatcher", help="another jit-dispatch executable, measured with its own package (default: this venv's)"
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        type=int,
        const=0,
        metavar="SIZE",
        help="also cProfile one dispatch on the store of SIZE issues (default: the largest)",
    )
    parser.add_argument(
        "--no-pyc-cache",
        action="store_true",
        help="keep the caller's PYTHONDONTWRITEBYTECODE (default: cache bytecode under the results dir)",
    )
    args = parser.parse_args(argv)
    try:
        sizes = args.sizes.split(",") if args.sizes else ["1000"] if args.quick else DEFAULT_SIZES
        args.sizes = [int(s) for s in sizes]
    except ValueError:
        parser.error(f"--sizes: not a comma-separated list of integers: {args.sizes!r}")
    if any(s < 20 for s in args.sizes):
        parser.error("--sizes: each store needs at least 20 issues")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs: at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    args = parse_args(sys.argv[1:] if argv is None else argv)
    results: Path = args.results_dir.resolve()
    results.mkdir(parents=True, exist_ok=True)
    pycache = None if args.no_pyc_cache else results / "pycache"
    env = clean_env(pycache)
    cmd = dispatcher_argv(args.dispatcher)
    python = interpreter_of(cmd)

    def runs_for(size: int) -> int:
        if args.runs is not None:
            return args.runs
        return 3 if args.quick else 7 if size >= 50000 else 15

    fixtures = [cached_store(results, size) for size in args.sizes]
    work = Path(tempfile.mkdtemp(prefix="jit-dispatch-bench-"))
    try:
        code = f"the installed package of {args.dispatcher}"
        if not args.dispatcher:
            code_path, code = snapshot_code(work, args.rev)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code_path), env.get("PYTHONPATH")) if p)
        probe = "import platform,jit_dispatch;print(platform.python_version());print(jit_dispatch.__file__)"
        python_version, imported = run_timed([python, "-c", probe], env).stdout.splitlines()
        if not args.dispatcher and not imported.startswith(str(work)):
            raise BenchError(f"the measured processes import {imported}, not the snapshot of the code")
        scale = []
        for fixture in fixtures:
            print(f"{fixture.size} issues ({fixture.stats['file_bytes_total'] / 1e6:.1f} MB):", flush=True)
            scale.append(bench_scale(fixture, work, runs_for(fixture.size), cmd, python, env))
        small = runs_for(min(args.sizes))
        print("startup:", flush=True)
        startup = bench_startup(cmd, python, env, small)
        overhead, note = None, ""
        if args.seed_store.is_dir():
            print(f"overhead on {args.seed_store}:", flush=True)
            overhead = bench_overhead(args.seed_store, work, small, cmd, env)
        else:
            note = f"Skipped: the real store {args.seed_store} is absent."
            print(note, flush=True)
        rss_fixture = fixtures[0]
        output_bytes = QUICK_OUTPUT_BYTES if args.quick else BIG_OUTPUT_BYTES
        print(f"peak RSS ({output_bytes / 1e6:g} MB of output):", flush=True)
        rss = bench_rss(rss_fixture, work, cmd, env, output_bytes, 1 if args.quick else 3)
        profile = ""
        if args.profile is not None:
            size = args.profile or max(args.sizes)
            print(f"profiling one dispatch on {size} issues:", flush=True)
            profile = profile_dispatch(cached_store(results, size), work, python, env, results)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if pycache is not None:  # the snapshot's bytecode: a new path every run
            shutil.rmtree(pycache / work.relative_to(work.anchor), ignore_errors=True)

    shown_argv = ["bench/run.py", *(sys.argv[1:] if argv is None else argv)]
    table = render(
        argv=shown_argv,
        cmd=cmd,
        python=python,
        python_version=python_version,
        scale=scale,
        startup=startup,
        overhead=overhead,
        overhead_note=note,
        rss=rss,
        rss_store=rss_fixture.size,
        profile=profile,
        bytecode=bytecode_note(env),
        load=(load, " ".join(f"{x:.2f}" for x in os.getloadavg())),
        code=code,
        elapsed=time.perf_counter() - started,
    )
    report = results / ("quick.md" if args.quick else "latest.md")
    report.write_text(table, encoding="utf-8")
    print()
    print(table)
    print(f"(written to {report})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
