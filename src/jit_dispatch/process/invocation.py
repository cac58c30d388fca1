"""How the command is invoked for an issue, and how its end is put in words. Pure functions.

Issue text is written by strangers. Its values travel only in environment variables, and
placeholders become quoted references to them, so nothing from an issue is ever parsed by a shell.
"""

from __future__ import annotations

import re
import shlex
import signal
from collections.abc import Mapping
from pathlib import Path

from jit_dispatch.domain.issue import Issue
from jit_dispatch.process.child import RunResult

# Each placeholder stands for the environment variable that carries its value.
PLACEHOLDER_VARIABLES = {
    "issue_id": "JIT_ISSUE_ID",
    "short_id": "JIT_ISSUE_SHORT_ID",
    "title": "JIT_ISSUE_TITLE",
    "priority": "JIT_ISSUE_PRIORITY",
    "agent": "JIT_AGENT_ID",
    "issue_file": "JIT_ISSUE_FILE",
    "feedback_file": "JIT_DISPATCH_FEEDBACK_FILE",  # docs/delivery.md#review-feedback; empty when none
}
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDER_VARIABLES) + r")\}")


def _quote_contexts(template: str) -> list[str]:
    """The quoting context (`unquoted`, `single`, `double`) at every position of a shell text.

    Command substitutions, `$(...)` and backticks, open a fresh unquoted context even inside
    double quotes. Here-documents are not tracked; a guess there yields the wrong text, not code.
    """
    contexts: list[str] = []
    outer: list[str] = []  # contexts enclosing the open command substitutions
    state = "unquoted"
    escaped = False
    previous = ""
    for char in template:
        contexts.append(state)
        if escaped:
            escaped = False
        elif state == "single":
            state = "unquoted" if char == "'" else state
        elif char == "\\":
            escaped = True
        elif char == "(" and previous == "$":
            outer.append(state)
            state = "unquoted"
        elif char == ")" and state == "unquoted" and outer and not outer[-1].endswith("`"):
            state = outer.pop()
        elif char == "`":
            if outer and outer[-1].endswith("`"):
                state = outer.pop()[:-1]
            else:
                outer.append(state + "`")
                state = "unquoted"
        elif char == '"':
            state = "unquoted" if state == "double" else "double"
        elif char == "'" and state == "unquoted":
            state = "single"
        previous = char
    return contexts


def expand_command(template: str) -> str:
    """Replace each `{name}` with a quoted reference to its JIT_* variable; other braces stay.

    The value itself never enters the command text, so no quoting context can turn it into
    code: a variable's expansion is never parsed again by the shell. The reference is quoted
    to fit where it stands: `"${VAR}"` bare, `${VAR}` inside double quotes, `'"${VAR}"'`
    inside single quotes.
    """
    contexts = _quote_contexts(template)

    def reference(match: re.Match[str]) -> str:
        variable = "${" + PLACEHOLDER_VARIABLES[match.group(1)] + "}"
        context = contexts[match.start()]
        if context == "double":
            return variable
        if context == "single":
            return "'\"" + variable + "\"'"
        return '"' + variable + '"'

    return _PLACEHOLDER.sub(reference, template)


# The kernel refuses to start a program with any one environment string over MAX_ARG_STRLEN
# (128 KiB). Issue text is cut well below that; the whole issue is always in $JIT_ISSUE_FILE.
ENV_VALUE_MAX_BYTES = 32 * 1024
TRUNCATED_NOTE = " [… truncated; the full value is in $JIT_ISSUE_FILE]"


def capped(value: str, limit: int = ENV_VALUE_MAX_BYTES) -> str:
    """`value` when it fits in `limit` UTF-8 bytes; else its head (whole characters) and a note."""
    data = value.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return value
    head = data[: limit - len(TRUNCATED_NOTE.encode())].decode("utf-8", "ignore")
    return head + TRUNCATED_NOTE


def command_env(base: Mapping[str, str], issue: Issue, agent: str, attempt: int, issue_file: Path) -> dict[str, str]:
    env = dict(base)
    values = dict(
        JIT_ISSUE_ID=issue.id,
        JIT_ISSUE_SHORT_ID=issue.short_id,
        JIT_ISSUE_TITLE=issue.title,
        JIT_ISSUE_PRIORITY=issue.priority,
        JIT_ISSUE_LABELS=",".join(issue.labels),
        JIT_ISSUE_FILE=str(issue_file),
        JIT_AGENT_ID=agent,
        JIT_DISPATCH_ATTEMPT=str(attempt),
        JIT_DISPATCH_FEEDBACK_FILE="",  # set by the delivery step when the issue is back with feedback
    )
    env.update({name: capped(value.replace("\0", "")) for name, value in values.items()})  # no NUL in an environment
    return env


def shell_argv(shell: str, command: str) -> list[str]:
    """`--shell "bash -eo pipefail"` → ["bash", "-eo", "pipefail", "-c", command]."""
    return [*shlex.split(shell), "-c", command]


def failure_reason(run: RunResult, timeout: float | None) -> str | None:
    """None on success; otherwise the cause in plain words with its figure (docs/architecture.md#settle)."""
    if run.cancelled_by is not None:
        return f"cancelled ({signal.Signals(run.cancelled_by).name})"
    if run.timed_out:
        return f"timed out after {timeout:g}s"
    if run.start_error is not None:
        return f"command could not start: {run.start_error}"
    if run.not_found is not None:
        return f"command not found: {run.not_found}"
    if run.exit_code >= 128 and run.exit_code - 128 in signal.valid_signals():
        return f"killed by {signal.Signals(run.exit_code - 128).name} (exit code {run.exit_code})"
    if run.exit_code != 0:
        return f"exit code {run.exit_code}"
    return None
