"""An issue title written by an attacker, through the real CLI (docs/architecture.md#run, #report).

Nothing of it may run in a shell, break the step summary's Markdown, inject workflow commands
into the log or forge step outputs; and the command must still receive it byte for byte.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import clean_env, read_issue, run_cli
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

TITLE = (
    "Fix $(touch PWNED1) and `touch PWNED2`; touch PWNED3 & touch PWNED4 | tee PWNED5 "
    'it\'s "quoted" \\" \\\' {issue_id} ${HOME} %0A %25 \n'
    "::error::injected\n"
    "##[set-output name=claimed;]false ::add-mask::secret\n"
    "</details> <script>alert(1)</script> <!-- x --> *bold* _it_ [link](https://evil.example) @team | a | b |\n"
    "```bash\nrm -rf ~\n```\n"
    "````\n"
    "\ttab\r\ncarriage \x1b[31mred\x1b[0m Ünïcødé ✓ 漢字 \u202eevil"
)
FRAGMENTS = ("PWNED", "injected", "set-output name=claimed", "add-mask", "漢字", "rm -rf")  # any line showing the title

# Every placeholder, in every quoting context, and the environment variables: NUL-separated into a file.
COMMAND = (
    "printf '%s\\0' {title} \"{title}\" '{title}' \"$JIT_ISSUE_TITLE\" {issue_id} {short_id} {priority} "
    '{agent} "$JIT_ISSUE_ID" "$JIT_ISSUE_SHORT_ID" "$JIT_ISSUE_PRIORITY" "$JIT_AGENT_ID" '
    '"$JIT_ISSUE_LABELS" "$JIT_DISPATCH_ATTEMPT" > args.bin; '
    'cp {issue_file} issue-copy.json; test "$JIT_ISSUE_FILE" = {issue_file} || exit 9; '
    "printf '%s\\n' \"$JIT_ISSUE_TITLE\""  # the title in the output too: the log and the summary's tail
)


@pytest.fixture
def hostile(new_store: Callable[..., tuple[JitStore, list[str]]], tmp_path: Path) -> tuple[Path, str, Path]:
    store, (issue_id,) = new_store(NewIssue(TITLE, priority="high", labels=("type:task", "x:y")))
    assert read_issue(store.root, issue_id)["title"] == TITLE
    workdir = tmp_path / "work"
    workdir.mkdir()
    return store.root, issue_id, workdir


def assert_nothing_ran(*places: Path) -> None:
    for place in places:
        assert not [p for p in place.rglob("PWNED*")], f"the title ran as shell code in {place}"


def assert_arrived_exactly(workdir: Path, issue_id: str) -> None:
    values = (workdir / "args.bin").read_bytes().split(b"\0")
    assert values[-1] == b""
    title = TITLE.encode("utf-8")
    assert values[:4] == [title] * 4, "the title arrives byte for byte, whatever the quoting"
    assert [v.decode() for v in values[4:14]] == [
        issue_id,
        issue_id[:8],
        "high",
        "agent:w1",
        issue_id,
        issue_id[:8],
        "high",
        "agent:w1",
        "type:task,x:y",
        "1",
    ]
    assert json.loads((workdir / "issue-copy.json").read_text(encoding="utf-8"))["title"] == TITLE


def test_the_title_reaches_the_command_verbatim_and_never_runs(hostile: tuple[Path, str, Path]) -> None:
    root, issue_id, workdir = hostile
    result = run_cli("once", "--agent", "w1", "--command", COMMAND, "--jit-dir", str(root), "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.json["outcome"] == "done", result.json["reason"]
    assert result.json["title"] == TITLE, "--json carries the exact title"
    assert_arrived_exactly(workdir, issue_id)
    assert_nothing_ran(workdir, root.parent)
    assert read_issue(root, issue_id)["title"] == TITLE, "the title is stored back unchanged"


# --------------------------------------------------------------------------- GitHub Actions
def parse_github_output(text: str) -> dict[str, str]:
    """The runner's reading of `$GITHUB_OUTPUT`: `name=value` lines and `name<<DELIM` … `DELIM` blocks."""
    values: dict[str, str] = {}
    lines = text.split("\n")
    assert lines[-1] == "", "the file ends with a newline"
    index = 0
    while index < len(lines) - 1:
        line = lines[index]
        index += 1
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            assert re.fullmatch(r"[A-Za-z0-9_-]+", name), f"bad output name {name!r}"
            assert len(delimiter) >= 16, "a guessable delimiter"
            # The runner ends lines at "\n" or "\r\n" and takes the value verbatim between them.
            end = next((i for i in range(index, len(lines)) if lines[i] in (delimiter, delimiter + "\r")), None)
            assert end is not None, f"output {name}: matching delimiter not found"
            values[name] = "\n".join(lines[index:end])
            index = end + 1
        else:
            name, sep, value = line.partition("=")
            assert sep, f"invalid output line {line!r}"
            values[name] = value
    return values


def unfenced_lines(text: str) -> list[str]:
    """The lines a runner would scan for workflow commands: those outside `::stop-commands::` fences."""
    outside: list[str] = []
    token: str | None = None
    for line in text.splitlines():
        if token is None:
            match = re.fullmatch(r"::stop-commands::(.+)", line)
            if match:
                token = match.group(1)
                assert len(token) >= 16, "a guessable stop token"
                assert token not in TITLE
                continue
            outside.append(line)
        elif line == f"::{token}::":
            token = None
    assert token is None, "a stop-commands fence is never closed"
    return outside


def split_code_blocks(markdown: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(lines outside fenced code blocks, [(fence, body lines)]), fences closing as CommonMark says."""
    outside: list[str] = []
    blocks: list[tuple[str, list[str]]] = []
    lines = iter(markdown.split("\n"))
    for line in lines:
        opening = re.match(r"^(`{3,})[^`]*$", line)
        if not opening:
            outside.append(line)
            continue
        fence, body = opening.group(1), []
        for inner in lines:
            if re.fullmatch(rf"`{{{len(fence)},}}\s*", inner):
                break
            body.append(inner)
        else:
            raise AssertionError("a code block runs to the end of the summary")
        blocks.append((fence, body))
    return outside, blocks


def unescaped_pipes(line: str) -> int:
    """`|` not escaped by a backslash (a pipe after an even run of backslashes is a cell border)."""
    count = 0
    for match in re.finditer(r"(\\*)\|", line):
        if len(match.group(1)) % 2 == 0:
            count += 1
    return count


def test_under_actions_the_title_cannot_break_the_summary_the_log_or_the_outputs(
    hostile: tuple[Path, str, Path], tmp_path: Path
) -> None:
    root, issue_id, workdir = hostile
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs.txt"
    env = clean_env(
        GITHUB_ACTIONS="true",
        GITHUB_STEP_SUMMARY=str(summary),
        GITHUB_OUTPUT=str(outputs),
        GITHUB_RUN_ID="42",
        GITHUB_REPOSITORY="org/repo",
    )
    result = run_cli("once", "--agent", "w1", "--command", COMMAND, "--jit-dir", str(root), cwd=workdir, env=env)
    assert result.returncode == 0, result.stderr
    assert_arrived_exactly(workdir, issue_id)
    assert_nothing_ran(workdir, root.parent)
    assert read_issue(root, issue_id)["state"] == "done"

    # The log: every line that shows the title (the dispatcher's or the command's) is fenced.
    for stream in (result.stdout, result.stderr):
        for line in unfenced_lines(stream):
            assert not any(fragment in line for fragment in FRAGMENTS), f"unfenced title text in the log: {line!r}"
    assert "::error::injected" in result.stdout, "the command's output is shown (inside its fence)"

    # The summary.
    markdown = summary.read_text(encoding="utf-8")
    outside, blocks = split_code_blocks(markdown)
    prose = "\n".join(outside)
    assert "<script" not in prose.lower()
    assert "<!--" not in prose
    assert "[link](" not in prose, "no live link from the title"
    assert prose.count("</details>") == len(re.findall(r"^<details>", prose, re.MULTILINE)), (
        "a </details> from the title closed the dispatcher's block"
    )
    assert "\x1b" not in markdown and "\r" not in markdown
    assert "\u202e" not in prose, "no bidi override from the title in the summary's text"
    table_start = outside.index("| | |")
    table = outside[table_start : outside.index("", table_start)]
    assert len(table) >= 14
    for row in table:
        assert row.startswith("|") and row.endswith("|"), f"a broken table row: {row!r}"
        assert unescaped_pipes(row) == 3, f"a cell border from the title: {row!r}"
    title_row = next(row for row in table if row.startswith("| **Title** |"))
    assert "&lt;/details&gt;" in title_row and "&lt;script&gt;" in title_row, "HTML from the title is escaped"

    assert len(blocks) == 1, "one code block: the output tail"
    fence, body = blocks[0]
    longest = max((len(run) for run in re.findall(r"`+", "\n".join(body))), default=0)
    assert longest >= 4, "the tail holds the title's own fences"
    assert len(fence) > longest, "the tail's fence outruns every backtick run inside it"
    assert "::error::injected" in body and "漢字" in "\n".join(body)

    # The step outputs parse back to the exact title.
    values = parse_github_output(outputs.read_bytes().decode("utf-8"))
    assert values["title"] == TITLE
    assert values["claimed"] == "true", "the title's ##[set-output] forged nothing"
    assert (values["outcome"], values["issue-id"], values["short-id"]) == ("done", issue_id, issue_id[:8])
    assert values["exit-code"] == "0" and values["attempt"] == "1"
    assert set(values) >= {"claimed", "issue-id", "short-id", "title", "outcome", "exit-code", "duration-seconds"}


def test_the_summary_output_tail_carries_no_bidi_overrides(hostile: tuple[Path, str, Path], tmp_path: Path) -> None:
    root, _, workdir = hostile
    summary = tmp_path / "summary.md"
    env = clean_env(GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(summary))
    result = run_cli("once", "--agent", "w1", "--command", COMMAND, "--jit-dir", str(root), cwd=workdir, env=env)
    assert result.returncode == 0, result.stderr
    markdown = summary.read_text(encoding="utf-8")
    assert "漢字" in split_code_blocks(markdown)[1][0][1][-1], "the tail shows the title's last line"
    assert not re.search("[\u202a-\u202e\u2066-\u2069]", markdown), "a bidi override reached the summary"
