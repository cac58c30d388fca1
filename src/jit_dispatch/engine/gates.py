"""Run gate checkers and `--check` commands the way jit's executor runs them (docs/gates.md).

A gate's checker runs as `sh -c COMMAND` in `working_dir` (relative to the repository root), with
`JIT_ISSUE_ID`, `JIT_GATE_KEY`, `JIT_STAGE` and the checker's `env`, and `JIT_CONTEXT_FILE` only when
`pass_context` is set (never inherited). A `--check` runs like the command: `--shell`, `--workdir`,
the command's variables and placeholders. Both go through `process.child.run_command`, so they stream
to the log, keep a bounded tail, stop as a process group at their timeout, and obey cancellation.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from jit_dispatch.domain import gates as rules
from jit_dispatch.domain.gates import CHECK, GateRun, Step
from jit_dispatch.domain.issue import Issue
from jit_dispatch.domain.transitions import format_timestamp
from jit_dispatch.process.child import CancelToken, OutputTail, run_command
from jit_dispatch.process.invocation import expand_command, shell_argv

CONTEXT_HISTORY = 5  # jit passes the last five runs of the gate


class GateHooks(Protocol):
    def gate_starting(self, step: Step) -> None: ...
    def output(self, chunk: bytes) -> None: ...
    def gate_finished(self, run: GateRun) -> None: ...


@dataclass(frozen=True)
class Setting:
    """Where and how this cycle's checkers run."""

    root: Path | None  # the repository root of the store (None: no registry, checks only)
    workdir: Path | None  # the command's working directory (checks)
    shell: str  # the command's shell (checks)
    command_env: Mapping[str, str]  # the command's environment (checks)
    base_env: Mapping[str, str]  # the dispatcher's environment, for gate checkers
    history: Callable[[str], list[dict[str, Any]]] = lambda _key: []  # a gate's earlier runs, oldest first
    lookup: Callable[[str], Issue | None] = lambda _id: None  # an issue as stored now (context file)


def run_steps(
    steps: Sequence[Step], issue: Issue, setting: Setting, cancel: CancelToken, hooks: GateHooks
) -> list[GateRun]:
    """Every step in order; a cancellation stops at the step it interrupts, which is left out."""
    runs: list[GateRun] = []
    head = git_head(setting.root) if setting.root and any(s.kind != CHECK for s in steps) else (None, None)
    for step in steps:
        if cancel.cancelled:
            break
        run = _run_one(step, issue, setting, cancel, hooks, head)
        if run is None:
            break
        runs.append(run)
    return runs


def _run_one(
    step: Step,
    issue: Issue,
    setting: Setting,
    cancel: CancelToken,
    hooks: GateHooks,
    head: tuple[str | None, str | None],
) -> GateRun | None:
    started_at, started = format_timestamp(), time.monotonic()
    hooks.gate_starting(step)
    context: list[Path] = []  # the context file, when one was written (removed afterwards)
    try:
        if step.kind == CHECK:
            argv = shell_argv(setting.shell, expand_command(step.command))
            cwd, env = setting.workdir, {**setting.command_env, "JIT_STAGE": step.stage}
            env.pop("JIT_CONTEXT_FILE", None)
            run = run_command(argv, cwd=cwd, env=env, timeout=step.timeout, cancel=cancel, write_output=hooks.output)
        else:  # as jit's executor: stderr apart, SIGKILL to the group at the timeout (docs/gates.md#decisions)
            cwd, env = _gate_place(step, issue, setting, context)
            run = run_command(
                ["sh", "-c", step.command], cwd=cwd, env=env, timeout=step.timeout, cancel=cancel,
                write_output=hooks.output, stderr_tail=OutputTail(), timeout_grace=0,
            )  # fmt: skip
    except _Refused as refused:  # jit fails such a check before it runs: no run record
        result = _finish(step, started_at, started, rules.ERROR, None, head, message=str(refused))
        result = replace(result, recorded=False)
        hooks.gate_finished(result)
        return result
    finally:
        for path in context:
            path.unlink(missing_ok=True)
    if run.cancelled_by is not None:  # no verdict to record, but the log's group and fence still close
        why = f"cancelled ({signal.Signals(run.cancelled_by).name})"
        hooks.gate_finished(_finish(step, started_at, started, rules.ERROR, None, head, run.tail, message=why))
        return None
    status, exit_code = rules.judge(run.exit_code, timed_out=run.timed_out, killed_by=run.killed_by)
    if run.timed_out:
        message: str | None = f"timed out after {step.timeout:g}s"
    elif run.killed_by is not None:
        message = f"failed (killed by {signal.Signals(run.killed_by).name})"
    else:
        message = None
    result = _finish(step, started_at, started, status, exit_code, head, run.tail, run.output_bytes, message)
    result = replace(result, stderr=run.stderr, stderr_bytes=run.stderr_bytes)
    hooks.gate_finished(result)
    return result


class _Refused(Exception):
    """The checker cannot start: its place is outside the repository, missing, or its prompt unreadable."""


def _finish(
    step: Step,
    started_at: str,
    started: float,
    status: str,
    exit_code: int | None,
    head: tuple[str | None, str | None],
    output: str = "",
    output_bytes: int = 0,
    message: str | None = None,
) -> GateRun:
    return GateRun(
        step=step,
        status=status,
        exit_code=exit_code,
        duration_ms=int((time.monotonic() - started) * 1000),
        started_at=started_at,
        completed_at=format_timestamp(),
        output=output,
        output_bytes=output_bytes,
        run_id=str(uuid.uuid4()),
        commit=head[0],
        branch=head[1],
        message=message,
    )


def _inside(root: Path, relative: str | None, what: str) -> Path:
    """`root/relative`, symlinks resolved, refused unless it stays inside the repository."""
    real_root = root.resolve()
    target = (root / relative).resolve() if relative else real_root
    if target != real_root and real_root not in target.parents:
        raise _Refused(f"failed ({what} {relative!r} resolves outside the repository)")
    return target


def _gate_place(step: Step, issue: Issue, setting: Setting, written: list[Path]) -> tuple[Path, dict[str, str]]:
    """jit's working directory and environment for a gate's checker."""
    if setting.root is None:
        raise _Refused("failed (the tracker has no repository to run gates in)")
    cwd = _inside(setting.root, step.working_dir, "working_dir")
    if not cwd.is_dir():
        raise _Refused(f"failed (working_dir {step.working_dir!r} is not a directory)")
    env = {k: v for k, v in setting.base_env.items() if k != "JIT_CONTEXT_FILE"}
    env.update(JIT_ISSUE_ID=issue.id, JIT_GATE_KEY=step.key, JIT_STAGE=step.stage)
    if step.pass_context:
        data = json.dumps(_context(step, issue, setting), indent=2, ensure_ascii=False).encode("utf-8")
        import tempfile  # only for gates that want a context file: off the plain `once` path

        handle, name = tempfile.mkstemp(prefix="jit-gate-context-", suffix=".json", dir=os.environ.get("RUNNER_TEMP"))
        written.append(Path(name))
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        env["JIT_CONTEXT_FILE"] = name
    env.update(step.env)
    return cwd, env


def _context(step: Step, issue: Issue, setting: Setting) -> dict[str, Any]:
    """jit's GateContext: the prompt, the issue, the gate, and the gate's last runs without stderr."""
    assert setting.root is not None
    prompt = step.prompt
    if step.prompt_file:
        path = _inside(setting.root, step.prompt_file, "prompt_file")
        try:
            size = path.stat().st_size
            if size > rules.MAX_PROMPT_FILE_BYTES:
                limit = rules.MAX_PROMPT_FILE_BYTES
                raise _Refused(
                    f"failed (prompt_file {step.prompt_file!r} exceeds size limit ({size} bytes > {limit} byte limit))"
                )
            prompt = path.read_text(encoding="utf-8")
        except OSError as exc:  # the path as configured, relative to the repository: never this machine's
            raise _Refused(f"failed (prompt_file {step.prompt_file!r} cannot be read: {exc.strerror})") from None
        except UnicodeDecodeError:
            raise _Refused(f"failed (prompt_file {step.prompt_file!r} is not UTF-8 text)") from None
    history = [{**run, "stderr": ""} for run in setting.history(step.key)[-CONTEXT_HISTORY:]]
    current = setting.lookup(issue.id) or issue  # jit reads the issue afresh: the command may have changed it
    runs = [run for key in dict.fromkeys(current.gates_required) for run in setting.history(key)]
    dependencies = [dep.raw for dep in map(setting.lookup, current.dependencies) if dep is not None]
    return {
        "schema_version": 1,
        "prompt": prompt,
        "issue": rules.issue_view(current.raw, dependencies, runs),
        "gate": {"description": step.description, "key": step.key, "stage": step.stage, "title": step.title},
        "run_history": history,
    }


def git_head(start: Path) -> tuple[str | None, str | None]:
    """(commit, branch) of the repository holding `start`, as `git rev-parse` reports them, from its files.

    Read rather than asked of git: two processes per cycle would cost more than the checkers they
    describe. Unborn branches and anything unreadable give (None, None), as jit's git calls would.
    """
    for directory in [start, *start.parents]:
        dotgit = directory / ".git"
        if dotgit.exists():
            break
    else:
        return None, None
    try:
        gitdir = dotgit
        if dotgit.is_file():  # a worktree or submodule: `gitdir: <path>`
            gitdir = (directory / dotgit.read_text().strip().removeprefix("gitdir:").strip()).resolve()
        common = gitdir
        if (gitdir / "commondir").is_file():
            common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
        head = (gitdir / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head, "HEAD"
        ref = head.removeprefix("ref:").strip()
        commit = _resolve_ref(gitdir, common, ref)
        return (commit, ref.removeprefix("refs/heads/")) if commit else (None, None)
    except (OSError, UnicodeDecodeError):
        return None, None


def _resolve_ref(gitdir: Path, common: Path, ref: str) -> str | None:
    for base in (gitdir, common):
        loose = base / ref
        if loose.is_file():
            return loose.read_text().strip()
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            sha, _, name = line.partition(" ")
            if name == ref:
                return sha
    return None
