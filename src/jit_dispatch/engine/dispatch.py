"""The one algorithm: select → claim → run → settle (docs/architecture.md#one-run). Reporting is the caller's.

Everything tracker-specific sits behind `Tracker`; everything about the child process behind
`runner.run_command`; the caller passes `Hooks` to show the command's output live.
"""

from __future__ import annotations

import gc
import json
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from jit_dispatch.domain import gates as gate_rules
from jit_dispatch.domain import selection
from jit_dispatch.domain.gates import GATE, POSTCHECK, PRECHECK, GateRun, Step
from jit_dispatch.domain.issue import Gate, Issue
from jit_dispatch.domain.result import HELD_IN_FULL, Result
from jit_dispatch.domain.selection import Filters, Held
from jit_dispatch.domain.values import Outcome, State
from jit_dispatch.engine.heartbeat import Heartbeat
from jit_dispatch.errors import SettlementPending, TrackerError
from jit_dispatch.process.child import CancelToken, RunResult, run_command
from jit_dispatch.process.credentials import hidden_git_credentials
from jit_dispatch.process.invocation import command_env, expand_command, failure_reason, shell_argv
from jit_dispatch.trackers.base import Settlement, Snapshot, Tracker

if TYPE_CHECKING:
    from jit_dispatch.engine.deliver import Delivering, DeliverySettings
    from jit_dispatch.engine.gates import Setting
    from jit_dispatch.engine.merges import Noticed

CANCEL_SETTLE_SECONDS = 3.5  # what is left of GitHub's 7.5 s after the child is stopped


@dataclass(frozen=True)
class Request:
    """One dispatch as asked for: who runs what, with which limits and filters."""

    agent: str  # the assignee, `type:identifier`
    command: str
    filters: Filters = field(default_factory=Filters)
    timeout: float | None = None
    max_attempts: int = 3
    shell: str = "bash"
    workdir: Path | None = None
    dry_run: bool = False
    run_ref: str = ""  # run URL or host:pid, recorded in the claim
    spread_index: int = 0  # this runner's place among runners started together (matrix job index)
    spread_total: int = 1
    heartbeat_seconds: float | None = None  # refresh dispatch.heartbeat_at this often while running
    scratch_dir: str | None = None  # where the issue file is written ($RUNNER_TEMP in Actions)
    gates: str = "run"  # run jit's auto gates ("skip": leave them to jit, as before)
    on_gate_failure: str = "release"  # or "gated": jit's own behaviour, the failure recorded
    checks: tuple[str, ...] = ()  # `--check` commands: postchecks for any tracker
    delivery: DeliverySettings | None = None  # `--deliver branch|pull-request` (docs/delivery.md)
    pass_git_credentials: bool = False  # keep the workspace's persisted git credential for the command


class Hooks(Protocol):
    def command_starting(self, issue: Issue, attempt: int) -> None: ...
    def output(self, chunk: bytes) -> None: ...
    def command_finished(self, run: RunResult) -> None: ...
    def gate_starting(self, step: Step) -> None: ...
    def gate_finished(self, run: GateRun) -> None: ...


@dataclass(frozen=True)
class Steps:
    """This issue's checkers: auto prechecks, then auto postchecks and `--check`s after the command."""

    pre: list[Step]
    post: list[Step]

    @classmethod
    def plan(cls, issue: Issue, registry: Mapping[str, Gate], request: Request) -> Steps:
        run = request.gates == "run"
        pre = gate_rules.auto_steps(issue, registry, PRECHECK) if run else []
        post = gate_rules.auto_steps(issue, registry, POSTCHECK) if run else []
        return cls(pre, post + gate_rules.check_steps(request.checks, request.timeout))


def exit_code_for(result: Result, fail_on_command_failure: bool = True) -> int:
    """The contract of docs/architecture.md#exit-codes."""
    if result.cancelled_by is not None:
        return 128 + result.cancelled_by
    if result.outcome == Outcome.ERROR:
        return 3
    if result.outcome.failed and fail_on_command_failure:
        return 1
    return 0


def _idle_reason(snapshot: Snapshot, plan: selection.Plan, filters: Filters) -> str:
    """Why nothing was taken, in words a person can act on."""
    if filters.issue_id is not None:
        short = filters.issue_id[:8]
        for held in plan.held:
            return f"issue {short} is not dispatchable: {held.reason}"
        for issue in snapshot.issues:
            if issue.id == filters.issue_id:
                if selection.is_available(issue, snapshot.states):
                    return f"issue {short} does not match the label/priority filters"
                return f"issue {short} is not dispatchable: " + selection.not_ready_reason(issue, snapshot.states)
        state = snapshot.states.get(filters.issue_id)
        return f"issue {short} is not dispatchable: " + (f"state is {state}" if state else "unreadable")
    if plan.held:
        return f"no dispatchable issue ({len(plan.held)} ready but held back)"
    return "no ready issue matches"


def plan_for(snapshot: Snapshot, filters: Filters, run_gates: bool = True, agent: str | None = None) -> selection.Plan:
    """`selection.plan` over a snapshot: the issues `filters` admit, dispatchable or held with the reason.

    `agent`: the runner's own jit leases do not hold an issue back (every lease does without one)."""
    holds = snapshot.holds(agent)
    return selection.plan(snapshot.issues, snapshot.states, snapshot.gates, filters, snapshot.locked, run_gates, holds)


def _read_in_full(snapshot: Snapshot, plan: selection.Plan, candidates: int) -> selection.Plan:
    """The plan with the held issues the report lists and the first `candidates` read in full.

    Ready issues may be leads (`snapshot(leads=True)`): one whose file is unreadable as an issue
    is dropped here with a warning, as a full snapshot would have skipped it; the others are
    read when `claim_first` reaches them. Held issues past those listed are only counted.
    """
    held: list[Held] = []
    for entry in plan.held:
        if len(held) >= HELD_IN_FULL:
            held.append(entry)
        elif (issue := snapshot.full(entry.issue)) is not None:
            held.append(Held(issue, entry.reason))
    dispatchable: list[Issue] = []
    for candidate in plan.dispatchable:
        if len(dispatchable) >= candidates:
            dispatchable.append(candidate)
        elif (issue := snapshot.full(candidate)) is not None:
            dispatchable.append(issue)
    return selection.Plan(dispatchable, held)


def dispatch_once(
    tracker: Tracker,
    request: Request,
    cancel: CancelToken,
    hooks: Hooks,
    base_env: Mapping[str, str] | None = None,
) -> Result:
    """Select, claim, run and settle one issue (first finishing any settle an earlier run left half-done)."""
    repaired = [] if request.dry_run else tracker.repair()
    collecting = gc.isenabled()
    gc.disable()  # selection builds thousands of objects and no cycle: a collector pass would find nothing
    try:
        snapshot = tracker.snapshot(leads=True)
        noticed = _notice_merges(tracker, request) if not request.dry_run else None
        if noticed is not None and noticed.settled:
            snapshot = tracker.snapshot(leads=True)  # what the merges promoted is selectable now
        plan = plan_for(snapshot, request.filters, request.gates == "run", request.agent)
        plan = _read_in_full(snapshot, plan, len(plan.dispatchable) if request.dry_run else 1)
    finally:
        if collecting:
            gc.freeze()  # and no later pass (nor the one at exit) walks them again; they are freed as usual
            gc.enable()
    result = Result(
        Outcome.IDLE, request.agent, tracker.location, held=plan.held, warnings=repaired + snapshot.warnings
    )
    if noticed is not None:
        result.merged, result.warnings = noticed.settled, result.warnings + noticed.problems
    result.command = request.command
    if not plan.dispatchable:
        result.reason = _idle_reason(snapshot, plan, request.filters)
        if not request.dry_run:
            _flush(tracker, result)
    elif request.dry_run:
        top = plan.dispatchable[0]
        result.outcome, result.issue, result.attempt = Outcome.DRY_RUN, top, top.failed_attempts + 1
        result.store = tracker.location_of(top.id)
        steps = Steps.plan(top, snapshot.gates, request)
        result.planned = steps.pre + steps.post
        result.reason = f"would claim {top.short_id} ({len(plan.dispatchable)} dispatchable)"
        if result.planned:
            result.reason += "; would run " + ", ".join(step.label for step in result.planned)
    else:
        candidates = selection.spread(plan.dispatchable, request.spread_index, request.spread_total)
        claimed = claim_first(tracker, request, candidates, cancel, snapshot)
        if claimed is not None:
            run_claimed(tracker, request, claimed, cancel, hooks, base_env or os.environ, result, snapshot.gates)
        else:
            result.cancelled_by = cancel.signum
            taken = "every candidate was taken by another runner"
            result.reason = "cancelled before claiming" if cancel.cancelled else taken
    result.sync = tracker.stats()
    return result


def _notice_merges(tracker: Tracker, request: Request) -> Noticed:
    from jit_dispatch.engine.merges import notice_merges_for  # docs/delivery.md#done-when-it-merges

    return notice_merges_for(tracker, request)


def _flush(tracker: Tracker, result: Result) -> None:
    """An idle runner writes down what others left pending (best effort: the next run tries again)."""
    try:
        tracker.flush()
    except TrackerError as exc:
        result.warnings.append(f"could not fold pending results: {exc}")


def claim_first(
    tracker: Tracker, request: Request, candidates: list[Issue], cancel: CancelToken, snapshot: Snapshot | None = None
) -> Issue | None:
    """Claim the first candidate nobody else took in the meantime (a lead of `snapshot` read in full first)."""
    for candidate in candidates:
        if cancel.cancelled:
            return None
        if snapshot is not None and snapshot.full(candidate) is None:
            continue
        claimed = tracker.claim(candidate.id, request.agent, request.run_ref, request.filters)
        if claimed is not None:
            return claimed
    return None


def run_claimed(
    tracker: Tracker,
    request: Request,
    claimed: Issue,
    cancel: CancelToken,
    hooks: Hooks,
    base_env: Mapping[str, str],
    result: Result,
    registry: Mapping[str, Gate] | None = None,
) -> Result:
    """Prechecks, the command, postchecks for an issue this runner holds, then settle it; fills in `result`."""
    result.issue, result.attempt = claimed, claimed.failed_attempts + 1
    result.store = tracker.location_of(claimed.id)
    if cancel.signum is not None:  # cancelled between claim and start: give it straight back
        tracker.hurry(CANCEL_SETTLE_SECONDS)
        result.cancelled_by = cancel.signum
        return _settle(tracker, request, result, claimed, _cancelled(cancel, "before the command started"))
    if (taker := tracker.taken_by(claimed.id, request.agent)) is not None:  # e.g. `jit claim acquire` meanwhile
        return _settle(tracker, request, result, claimed, f"the claim was taken before the command started ({taker})")
    steps = Steps.plan(claimed, registry or {}, request)
    scratch = _scratch_dir(request.scratch_dir)
    issue_file = scratch / f"{claimed.id}.json"
    keep_gated = False
    reason: str | None
    timing = tracker.claim_timing(claimed.id)
    heartbeat = Heartbeat(
        tracker, claimed.id, request.agent, request.heartbeat_seconds, cancel,
        origin=timing.sent if timing else None, took=timing.took if timing else 0.0,
    )  # fmt: skip
    delivering: Delivering | None = None
    try:
        issue_file.write_text(json.dumps(claimed.raw, indent=2, ensure_ascii=False), encoding="utf-8")
        env = command_env(base_env, claimed, request.agent, result.attempt, issue_file)
        if request.delivery is not None:
            from jit_dispatch.engine.deliver import Delivering

            delivering = Delivering(request.delivery, claimed, request.agent, request.workdir)
            if (refused := delivering.prepare(tracker, env, scratch)) is not None:
                return _settle(tracker, request, result, claimed, refused)
        setting = None
        if steps.pre or steps.post:  # the gate machinery is imported only for gates and checks
            from jit_dispatch.engine.gates import Setting

            setting = Setting(
                root=tracker.checker_root(claimed.id),
                workdir=request.workdir,
                shell=request.shell,
                command_env=env,
                base_env=base_env,
                history=lambda key: tracker.gate_history(claimed.id, key),
                lookup=tracker.issue_now,
            )
        # Remote mode: the agent's jit calls see the state branch (docs/delivery.md#when-the-agent-writes-jit-itself)
        try:
            state = tracker.materialise(claimed.id)
        except (OSError, TrackerError) as exc:
            return _settle(tracker, request, result, claimed, f"cannot put the state's .jit/ into the workspace: {exc}")
        with heartbeat, hidden_git_credentials(request.workdir, keep=request.pass_git_credentials):
            cancel_command = heartbeat.command_cancel
            try:
                work = (steps, setting, env, cancel_command, hooks, result)
                reason, keep_gated = _work(tracker, request, claimed, *work)
            finally:
                if state is not None:
                    state.restore()
            if reason is None and delivering is not None:
                reason = delivering.deliver(tracker, request.agent, result.attempt or 1, result)
                result.delivery = delivering.delivery
        if heartbeat.lost is not None and cancel.signum is None:  # we stopped it: not a cancellation
            reason, keep_gated, result.cancelled_by = heartbeat.lost, False, None
        result.warnings.extend(heartbeat.warnings)
    except Exception as exc:  # the dispatcher failed, not the command: never leave the claim stuck
        reason = f"dispatcher error: {type(exc).__name__}: {exc}"
    finally:
        _remove_scratch(scratch, issue_file)
        result.warnings.extend(delivering.notes if delivering else ())
    if cancel.cancelled:  # cancelled, or a signal came after the command ended: settle in budget
        tracker.hurry(CANCEL_SETTLE_SECONDS)
    return _settle(tracker, request, result, claimed, reason, keep_gated=keep_gated, delivering=delivering)


def _cancelled(cancel: CancelToken, when: str = "") -> str:
    """The reason of a cancelled run: `cancelled (SIGTERM)`, and when it came if before the command."""
    name = signal.Signals(cancel.signum).name if cancel.signum is not None else "signal"
    return f"cancelled ({name}) {when}".rstrip()


def _scratch_dir(parent: str | None) -> Path:
    """A fresh directory of our own (mode 0700) for the issue file, as `tempfile.mkdtemp` makes one.

    Made here so that `once` does not import tempfile, and with it shutil, random and the
    compression modules, for one call. `parent`: $RUNNER_TEMP in Actions, else $TMPDIR or /tmp.
    """
    base = Path(parent or os.environ.get("TMPDIR") or "/tmp")
    while True:
        path = base / f"jit-dispatch-{os.urandom(6).hex()}"
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return path


def _remove_scratch(scratch: Path, issue_file: Path) -> None:
    """The scratch directory and the issue file; whatever the command left there too."""
    try:
        issue_file.unlink(missing_ok=True)
        scratch.rmdir()
    except OSError:  # not empty (or not ours to remove): the thorough way
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)


def _run_steps(
    steps: list[Step], issue: Issue, setting: Setting | None, cancel: CancelToken, hooks: Hooks
) -> list[GateRun]:
    if not steps or setting is None:
        return []
    from jit_dispatch.engine.gates import run_steps

    return run_steps(steps, issue, setting, cancel, hooks)


def _work(
    tracker: Tracker,
    request: Request,
    issue: Issue,
    steps: Steps,
    setting: Setting | None,
    env: Mapping[str, str],
    cancel: CancelToken,
    hooks: Hooks,
    result: Result,
) -> tuple[str | None, bool]:
    """(why it failed or None, whether a failure still settles as `gated`). `setting`: None when no step runs."""
    result.gates.extend(_run_steps(steps.pre, issue, setting, cancel, hooks))
    if cancel.signum is not None:
        result.cancelled_by = cancel.signum
        return _cancelled(cancel, "before the command started"), False
    if failed := gate_rules.first_failure(result.gates):
        result.failed_gate = failed.step.key
        return failed.reason, False
    run = _run(issue, result.attempt or 1, request, env, cancel, hooks)
    result.exit_code, result.duration_seconds = run.exit_code, round(run.duration_seconds, 3)
    result.output_tail, result.output_bytes = run.tail, run.output_bytes
    result.cancelled_by = run.cancelled_by
    if (reason := failure_reason(run, request.timeout)) is not None:
        return reason, False
    post = _run_steps(_still_to_check(steps.post, tracker.issue_now(issue.id)), issue, setting, cancel, hooks)
    result.gates.extend(post)
    if cancel.cancelled and len(post) < len(steps.post):  # a signal cut the postchecks short
        result.cancelled_by = cancel.signum
        return _cancelled(cancel), False
    failed = gate_rules.first_failure(post)
    if failed is None:
        return None, False
    result.failed_gate = failed.step.key
    only_gates_failed = all(run.passed or run.step.kind == GATE for run in post)
    return failed.reason, request.on_gate_failure == "gated" and only_gates_failed


def _still_to_check(post: list[Step], now: Issue | None) -> list[Step]:
    """The postchecks left after the command: all of them, unless it settled its issue with jit itself.
    Then only for a `done`/`gated` issue, and of its gates only those not passed yet."""
    if now is None or now.state == State.IN_PROGRESS:
        return post
    if now.state not in (State.DONE, State.GATED):
        return []
    return [step for step in post if step.kind != GATE or step.key not in now.gates_passed]


def _run(
    issue: Issue,
    attempt: int,
    request: Request,
    env: Mapping[str, str],
    cancel: CancelToken,
    hooks: Hooks,
) -> RunResult:
    hooks.command_starting(issue, attempt)
    run = run_command(
        shell_argv(request.shell, expand_command(request.command)),
        cwd=request.workdir,
        env=env,
        timeout=request.timeout,
        cancel=cancel,
        write_output=hooks.output,
        run_lock=issue.id,
    )
    hooks.command_finished(run)
    return run


def _settle(
    tracker: Tracker,
    request: Request,
    result: Result,
    issue: Issue,
    reason: str | None,
    *,
    keep_gated: bool = False,
    delivering: Delivering | None = None,
) -> Result:
    """Success completes the issue; any failure releases it (parking at the attempt limit).

    The gate runs travel with the settlement, so they are recorded in the same transaction.
    """
    settlement: Settlement
    records = [gate_rules.run_record(run, issue.id) for run in result.gates if run.step.kind == GATE and run.recorded]
    try:
        if reason is None and delivering is not None and delivering.delivery and delivering.hold:
            settlement = tracker.hold_for_merge(issue.id, request.agent, delivering.delivery, gate_runs=records)
        elif reason is None or keep_gated:
            settlement = tracker.complete(issue.id, request.agent, gate_runs=records)
        else:
            settlement = tracker.release(issue.id, request.agent, reason, request.max_attempts, gate_runs=records)
    except SettlementPending as exc:  # recorded; only its way to the branch is left to a later run
        result.outcome, result.reason = Outcome.ERROR, f"{reason or 'command succeeded'}; {exc}"
        return result
    except TrackerError as exc:  # the run happened; report it even though the store refused
        result.outcome = Outcome.ERROR
        result.reason = f"{reason or 'command succeeded'}, but settling failed: {exc}; " + _give_back(
            tracker, request, issue, retry=reason is None, cause=str(exc)
        )
        return result
    result.outcome, result.promoted = settlement.outcome, settlement.promoted
    result.warnings.extend(settlement.warnings)
    if settlement.error is not None:  # settled, but a later write to the store failed
        result.outcome, result.reason = Outcome.ERROR, settlement.error
        return result
    if settlement.by_agent:  # the command settled its issue with jit; ours only completed it
        result.reason = f"{settlement.outcome} by the agent" + (f"; {reason}" if reason else "")
    elif settlement.outcome == Outcome.LOST and settlement.taken_because:
        result.reason = f"the claim was taken away while the command ran: {settlement.taken_because}; nothing written"
    elif settlement.outcome == Outcome.LOST and reason is not None and reason.startswith("the claim was taken"):
        result.reason = f"{reason}; nothing written"  # the heartbeat or the check before the command saw who
    elif settlement.outcome == Outcome.LOST:
        result.reason = "the claim was taken away while the command ran (reaped or reassigned); nothing written"
    elif settlement.outcome == Outcome.PARKED and settlement.reason:  # jit's rules refuse where it would end
        why = "; ".join(part for part in (reason, settlement.reason) if part)
        result.reason = f"{why}; parked: fix what the rule finds, then unpark it"
    elif settlement.outcome == Outcome.PARKED:
        result.reason = f"{reason}; parked after {settlement.failed_attempts} failed attempts"
    else:
        result.reason = reason or settlement.reason
    return result


def _give_back(tracker: Tracker, request: Request, issue: Issue, *, retry: bool, cause: str) -> str:
    """After a failed `done`, release the claim if the store lets us; say what state it is left in."""
    if retry:
        try:
            settled = tracker.release(issue.id, request.agent, f"settling failed: {cause}", request.max_attempts)
        except TrackerError:
            pass
        else:
            if settled.outcome != Outcome.LOST:
                return f"{issue.short_id} was {settled.outcome} instead"
    return f"{issue.short_id} stays claimed"
