"""`status` answers "why": each parked, released and gated issue with its attempts, last reason,
when, the run and the failed gates, in every format; `--format markdown|html` print to stdout
anywhere; the HTML page is self-contained (no script) with the settles-per-hour chart. Real runs
of `once` make the history; the real CLI reads it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from helpers import clean_env, run_cli
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

StoreFactory = Callable[..., tuple[JitStore, list[str]]]
RUN = "https://github.com/org/repo/actions/runs/42"
HOSTILE = '<script>alert(1)</script> & "quotes"'


def history(new_store: StoreFactory) -> tuple[Path, dict[str, str]]:
    store, ids = new_store(
        NewIssue("parks", "critical"),
        NewIssue(HOSTILE, "high"),
        NewIssue("waits for review", "normal", gates_required=("review",)),
        NewIssue("done one", "low"),
    )
    root = store.root
    (root / "gates.json").write_text(json.dumps({"gates": {"review": {"key": "review", "stage": "postcheck",
                                                                      "mode": "manual"}}}))  # fmt: skip
    env = clean_env(GITHUB_RUN_ID="42", GITHUB_REPOSITORY="org/repo", GITHUB_SERVER_URL="https://github.com")
    runs = (("exit 7", ["--max-attempts", "1"]), ("exit 5", []),
            ("true", ["--issue", ids[2]]), ("true", ["--issue", ids[3]]))  # fmt: skip
    for command, extra in runs:
        ran = run_cli("once", "--jit-dir", str(root), "--agent", "w1", "--command", command, *extra, env=env)
        assert ran.returncode in (0, 1), ran.stderr
    return root, dict(zip(("parked", "released", "gated", "done"), ids, strict=True))


def test_json_says_why_for_each_parked_released_and_gated_issue(new_store: StoreFactory) -> None:
    root, ids = history(new_store)
    result = run_cli("status", "--jit-dir", str(root), "--format", "json")
    assert result.returncode == 0, result.stderr
    data = result.json
    [parked], [released], [gated] = data["parked"], data["released"], data["gated"]
    assert (parked["issue_id"], parked["attempts"], parked["run"]) == (ids["parked"], 1, RUN)
    assert parked["reason"].startswith("exit code 7") and parked["when"]
    assert (released["issue_id"], released["attempts"], released["reason"][:11]) == (ids["released"], 1, "exit code 5")
    assert released["run"] == RUN and released["when"]
    assert gated["issue_id"] == ids["gated"]
    assert [g["key"] for g in gated["gates_needed"]] == ["review"]
    assert data["counts"]["done"] == 1


def test_text_and_markdown_print_the_why_on_stdout_outside_actions(new_store: StoreFactory) -> None:
    root, ids = history(new_store)
    text = run_cli("status", "--jit-dir", str(root)).stdout
    block = text.split("Parked (1):")[1]
    assert ids["parked"][:8] in block and "1 attempt · " in block and "exit code 7" in block and RUN in block
    assert "waits for: review (manual)" in text.split("Gated: waiting for gates (1):")[1]
    markdown = run_cli("status", "--jit-dir", str(root), "--format", "markdown")
    assert markdown.returncode == 0, markdown.stderr
    assert "#### Parked (1)" in markdown.stdout and f"[run]({RUN})" in markdown.stdout
    assert "#### Settles per hour" in markdown.stdout, "the trend outside Actions too"
    assert "<script>" not in markdown.stdout


def test_html_is_self_contained_with_the_trend_chart(new_store: StoreFactory) -> None:
    root, _ = history(new_store)
    result = run_cli("status", "--jit-dir", str(root), "--format", "html")
    assert result.returncode == 0, result.stderr
    page = result.stdout
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page.lower(), "no script; the hostile title is escaped"
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    assert not re.search(r"""(src|href)=["'](?!https://github\.com/org/repo/actions/runs/42)""", page), "no fetches"
    svg = re.search(r"<svg .*?</svg>", page, re.S)
    assert svg and svg.group(0).count("<rect") == 24, "two bars (done, released) for each of 12 hours"
    assert "2 done" in svg.group(0) or "1 done" in svg.group(0)
    assert f'<a href="{RUN}">run</a>' in page
    assert "Parked (1)" in page and "Released after failed attempts (1)" in page


def test_summary_flag_writes_the_dashboard_and_still_prints(new_store: StoreFactory, tmp_path: Path) -> None:
    root, _ = history(new_store)
    summary = tmp_path / "summary.md"
    result = run_cli("status", "--jit-dir", str(root), "--summary", "--format", "text",
                     env=clean_env(GITHUB_STEP_SUMMARY=str(summary)))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "#### Parked (1)" in summary.read_text()
    assert result.stdout.startswith("jit-dispatch status of ")
