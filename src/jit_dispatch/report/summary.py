"""What a run tells people: the Markdown step summary, the terminal lines, the JSON object and
the step outputs (docs/architecture.md#report). Pure rendering; writing them out is `actions.py`'s job.

Issue titles, labels and command output are untrusted: `domain/markdown.py` makes them inert
(in Markdown HTML-escaped and stripped of Markdown syntax, or fenced with a fence longer than any
backtick run they contain; in a terminal stripped of control characters).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from jit_dispatch.domain.delivery import inert_for_commit
from jit_dispatch.domain.gates import GATE, GateRun
from jit_dispatch.domain.issue import Issue
from jit_dispatch.domain.markdown import ANSI, CONTROL, md_code_block, md_code_span, md_text, one_line
from jit_dispatch.domain.markdown import plain as plain  # re-exported: the log and status lines use it
from jit_dispatch.domain.result import HELD_IN_FULL, Result
from jit_dispatch.domain.selection import Held
from jit_dispatch.domain.values import Outcome

TAIL_LINES = 60
TAIL_CHARS = 16 * 1024
HELD_ROWS = HELD_IN_FULL  # the held issues the dispatch read in full (with `once`, the rest are leads)
ICONS = {
    Outcome.DONE: "✅",
    Outcome.GATED: "🚦",
    Outcome.REJECTED: "🚫",
    Outcome.IN_REVIEW: "👀",
    Outcome.RELEASED: "↩️",
    Outcome.PARKED: "🅿️",
    Outcome.LOST: "⚠️",
    Outcome.IDLE: "💤",
    Outcome.DRY_RUN: "🔎",
    Outcome.ERROR: "❌",
}

TITLE_LOG_CHARS = 200  # a log line shows at most this much of a title: the rest is in the issue


def title_line(title: str) -> str:
    """A title as one terminal line, cut to `TITLE_LOG_CHARS` (a title may be megabytes long)."""
    return one_line(title, TITLE_LOG_CHARS)


def issue_json(issue: Issue) -> dict[str, Any]:
    """How every JSON listing names an issue."""
    return {"issue_id": issue.id, "short_id": issue.short_id, "title": issue.title, "priority": issue.priority}


def output_tail(text: str, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str:
    """The last lines of the output, ANSI-free, within a character budget."""
    clean = ANSI.sub("", text).replace("\r\n", "\n")
    clean = CONTROL.sub("", clean)
    kept = "\n".join(clean.rstrip("\n").split("\n")[-lines:])
    return kept[-chars:]


def human_size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _attempt_text(result: Result, max_attempts: int) -> str:
    return f"{result.attempt} of {max_attempts}" if result.attempt else "–"


def _row(name: str, value: str) -> str:
    return f"| **{name}** | {value} |"


def pull_request_body(result: Result, max_attempts: int, run_ref: str = "", closes: bool = False) -> str:
    """A pull request's body: what it is for, the run's summary (rendered as the step summary is,
    issue text inert), the run's link, and the `Jit-Issue:` line the merge is recognised by."""
    issue = result.issue
    assert issue is not None
    lines = [f"Work on issue `{issue.id}`, delivered by jit-dispatch."]
    if closes and issue.id.startswith("#") and issue.id[1:].isdigit():  # a GitHub issue: `#12`
        lines.append(f"\nCloses {issue.id}")
    if run_ref.startswith("https://"):
        lines.append(f"\nRun: {md_text(run_ref, 500)}")
    shown = replace(result, outcome=Outcome.IN_REVIEW, reason=None)
    lines += ["", inert_for_commit(summary_markdown(shown, max_attempts), issue.id), f"Jit-Issue: {issue.id}", ""]
    return "\n".join(lines)


def summary_markdown(result: Result, max_attempts: int) -> str:
    icon = ICONS.get(result.outcome, "")
    issue = result.issue
    merged = [f"- {md_text(line, 300)}" for line in result.merged]
    merged = ["", "Waiting deliveries settled before selecting:", "", *merged] if merged else []
    if issue is None:
        lines = [f"### {icon} jit-dispatch · {result.outcome} · {md_text(result.agent)}", ""]
        lines.append(md_text(result.reason or "", 1000))
        lines.extend(merged)
        lines.extend(_held_table(result.held))
        lines.extend(_warnings(result.warnings))
        return "\n".join(lines) + "\n"
    lines = [
        f"### {icon} jit-dispatch · {result.outcome} · `{issue.short_id}` {md_text(issue.title, 120)}",
        "",
        "| | |",
        "|---|---|",
        _row("Issue", f"`{issue.id}`"),
        _row("Title", md_text(issue.title)),
        _row("Priority", md_text(issue.priority)),
        _row("Labels", ", ".join(md_code_span(label, 80) for label in issue.labels) or "–"),
        _row("Agent", md_code_span(result.agent)),
        _row("Attempt", _attempt_text(result, max_attempts)),
        _row("Command", md_code_span(result.command or "", 200)),
        _row("Duration", f"{result.duration_seconds:.2f} s" if result.duration_seconds is not None else "–"),
        _row("Exit code", "–" if result.exit_code is None else str(result.exit_code)),
        _row("Outcome", f"{icon} {result.outcome}"),
        _row("Reason", md_text(result.reason or "–", 500)),
        _row("Store", md_code_span(result.store)),
    ]
    if result.promoted:
        lines.append(_row("Unblocked", ", ".join(f"`{i[:8]}`" for i in result.promoted)))
    if (delivery := result.delivery) is not None:
        lines.append(_row("Branch", md_code_span(delivery.branch, 200) + f" → {md_code_span(delivery.base, 200)}"))
        if delivery.pull_request:
            lines.append(_row("Pull request", md_text(delivery.pull_request, 300)))
    if result.sync:
        lines.append(_row("Remote", _sync_text(result.sync)))
    if result.output_bytes:
        lines += _tail_block("Output", result.output_tail, result.output_bytes)
    lines.extend(_gates_table(result))
    lines.extend(merged)
    lines.extend(_warnings(result.warnings))
    return "\n".join(lines) + "\n"


def _tail_block(what: str, text: str, size: int) -> list[str]:
    tail = output_tail(text)
    shown = len(tail.splitlines())
    summary_line = f"<details><summary>{what}: last {shown} lines of {human_size(size)}</summary>"
    return ["", summary_line, "", md_code_block(tail), "", "</details>"]


def gate_json(run: GateRun) -> dict[str, Any]:
    """One row of the gates table, as `--json` and the `gates` output give it."""
    return {
        "key": run.step.key,
        "kind": run.step.kind,
        "stage": run.step.stage,
        "result": run.status,
        "duration_seconds": round(run.duration_ms / 1000, 3),
        "exit_code": run.exit_code,
        "reason": None if run.passed else run.reason,
        "run_id": run.run_id if run.step.kind == GATE else None,
    }


def _gates_table(result: Result) -> list[str]:
    """Gate, stage, result, duration and exit code of every checker that ran; the failing one's tail."""
    if result.planned:
        rows = [f"| {md_code_span(s.key, 120)} | {s.kind} | {s.stage} | would run | – | – |" for s in result.planned]
    else:
        rows = []
        for run in result.gates:
            icon = "✅" if run.passed else "❌"
            code = "–" if run.exit_code is None else str(run.exit_code)
            verdict = f"{icon} {run.status}" + ("" if run.passed or run.exit_code is not None else f" ({run.message})")
            cells = [md_code_span(run.step.key, 120), run.step.kind, run.step.stage, md_text(verdict, 200)]
            rows.append("| " + " | ".join([*cells, f"{run.duration_ms / 1000:.2f} s", code]) + " |")
    if not rows:
        return []
    lines = ["", "| Gate | Kind | Stage | Result | Duration | Exit code |", "|---|---|---|---|---|---|", *rows]
    failed = next((r for r in result.gates if not r.passed and r.step.key == result.failed_gate), None)
    if failed is not None and failed.output_bytes + failed.stderr_bytes:
        shown, size = failed.output + failed.stderr, failed.output_bytes + failed.stderr_bytes
        lines += _tail_block(f"{failed.step.label} output", shown, size)
    return lines


def _sync_text(sync: dict[str, Any]) -> str:
    commits = ", ".join(f"`{str(c)[:10]}`" for c in sync.get("commits", [])) or "none"
    text = f"lock push attempts: {sync.get('sync_attempts', 0)} · commits pushed: {commits}"
    if sync.get("pending_results"):  # by design (docs/remote-mode.md#leaving-the-fold-to-the-next-runner)
        text += " · result pending as a ref: a runner settling later folds it"
    notes = sync.get("notes") or []
    return text + "".join(f" · ⚠️ {md_text(str(n), 200)}" for n in notes)


def _held_table(held: list[Held]) -> list[str]:
    if not held:
        return []
    rows = ["", "| Ready but held back | Priority | Title | Why |", "|---|---|---|---|"]
    for entry in held[:HELD_ROWS]:
        issue = entry.issue
        cells = [f"`{issue.short_id}`", md_text(issue.priority), md_text(issue.title, 100), md_text(entry.reason, 200)]
        rows.append("| " + " | ".join(cells) + " |")
    if len(held) > HELD_ROWS:
        rows.append(f"| … | | {len(held) - HELD_ROWS} more | |")
    return rows


def _warnings(warnings: list[str]) -> list[str]:
    if not warnings:
        return []
    shown = [f"- {md_text(w, 300)}" for w in warnings[:10]]
    more = [f"- … and {len(warnings) - 10} more"] if len(warnings) > 10 else []
    return ["", f"<details><summary>{len(warnings)} warning(s)</summary>", "", *shown, *more, "", "</details>"]


def summary_text(result: Result, max_attempts: int) -> str:
    """A few terminal lines."""
    head = f"jit-dispatch: {result.outcome}"
    issue = result.issue
    merged = "".join(f"jit-dispatch: merge watch: {plain(line)}\n" for line in result.merged)
    if issue is None:
        return f"{merged}{head}: {plain(result.reason or '')}"
    parts = [f"priority {issue.priority}", f"agent {plain(result.agent)}"]
    if result.attempt:
        parts.append(f"attempt {_attempt_text(result, max_attempts)}")
    if result.exit_code is not None:
        parts.append(f"exit code {result.exit_code}")
    if result.duration_seconds is not None:
        parts.append(f"{result.duration_seconds:.2f}s")
    lines = [f"{merged}{head} {issue.short_id} {title_line(issue.title)}", "  " + " · ".join(parts)]
    if result.reason:
        lines.append(f"  reason: {plain(result.reason)}")
    if result.delivery is not None:
        lines.append(f"  delivered: {plain(result.delivery.branch)} → {plain(result.delivery.base)}")
    for run in result.gates:
        code = "" if run.exit_code is None else f", exit {run.exit_code}"
        lines.append(f"  {plain(run.step.label)}: {run.status} ({run.duration_ms / 1000:.2f}s{code})")
    return "\n".join(lines)


def result_json(result: Result) -> dict[str, Any]:
    issue: Issue | None = result.issue
    return {
        "outcome": result.outcome,
        "issue_id": issue.id if issue else None,
        "short_id": issue.short_id if issue else None,
        "title": issue.title if issue else None,
        "priority": issue.priority if issue else None,
        "labels": list(issue.labels) if issue else [],
        "agent": result.agent,
        "attempt": result.attempt,
        "exit_code": result.exit_code,
        "duration_seconds": result.duration_seconds,
        "reason": result.reason,
        "store": result.store,
        "promoted": list(result.promoted),
        "gates": [gate_json(run) for run in result.gates]
        or [{"key": s.key, "kind": s.kind, "stage": s.stage, "result": "would run"} for s in result.planned],
        "failed_gate": result.failed_gate,
        "merged": result.merged,
        "branch": result.delivery.branch if result.delivery else None,
        "pull_request_url": result.delivery.pull_request if result.delivery else None,
        "pull_request_number": result.delivery.pull_number if result.delivery else None,
        "warnings": result.warnings,
        **(
            {"sync_attempts": result.sync.get("sync_attempts"), "commits": result.sync.get("commits")}
            if result.sync
            else {}
        ),
    }


def _commits(result: Result) -> list[object]:
    commits = result.sync.get("commits")
    return commits if isinstance(commits, list) else []


def step_outputs(result: Result) -> dict[str, str]:
    """The Action's outputs (docs/architecture.md#report); every value a string, empty when not applicable."""
    data = result_json(result)
    claimed = result.issue is not None and result.outcome.claimed

    def text(value: Any) -> str:
        return "" if value is None else str(value)

    return {
        "claimed": "true" if claimed else "false",
        "issue-id": text(data["issue_id"]),
        "short-id": text(data["short_id"]),
        "title": text(data["title"]),
        "outcome": result.outcome,
        "exit-code": text(data["exit_code"]),
        "duration-seconds": text(data["duration_seconds"]),
        "attempt": text(data["attempt"]),
        "reason": text(data["reason"]),
        "sync-attempts": text(result.sync.get("sync_attempts")),
        "commits": " ".join(str(c) for c in _commits(result)),
        "gates": json.dumps(data["gates"], ensure_ascii=False),
        "failed-gate": text(data["failed_gate"]),
        "branch": text(data["branch"]),
        "pull-request-url": text(data["pull_request_url"]),
        "pull-request-number": text(data["pull_request_number"]),
    }
