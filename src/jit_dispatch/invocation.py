"""How the command is invoked for an issue, and how its end is put in words. Pure functions.

Issue text is written by strangers: placeholders are substituted shell-quoted and the same
values travel in environment variables, so nothing from an issue is ever parsed by a shell.
"""

from __future__ import annotations

import re
import shlex
import signal
from collections.abc import Mapping
from pathlib import Path

from .models import Issue
from .runner import RunResult

PLACEHOLDERS = ("issue_id", "short_id", "title", "priority", "agent", "issue_file")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


def placeholder_values(issue: Issue, agent: str, issue_file: Path) -> dict[str, str]:
    return {
        "issue_id": issue.id,
        "short_id": issue.short_id,
        "title": issue.title,
        "priority": issue.priority,
        "agent": agent,
        "issue_file": str(issue_file),
    }


def expand_command(template: str, values: Mapping[str, str]) -> str:
    """Replace `{name}` placeholders with shell-quoted values; any other brace is left alone."""
    return _PLACEHOLDER.sub(lambda m: shlex.quote(values[m.group(1)]), template)


def command_env(base: Mapping[str, str], issue: Issue, agent: str, attempt: int, issue_file: Path) -> dict[str, str]:
    env = dict(base)
    env.update(
        JIT_ISSUE_ID=issue.id,
        JIT_ISSUE_SHORT_ID=issue.short_id,
        JIT_ISSUE_TITLE=issue.title,
        JIT_ISSUE_PRIORITY=issue.priority,
        JIT_ISSUE_LABELS=",".join(issue.labels),
        JIT_ISSUE_FILE=str(issue_file),
        JIT_AGENT_ID=agent,
        JIT_DISPATCH_ATTEMPT=str(attempt),
    )
    return env


def shell_argv(shell: str, command: str) -> list[str]:
    """`--shell "bash -eo pipefail"` → ["bash", "-eo", "pipefail", "-c", command]."""
    return [*shlex.split(shell), "-c", command]


def failure_reason(run: RunResult, timeout: float | None) -> str | None:
    """None on success; otherwise the cause in plain words with its figure (design §3.4)."""
    if run.cancelled_by is not None:
        return f"cancelled ({signal.Signals(run.cancelled_by).name})"
    if run.timed_out:
        return f"timed out after {timeout:g}s"
    if run.not_found is not None:
        return f"command not found: {run.not_found}"
    if run.exit_code >= 128 and run.exit_code - 128 in signal.valid_signals():
        return f"killed by {signal.Signals(run.exit_code - 128).name} (exit code {run.exit_code})"
    if run.exit_code != 0:
        return f"exit code {run.exit_code}"
    return None
