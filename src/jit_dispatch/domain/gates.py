"""jit's quality gates inside the dispatch cycle: which checkers run when, and what their runs mean. Pure.

jit's registry (`.jit/gates.json`, docs/jit-format.md#gates) defines gates with a stage
(`precheck`/`postcheck`), a mode (`manual`/`auto`) and, for auto gates, an exec checker. This module
plans the runs (auto prechecks after the claim, ordered by `priority` as jit's `run_prechecks` does;
auto postchecks after a successful command, in `gates_required` order as `run_postchecks` does),
judges their results as jit's executor does (exit 0 passed; 126, 127, a timeout or a signal an
error; anything else failed) and builds the records jit writes: the `gate-runs/<run_id>/result.json`
run record, the `gates_status` entry and the `gate_passed`/`gate_failed` event.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

from jit_dispatch.domain.issue import Gate, Issue
from jit_dispatch.domain.transitions import Event, chrono, make_event, timestamp_ns

EXECUTOR = "auto:executor"  # jit's `by` / `updated_by` for a checker run
PRECHECK, POSTCHECK = "precheck", "postcheck"
GATE, CHECK = "gate", "check"
PASSED, FAILED, ERROR = "passed", "failed", "error"
MAX_PROMPT_FILE_BYTES = 100_000  # jit's limit for `prompt_file`


@dataclass(frozen=True)
class Step:
    """One checker to run: a registry gate's exec checker, or a `--check` command."""

    key: str  # the gate key; for a check, the command as given
    kind: str  # GATE | CHECK
    stage: str  # PRECHECK | POSTCHECK
    command: str
    timeout: float | None
    working_dir: str | None = None  # gates: relative to the repository root
    env: Mapping[str, str] = field(default_factory=dict)
    pass_context: bool = False
    prompt: str | None = None
    prompt_file: str | None = None
    title: str = ""
    description: str = ""

    @property
    def label(self) -> str:
        """How reasons and the log name it: `precheck 'KEY'`, `gate 'KEY'`, `check 'CMD'`."""
        kind = self.kind if self.kind == CHECK or self.stage == POSTCHECK else PRECHECK
        return f"{kind} '{self.key}'"


@dataclass(frozen=True)
class GateRun:
    """The result of one step, and what jit records of it."""

    step: Step
    status: str  # PASSED | FAILED | ERROR
    exit_code: int | None  # None: timed out or killed by a signal (jit records null)
    duration_ms: int
    started_at: str
    completed_at: str
    output: str = ""  # the bounded tail of stdout (of both streams, merged, for a `--check`)
    output_bytes: int = 0
    stderr: str = ""  # a gate's stderr, kept apart as jit keeps it (bounded tail)
    stderr_bytes: int = 0
    run_id: str = ""
    commit: str | None = None
    branch: str | None = None
    message: str | None = None  # why it did not pass, when the exit code does not say it (not recorded)
    recorded: bool = True  # False: it never ran (jit fails such a check without a run record)

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def reason(self) -> str:
        """`gate 'KEY' failed (exit N)` / `… timed out after Ns` / `… failed (<message>)`."""
        if self.message and self.exit_code is None:
            return f"{self.step.label} {self.message}"
        if self.exit_code is not None:
            return f"{self.step.label} failed (exit {self.exit_code})"
        return f"{self.step.label} failed"


# ------------------------------------------------------------------ the registry
def _problem(key: str, gate: Gate | None) -> str | None:
    """What is wrong with a gate's definition, in one line naming it; None when it can run."""
    if gate is None:
        return f"gate '{key}' is required but not defined in the gate registry (gates.json)"
    if gate.stage not in (PRECHECK, POSTCHECK):
        return f"gate '{key}' has an unknown stage {gate.stage!r}"
    if gate.mode not in ("manual", "auto"):
        return f"gate '{key}' has an unknown mode {gate.mode!r}"
    if gate.mode == "manual":
        return None
    checker = gate.checker
    if not isinstance(checker, Mapping):
        return f"gate '{key}' is auto but has no checker"
    if checker.get("type") != "exec":
        return f"gate '{key}' has a checker of unknown type {checker.get('type')!r}"
    if not isinstance(checker.get("command"), str) or not checker["command"].strip():
        return f"gate '{key}' has no checker command"
    timeout = checker.get("timeout_seconds")
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        return f"gate '{key}' has an invalid timeout_seconds {timeout!r} (whole seconds above 0)"
    working_dir = checker.get("working_dir")
    if working_dir is not None and (not isinstance(working_dir, str) or outside_repository(working_dir)):
        return f"gate '{key}' has a working_dir outside the repository: {working_dir!r}"
    env = checker.get("env", {})
    if not isinstance(env, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        return f"gate '{key}' has an env that is not a table of strings"
    prompt_file = checker.get("prompt_file")
    if prompt_file is not None and (not isinstance(prompt_file, str) or outside_repository(prompt_file)):
        return f"gate '{key}' has a prompt_file outside the repository: {prompt_file!r}"
    return None


def outside_repository(relative: str) -> bool:
    """Lexically: absolute, or climbing above the root with `..` (symlinks are checked when run)."""
    if posixpath.isabs(relative) or "\0" in relative:
        return True
    return posixpath.normpath(relative).split("/")[0] == ".."


def problems(issue: Issue, gates: Mapping[str, Gate]) -> list[str]:
    """Why the issue's open required gates cannot be run as jit would; an issue with any is held back."""
    open_keys = [key for key in dict.fromkeys(issue.gates_required) if key not in issue.gates_passed]
    found = (_problem(key, gates.get(key)) for key in open_keys)
    return [p for p in found if p]


def _step(key: str, gate: Gate) -> Step:
    checker = gate.checker or {}
    return Step(
        key=key,
        kind=GATE,
        stage=gate.stage,
        command=checker["command"],
        timeout=float(checker["timeout_seconds"]),
        working_dir=checker.get("working_dir"),
        env=dict(checker.get("env") or {}),
        pass_context=checker.get("pass_context") is True,
        prompt=checker.get("prompt") if isinstance(checker.get("prompt"), str) else None,
        prompt_file=checker.get("prompt_file"),
        title=str(gate.definition.get("title", "")),
        description=str(gate.definition.get("description", "")),
    )


def auto_steps(issue: Issue, gates: Mapping[str, Gate], stage: str) -> list[Step]:
    """The issue's runnable auto gates of `stage`: prechecks by `priority` (stable), postchecks in order."""
    keys = [
        k
        for k in dict.fromkeys(issue.gates_required)
        if (g := gates.get(k)) is not None and g.stage == stage and g.mode == "auto" and _problem(k, g) is None
    ]
    if stage == PRECHECK:
        keys.sort(key=lambda k: gates[k].priority)
    return [_step(k, gates[k]) for k in keys]


def check_steps(commands: Sequence[str], timeout: float | None) -> list[Step]:
    """`--check CMD`s: postchecks of any tracker, under the command's own timeout."""
    return [Step(key=c, kind=CHECK, stage=POSTCHECK, command=c, timeout=timeout) for c in commands]


def needed(issue: Issue, gates: Mapping[str, Gate]) -> list[dict[str, str]]:
    """The required gates not passed yet, with how each gets passed (for `ready --all` and `status`)."""
    rows = []
    for key in dict.fromkeys(issue.gates_required):
        if key in issue.gates_passed:
            continue
        gate = gates.get(key)
        rows.append({"key": key, "stage": gate.stage if gate else "?", "mode": gate.mode if gate else "undefined"})
    return rows


def needed_text(rows: Sequence[Mapping[str, str]]) -> str:
    """`tests, fmt (auto); code-review (manual)`."""
    by_mode: dict[str, list[str]] = {}
    for row in rows:
        by_mode.setdefault(row["mode"], []).append(row["key"])
    return "; ".join(f"{', '.join(keys)} ({mode})" for mode, keys in by_mode.items())


# ------------------------------------------------------------------ judging a run
def judge(exit_code: int, *, timed_out: bool, killed_by: int | None = None) -> tuple[str, int | None]:
    """jit's verdict on a checker's end: (status, the exit code jit records); a signal has none."""
    if timed_out or killed_by is not None:
        return ERROR, None
    if exit_code == 0:
        return PASSED, 0
    return (ERROR if exit_code in (126, 127) else FAILED), exit_code


def first_failure(runs: Sequence[GateRun]) -> GateRun | None:
    return next((run for run in runs if not run.passed), None)


# ------------------------------------------------------------------ jit's records
def run_record(run: GateRun, issue_id: str) -> dict[str, Any]:
    """`gate-runs/<run_id>/result.json`, fields in jit's order (GateRunResult, schema_version 1)."""
    return {
        "schema_version": 1,
        "run_id": run.run_id,
        "gate_key": run.step.key,
        "stage": run.step.stage,
        "issue_id": issue_id,
        "commit": run.commit,
        "branch": run.branch,
        "status": run.status,
        "started_at": run.started_at,
        "completed_at": run.completed_at,
        "duration_ms": run.duration_ms,
        "exit_code": run.exit_code,
        "stdout": run.output,
        "stderr": run.stderr,
        "command": run.step.command,
        "by": EXECUTOR,
        "message": None,  # jit's executor never sets one; the reason lives in the settle
    }


def issue_view(
    raw: Mapping[str, Any], dependencies: Sequence[Mapping[str, Any]], runs: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The issue as jit's `issue show --json` gives it (and its gate context file): dependencies as
    small objects, a `gates` list with each gate's last run, RFC 3339 `+00:00` times, keys sorted
    (jit serialises it through a JSON value, whose maps are ordered by key)."""
    status = raw.get("gates_status") or {}
    gates = []
    for key in dict.fromkeys(raw.get("gates_required") or []):
        mine = [r for r in runs if r.get("gate_key") == key]
        latest = max(mine, key=lambda r: timestamp_ns(r.get("started_at")) or 0, default=None)
        state = status.get(key)
        gates.append(
            {
                "exit_code": latest.get("exit_code") if latest else None,
                "key": key,
                "last_run_at": _rfc3339(latest.get("started_at")) if latest else None,
                "status": state.get("status", "pending") if isinstance(state, Mapping) else "pending",
            }
        )
    view = {
        "id": raw.get("id"),
        "short_id": str(raw.get("id", ""))[:8],
        "title": raw.get("title"),
        "description": raw.get("description"),
        "state": raw.get("state"),
        "priority": raw.get("priority"),
        "assignee": raw.get("assignee"),
        "dependencies": [_minimal(dep) for dep in dependencies],
        "gates": gates,
        "context": raw.get("context") or {},
        "documents": raw.get("documents") or [],
        "labels": raw.get("labels") or [],
        "created_at": _rfc3339(raw.get("created_at")),
        "updated_at": _rfc3339(raw.get("updated_at")),
    }
    if raw.get("content_format") is not None:
        view["content_format"] = raw["content_format"]
    sorted_view: dict[str, Any] = _sorted(view)
    return sorted_view


def _minimal(dep: Mapping[str, Any]) -> dict[str, Any]:
    """jit's `MinimalIssue`: labels only when there are some."""
    small = {key: dep.get(key) for key in ("id", "title", "state", "priority", "assignee")}
    small["short_id"] = str(dep.get("id", ""))[:8]
    if dep.get("labels"):
        small["labels"] = dep["labels"]
    return small


def _rfc3339(value: Any) -> Any:
    """chrono's `to_rfc3339()`: `+00:00`; a value that is not a timestamp is left as it is."""
    ns = timestamp_ns(value)
    return chrono(ns, "T", "+00:00") if ns is not None else value


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def apply_records(
    raw: dict[str, Any], records: Sequence[Mapping[str, Any]], now: str
) -> tuple[dict[str, Any], list[Event]]:
    """What jit's `check_gate` does to the issue per run: the `gates_status` entry, then the event."""
    new = deepcopy(raw)
    status = new.setdefault("gates_status", {})
    events: list[Event] = []
    for record in records:
        passed = record["status"] == PASSED
        key = record["gate_key"]
        entry = {"status": PASSED if passed else FAILED, "updated_by": EXECUTOR, "updated_at": record["started_at"]}
        status[key] = entry
        kind = "gate_passed" if passed else "gate_failed"
        events.append(make_event(kind, new["id"], now, gate_key=key, updated_by=EXECUTOR))
    return new, events
