"""The pull request body for GitHub Issues: `Closes #N` names the issue GitHub will close on the
merge, the `Jit-Issue:` line is the last one, and a title posing as either stays inert."""

from __future__ import annotations

import re

from helpers import make_issue
from jit_dispatch.domain.delivery import commit_message, inert_line, message_trailer_ids
from jit_dispatch.domain.result import Result
from jit_dispatch.domain.values import Outcome
from jit_dispatch.report.summary import pull_request_body

HOSTILE = "Fix it\nCloses #99\nJit-Issue: #99 @team <b>"


def body(issue_id: str, closes: bool) -> str:
    issue = make_issue(issue_id)
    issue = issue.__class__(**{**issue.__dict__, "title": HOSTILE})
    result = Result(Outcome.IN_REVIEW, "agent:w1", "github:octo-org/widgets", issue=issue, attempt=1)
    return pull_request_body(result, 3, "https://github.com/octo-org/widgets/actions/runs/7", closes=closes)


def test_a_github_issue_is_closed_by_the_merge() -> None:
    text = body("#12", closes=True)
    lines = text.splitlines()
    assert "Closes #12" in lines and "Closes #99" not in lines
    assert lines[-1] == "Jit-Issue: #12"
    assert message_trailer_ids("subject\n" + text) == {"#12"}
    assert "@team" not in text and "<b>" not in text


def test_a_jit_issue_closes_nothing() -> None:
    text = body("0587a73a-be52-465c-a2f2-dcac1cb4ebe6", closes=False)
    assert not [line for line in text.splitlines() if line.startswith("Closes")] and "#99" not in text
    assert text.splitlines()[-1] == "Jit-Issue: 0587a73a-be52-465c-a2f2-dcac1cb4ebe6"


def test_a_title_cannot_close_or_reference_other_issues_through_the_body() -> None:
    for hostile in (
        "Fix it. Closes #99",
        "fixes octo-org/widgets#99",
        "resolves https://github.com/octo-org/widgets/issues/99",
    ):
        issue = make_issue("#12")
        issue = issue.__class__(**{**issue.__dict__, "title": hostile})
        result = Result(Outcome.IN_REVIEW, "agent:w1", "github:octo-org/widgets", issue=issue, attempt=1)
        text = pull_request_body(result, 3, closes=True)
        assert "#99" not in text and "https://github.com/octo-org/widgets/issues/99" not in text, text


def test_titles_in_commit_subjects_and_pull_request_titles_reference_no_issue() -> None:
    # A commit message (and a squash merge's, made of the PR title) with `Closes #99` closes #99
    # when it reaches the default branch; so do `owner/repo#99`, `GH-99` and the issue's URL.
    for hostile in ("Fix. Closes #99", "fixes octo-org/widgets#99", "resolves GH-99",
                    "close https://github.com/octo-org/widgets/issues/99"):  # fmt: skip
        for text in (inert_line(hostile), commit_message(hostile, "#12").split("\n")[0]):
            assert not re.search(r"#\d|GH-\d|https://", text, re.IGNORECASE), text
    assert inert_line("Issue #12: fix") == "Issue ＃12: fix"  # still readable


def test_the_commands_output_and_labels_reference_no_issue_in_a_squash_message() -> None:
    # GitHub can make a squash merge's message of the PR body: the output tail (in a code block)
    # and the labels (code spans) reach that commit as plain text, where `Closes #99` closes #99 and
    # a `Jit-Issue:` line of another issue would finish that one.
    other = "0587a73a-be52-465c-a2f2-dcac1cb4ebe6"
    issue = make_issue("#12", labels=("Closes #98",))
    tail = f"tests ok\nCloses #99\nfixes GH-97\nJit-Issue: {other}\n"
    result = Result(
        Outcome.IN_REVIEW, "agent:w1", "github:octo-org/widgets", issue=issue, attempt=1,
        output_tail=tail, output_bytes=len(tail),
    )  # fmt: skip
    text = pull_request_body(result, 3, closes=True)
    assert "tests ok" in text
    assert message_trailer_ids("Squash (#5)\n" + text) == {"#12"}, text
    assert not re.search(r"#9\d|GH-9\d", text, re.IGNORECASE), text
    assert "Closes #12" in text.splitlines()
