"""Pure pieces of the front door: where a dispatch.toml key is written, the HTML trend chart,
the one-line why of a parked issue, the priority parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jit_dispatch.cli.config import KeyLines
from jit_dispatch.domain.values import Priority
from jit_dispatch.report.status import why_text
from jit_dispatch.report.status_html import run_link, trend_svg

TOML = """\
poll_interval_secs = 5   # line 1
sync = "git"

[[agents]]
id = "a"
command = "x"

[[agents]]
id = "b"
  max_concurent = 2
[store]
remote = "origin"
"""


@pytest.mark.parametrize(
    ("loc", "line"),
    [
        (("poll_interval_secs",), 1),
        (("sync",), 2),
        (("agents", 0, "command"), 6),
        (("agents", 1, "max_concurent"), 10),
        (("agents", 1, "timeout"), 8),  # not written: its table's header
        (("store", "remote"), 12),
        (("nowhere",), None),
    ],
)
def test_key_lines(loc: tuple, line: int | None) -> None:
    assert KeyLines(TOML).find(loc) == line


def test_trend_svg_draws_nothing_without_settles_and_scales_bars() -> None:
    hour = datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert trend_svg([]) == "" and trend_svg([(hour, 0, 0)]) == ""
    svg = trend_svg([(hour, 4, 0), (hour + timedelta(hours=1), 1, 1)])
    assert 'height="120" fill="#2da44e"' in svg, "the busiest hour fills the chart"
    assert "<title>10:00 UTC: 4 done, 0 released</title>" in svg and "peak 4/h" in svg


def test_run_links_only_for_https_urls() -> None:
    assert (
        run_link("https://github.com/o/r/actions/runs/1") == '<a href="https://github.com/o/r/actions/runs/1">run</a>'
    )
    assert run_link('https://x/"><script>') == "https://x/&quot;&gt;&lt;script&gt;"
    assert run_link("host:123") == "host:123" and run_link(None) == ""


def test_why_text() -> None:
    entry = {"attempts": 3, "when": "2026-01-01T10:20:30.5Z", "failed_gates": ["tests"], "reason": "exit code 7",
             "run": "https://github.com/o/r/actions/runs/9"}  # fmt: skip
    assert why_text(entry) == (
        "3 attempts · 2026-01-01 10:20 UTC · failed: tests · exit code 7 · run https://github.com/o/r/actions/runs/9"
    )
    assert why_text({"attempts": 1, "when": None, "failed_gates": [], "reason": None, "run": None}) == "1 attempt"


@pytest.mark.parametrize("text", ["high", "HIGH", " High ", Priority.HIGH])
def test_priority_parse_any_case(text: object) -> None:
    assert Priority.parse(text) is Priority.HIGH


def test_priority_parse_refuses_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'urgent' is not a priority \(one of critical, high, normal, low\)"):
        Priority.parse("urgent")
