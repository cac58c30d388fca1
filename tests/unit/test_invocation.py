"""How the command is invoked for an issue: placeholders quoted for every shell context (a real bash
checks it), the environment, failure reasons."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers import make_issue
from jit_dispatch.process.child import RunResult
from jit_dispatch.process.invocation import command_env, expand_command, failure_reason, shell_argv

HOSTILE = "$(touch x) `id`; rm -rf ~ | <script>alert(1)</script> </details> ```\n::error::boom @team [x](y) *b* Ünï ✓"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("printf '%s\\n' {title}", "{v}\n"),
        ('printf "%s\\n" "title: {title}!"', "title: {v}!\n"),
        ("printf '%s\\n' 'title: {title}!'", "title: {v}!\n"),
        ("printf '%s\\n' \"$(printf '%s' {title})\"", "{v}\n"),
        ("printf '%s|%s\\n' {short_id}{priority} \\{title\\}", "0587a73ahigh|{title}\n"),
        ("printf '%s\\n' \"`printf '%s' {title}`\"", "{v}\n"),
        ("(cd . && printf '%s\\n' {title})", "{v}\n"),
        ("echo {unknown} ${HOME:+set}", "{unknown} set\n"),
    ],
)
def test_placeholders_never_let_issue_text_reach_the_shell(tmp_path: Path, template: str, expected: str) -> None:
    """Whatever quoting context a placeholder stands in, the value arrives verbatim and inert."""
    issue = make_issue("0587a73a-be52-465c-a2f2-dcac1cb4ebe6", priority="high")
    issue = issue.__class__(**{**issue.__dict__, "title": HOSTILE})
    env = command_env(os.environ, issue, "agent:w1", 1, tmp_path / "issue.json")
    command = expand_command(template)
    assert "touch" not in command and "{title}" not in command.replace("\\{title\\}", "")
    proc = subprocess.run(shell_argv("bash", command), capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected.replace("{v}", HOSTILE)
    assert list(tmp_path.iterdir()) == [], "nothing from the title ran"


def test_shell_argv() -> None:
    assert shell_argv("bash -eo pipefail", "true") == ["bash", "-eo", "pipefail", "-c", "true"]


def test_command_environment() -> None:
    issue = make_issue("0587a73a-be52-465c-a2f2-dcac1cb4ebe6", labels=("a:b", "c:d"), priority="high")
    env = command_env({"PATH": "/bin"}, issue, "agent:w1", 3, Path("/tmp/i.json"))
    assert env["PATH"] == "/bin"
    assert env["JIT_ISSUE_LABELS"] == "a:b,c:d" and env["JIT_DISPATCH_ATTEMPT"] == "3"
    assert env["JIT_ISSUE_SHORT_ID"] == "0587a73a" and env["JIT_AGENT_ID"] == "agent:w1"
    assert env["JIT_ISSUE_PRIORITY"] == "high" and env["JIT_ISSUE_FILE"] == "/tmp/i.json"


def test_failure_reasons_name_the_cause_with_its_figure() -> None:
    def run(code: int, **kw: object) -> RunResult:
        return RunResult(code, 1.0, "", 0, **kw)  # type: ignore[arg-type]

    assert failure_reason(run(0), None) is None
    assert failure_reason(run(7), None) == "exit code 7"
    assert failure_reason(run(143, timed_out=True), 600.0) == "timed out after 600s"
    assert failure_reason(run(143, cancelled_by=15), None) == "cancelled (SIGTERM)"
    assert failure_reason(run(127, not_found="foo"), None) == "command not found: foo"
    assert failure_reason(run(137), None) == "killed by SIGKILL (exit code 137)"
