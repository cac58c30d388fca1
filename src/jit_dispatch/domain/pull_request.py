"""The pull request of a delivery (docs/delivery.md#github): its title and body, from inert text only.

The issue's title is hostile: in the title it is one plain line, in the body it is escaped as the
step summary escapes it (`markdown`). Links are made only of URLs that cannot break out of one.
The body ends with `Closes #N` (GitHub Issues: the merge closes the issue) and the `Jit-Issue:`
line, so a squash merge that keeps the description carries the trailer too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from jit_dispatch.domain.delivery import inert_line, trailer_line
from jit_dispatch.domain.gates import GateRun
from jit_dispatch.domain.markdown import md_code_span, md_text

TITLE_MAX = 256  # characters of a pull request title kept
_LINK = re.compile(r"https://[A-Za-z0-9.-]+(?::\d+)?(?:/[A-Za-z0-9._~%/+:@!$&*,;=?#-]*)?")


def pull_request_title(short_id: str, title: str) -> str:
    """`[<short id>] <title>` as one plain line: controls, newlines and bidi overrides gone."""
    return inert_line(f"[{inert_line(short_id, 40)}] {title}", TITLE_MAX)


def link(text: str, url: str | None) -> str:
    """A Markdown link when `url` is a plain https URL, else the text alone (`text` must be inert)."""
    return f"[{text}]({url})" if url and _LINK.fullmatch(url) else text


def pull_request_body(
    *,
    issue_id: str,
    short_id: str,
    title: str,
    agent: str,
    outcome: str,
    attempt: int,
    max_attempts: int,
    duration_seconds: float | None = None,
    issue_url: str | None = None,
    run_url: str | None = None,
    gates: Sequence[GateRun] = (),
    closes: int | None = None,
) -> str:
    """The body: a summary of the run (as the step summary has it) and the lines GitHub and the
    merge detection read. `closes`: the GitHub issue number the merge closes."""
    duration = f"{duration_seconds:.2f} s" if duration_seconds is not None else "–"
    lines = [
        f"### jit-dispatch · {md_code_span(short_id, 40)} {md_text(title, 200)}",
        "",
        "| | |",
        "|---|---|",
        f"| **Issue** | {link(md_code_span(issue_id, 120), issue_url)} |",
        f"| **Agent** | {md_code_span(agent, 200)} |",
        f"| **Outcome** | {md_text(outcome, 100)} |",
        f"| **Attempt** | {attempt} of {max_attempts} |",
        f"| **Duration** | {duration} |",
        f"| **Workflow run** | {link('the run', run_url) if run_url and _LINK.fullmatch(run_url) else '–'} |",
    ]
    if gates:
        lines += ["", "| Gate | Stage | Result | Duration |", "|---|---|---|---|"]
        for run in gates:
            verdict = ("✅ " if run.passed else "❌ ") + md_text(run.status, 40)
            lines.append(
                f"| {md_code_span(run.step.key, 120)} | {run.step.stage} | {verdict} | {run.duration_ms / 1000:.2f} s |"
            )
    lines += ["", "Opened by jit-dispatch: the issue is `done` once this pull request merges."]
    if closes is not None:
        lines += ["", f"Closes #{int(closes)}"]
    lines += ["", trailer_line(inert_line(issue_id, 200))]
    return "\n".join(lines) + "\n"
