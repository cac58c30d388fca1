"""Summary rendering, untrusted text made inert, outputs, workflow commands, exit codes (docs/architecture.md)."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import make_issue, parse_outputs
from jit_dispatch.domain.selection import Held
from jit_dispatch.domain.values import Outcome
from jit_dispatch.engine.dispatch import Result, exit_code_for
from jit_dispatch.report import actions, summary

HOSTILE = "$(touch x) `id`; rm -rf ~ | <script>alert(1)</script> </details> ```\n::error::boom @team [x](y) *b* Ünï ✓"


def result_for(title: str, **fields: object) -> Result:
    issue = make_issue("0587a73a-be52-465c-a2f2-dcac1cb4ebe6", labels=("type:task", "x:<b>"))
    issue = issue.__class__(**{**issue.__dict__, "title": title})
    values: dict[str, object] = {
        "outcome": "released",
        "agent": "agent:w1",
        "store": ".jit",
        "issue": issue,
        "attempt": 2,
        "exit_code": 7,
        "duration_seconds": 1.5,
        "reason": "exit code 7",
        "command": "make | tee log",
        "output_tail": "line one\n```` four backticks\nlast line\n",
        "output_bytes": 12345,
    }
    values.update(fields)
    values["outcome"] = Outcome(values["outcome"])
    return Result(**values)  # type: ignore[arg-type]


def test_summary_renders_hostile_title_inert() -> None:
    markdown = summary.summary_markdown(result_for(HOSTILE), max_attempts=3)
    assert "<script" not in markdown and "</details> ```" not in markdown
    assert markdown.count("</details>") == 1, "only the dispatcher's own details block closes"
    assert "@team" not in markdown, "no @-mentions from strangers"
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    for line in table:
        unescaped = re.sub(r"\\\|", "", line)
        assert unescaped.count("|") == 3, line
    assert "| **Attempt** | 2 of 3 |" in markdown
    assert "| **Labels** | ` type:task `, ` x:<b> ` |" in markdown  # code span: HTML stays literal
    fence = re.search(r"^(`{3,})text$", markdown, re.MULTILINE)
    assert fence and len(fence.group(1)) == 5, "the fence outruns the 4-backtick run in the output"
    assert markdown.rstrip().endswith("</details>")


def test_summary_for_idle_lists_held_issues() -> None:
    held = [Held(make_issue(f"{n:08d}-x", priority="high"), "manual precheck not passed: tdd") for n in range(25)]
    markdown = summary.summary_markdown(
        Result(Outcome.IDLE, "agent:w1", ".jit", reason="no dispatchable issue (25 ready but held back)", held=held), 3
    )
    assert markdown.startswith("### 💤 jit-dispatch · idle")
    assert markdown.count("manual precheck not passed: tdd") == summary.HELD_ROWS
    assert "5 more" in markdown


def test_output_tail_keeps_the_last_lines_within_budget() -> None:
    text = "".join(f"\x1b[31mline {n}\x1b[0m\r\n" for n in range(10_000))
    tail = summary.output_tail(text)
    assert tail.splitlines()[-1] == "line 9999"
    assert len(tail.splitlines()) == summary.TAIL_LINES and "\x1b" not in tail
    assert len(summary.output_tail("x" * 10_000_000)) == summary.TAIL_CHARS


def test_plain_strips_terminal_escapes_and_bidi_controls() -> None:
    assert summary.plain("a\x1b]0;title\x07b\x1b[2Jc\u202ed\nnext") == "abcd next"


def test_outputs_round_trip_through_random_delimiters(tmp_path: Path) -> None:
    path = tmp_path / "output"
    outputs = summary.step_outputs(result_for(HOSTILE + "\nghadelimiter_fake\nEOF"))
    actions.write_outputs(path, outputs)
    parsed = parse_outputs(path.read_text())
    assert parsed == outputs
    assert parsed["claimed"] == "true" and parsed["exit-code"] == "7" and parsed["attempt"] == "2"
    idle = summary.step_outputs(Result(Outcome.IDLE, "agent:w1", ".jit", reason="nothing"))
    assert idle["claimed"] == "false" and idle["issue-id"] == ""


def test_summary_file_never_exceeds_githubs_limit(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    path.write_bytes(b"x" * (actions.SUMMARY_LIMIT_BYTES - 10_000))
    actions.append_summary(path, "é" * 50_000)
    assert path.stat().st_size <= actions.SUMMARY_LIMIT_BYTES
    path.read_text(encoding="utf-8")  # still valid UTF-8


def test_workflow_command_escaping() -> None:
    assert actions.command("warning", "50%\nnext", title="a:b,c") == "::warning title=a%3Ab%2Cc::50%25%0Anext"
    fenced = actions.fenced("::error::x")
    token = re.match(r"::stop-commands::(\S+)\n", fenced).group(1)  # type: ignore[union-attr]
    assert fenced.endswith(f"\n::{token}::") and len(token) >= 32
    assert actions.fenced("a") != actions.fenced("a"), "a fresh token every time"


def test_exit_codes() -> None:
    def code(outcome: str, **kw: object) -> int:
        return exit_code_for(Result(Outcome(outcome), "a:b", ".jit", **kw), **{})  # type: ignore[arg-type]

    assert [code(o) for o in ("done", "gated", "idle", "dry-run")] == [0, 0, 0, 0]
    assert [code(o) for o in ("released", "parked", "lost")] == [1, 1, 1]
    assert code("released", cancelled_by=15) == 143 and code("released", cancelled_by=2) == 130
    assert exit_code_for(Result(Outcome.RELEASED, "a:b", ".jit"), fail_on_command_failure=False) == 0


def test_merges_settled_before_selecting_are_listed_inert() -> None:
    from jit_dispatch.domain.values import Outcome
    from jit_dispatch.engine.dispatch import Result
    from jit_dispatch.report.summary import result_json, summary_markdown, summary_text

    result = Result(Outcome.IDLE, "agent:a", ".jit", reason="no ready issue matches")
    result.merged = ["1a2b3c4d done: jit/1a2b3c4d-x merged into main (abc); unblocked 9f9f9f9f", "<b>@all</b>\x1b[31m"]
    text = summary_text(result, 3)
    assert "jit-dispatch: merge watch: 1a2b3c4d done: jit/1a2b3c4d-x merged into main" in text
    assert "\x1b" not in text
    markdown = summary_markdown(result, 3)
    assert "- 1a2b3c4d done" in markdown and "<b>" not in markdown and "@all" not in markdown
    assert result_json(result)["merged"] == result.merged
