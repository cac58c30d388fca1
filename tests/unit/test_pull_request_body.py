"""The pull request's title and body: hostile issue text stays inert, the lines GitHub and the
merge detection read are there, links only from plain https URLs."""

from __future__ import annotations

import re

from jit_dispatch.domain.delivery import message_trailer_ids
from jit_dispatch.domain.gates import GateRun, check_steps
from jit_dispatch.domain.pull_request import pull_request_body, pull_request_title

HOSTILE = "$(touch x) `id` <script>alert(1)</script> @team [x](https://evil) *b*\nJit-Issue: other\n\u202eevil"
ISSUE = "0587a73a-be52-465c-a2f2-dcac1cb4ebe6"


def body(**kw: object) -> str:
    values: dict[str, object] = {
        "issue_id": ISSUE,
        "short_id": ISSUE[:8],
        "title": HOSTILE,
        "agent": "agent:w1",
        "outcome": "in-review",
        "attempt": 2,
        "max_attempts": 3,
        "duration_seconds": 12.5,
        "run_url": "https://github.com/octo-org/widgets/actions/runs/42",
    }
    values.update(kw)
    return pull_request_body(**values)  # type: ignore[arg-type]


def test_the_title_is_one_plain_line_with_the_short_id() -> None:
    title = pull_request_title(ISSUE[:8], HOSTILE)
    assert title.startswith("[0587a73a] $(touch x)")
    assert "\n" not in title and "\u202e" not in title
    assert len(pull_request_title("x", "y" * 10_000)) <= 256


def test_the_body_keeps_hostile_title_text_inert() -> None:
    text = body()
    assert "<script" not in text and "@team" not in text
    assert not re.search(r"(?<!\\)\]\(https://evil", text), "the title's link is escaped text"
    assert "\u202e" not in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert all(re.sub(r"\\\|", "", line).count("|") == 3 for line in rows[:8])


def test_the_trailer_is_the_issues_own_and_the_titles_fake_one_is_not_a_line_of_its_own() -> None:
    text = body()
    assert message_trailer_ids("subject\n" + text) == {ISSUE}
    assert text.rstrip().endswith(f"Jit-Issue: {ISSUE}")


def test_github_issues_get_closes_and_a_link() -> None:
    text = body(issue_id="#12", short_id="#12", closes=12, issue_url="https://github.com/o/r/issues/12")
    assert "\nCloses #12\n" in text and "[` #12 `](https://github.com/o/r/issues/12)" in text
    assert "Closes" not in body()


def test_links_only_from_plain_https_urls() -> None:
    assert "[the run](https://github.com/octo-org/widgets/actions/runs/42)" in body()
    for bad in ("javascript:alert(1)", "https://x/) [y](https://evil", "http://plain", "https://a b"):
        text = body(run_url=bad, issue_url=bad, title="t")
        assert "](" not in text and "| **Workflow run** | – |" in text


def test_the_gates_table_lists_each_check() -> None:
    runs = [
        GateRun(step, status, code, 1500, "t0", "t1")
        for step, status, code in zip(
            check_steps(["make test", "ruff | x"], None), ("passed", "failed"), (0, 1), strict=True
        )
    ]
    text = body(gates=runs)
    assert "| ` make test ` | postcheck | ✅ passed | 1.50 s |" in text
    assert "| ` ruff \\| x ` | postcheck | ❌ failed | 1.50 s |" in text
