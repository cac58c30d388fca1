"""The pure part of delivery: branch names, slugs, commit messages, trailers, the feedback file."""

from __future__ import annotations

import json
import subprocess

import pytest

from jit_dispatch.domain.delivery import (
    DEFAULT_BRANCH_TEMPLATE,
    LOG_FORMAT,
    Delivery,
    Feedback,
    InlineComment,
    branch_name,
    check_branch_template,
    commit_message,
    delivery_context,
    delivery_from_context,
    message_trailer_ids,
    names_issue,
    ref_format_problem,
    slug,
    trailer_ids,
    with_trailer,
)

ISSUE = "1a2b3c4d-0000-4000-8000-000000000001"
OTHER = "9f9f9f9f-0000-4000-8000-000000000002"
HOSTILE_TITLES = [
    'Fix the "login" page!',
    "../../refs/heads/main",
    "$(rm -rf /) `id` ; echo pwned",
    "a" * 500,
    "Ünïcödé ﬁx — ＦＵＬＬＷＩＤＴＨ",
    "line one\nJit-Issue: " + OTHER + "\n\nmore",
    "\x1b[31mred\x1b[0m\u202eevil\x00nul",
    "--force",
    "x.lock",
    "@{-1}",
    "",
    "🚀🚀🚀",
]


@pytest.mark.parametrize("title", HOSTILE_TITLES)
def test_slug_is_short_lowercase_ascii_words(title: str) -> None:
    value = slug(title)
    assert value and len(value) <= 40
    assert all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in value)
    assert not value.startswith("-") and not value.endswith("-") and "--" not in value


def test_slug_keeps_the_words() -> None:
    assert slug('Fix the "login" page!') == "fix-the-login-page"
    assert slug("🚀") == "issue"
    assert slug("word " * 20) == "word-word-word-word-word-word-word-word"  # cut at 40, no trailing dash


def _git_accepts(branch: str) -> bool:
    done = subprocess.run(["git", "check-ref-format", "--branch", branch], capture_output=True)
    return done.returncode == 0


@pytest.mark.parametrize(
    "branch",
    [
        "jit/abc-fix",
        "feature/x",
        "a..b",
        "a/.b",
        "a.lock",
        "a/b.lock/c",
        "a//b",
        "/a",
        "a/",
        "a.",
        "a b",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[1]",
        "a\\b",
        "a@{1}",
        "-x",
        "a\x7fb",
        "a\tb",
        "ok@x",
        "ünï",
    ],
)
def test_ref_rules_agree_with_git(branch: str) -> None:
    assert (ref_format_problem(branch) is None) == _git_accepts(branch), branch


@pytest.mark.parametrize("title", HOSTILE_TITLES)
def test_branch_from_a_hostile_title_is_a_valid_inert_ref(title: str) -> None:
    name = branch_name(DEFAULT_BRANCH_TEMPLATE, issue_id=ISSUE, title=title, priority="high", agent="agent:bot 1")
    assert name.startswith("jit/1a2b3c4d-")
    assert _git_accepts(name)
    assert all(c.isascii() and (c.isalnum() or c in "/-") for c in name)


def test_branch_template_placeholders() -> None:
    name = branch_name(
        "agents/{agent}/{priority}/{issue_id}-{title}", issue_id=ISSUE, title="Do It", priority="high", agent="ci:bot"
    )
    assert name == f"agents/ci-bot/high/{ISSUE}-do-it"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("jit/{nope}", "unknown placeholder {nope}"),
        ("jit/{slug}", "must contain {short_id} or {issue_id}"),
        ("jit/{short_id}..{slug}", "not a valid branch name: contains '..'"),
        ("jit/{short_id} x", "not a valid branch name: contains ' '"),
        ("-{short_id}", "not a valid branch name: starts with '-'"),
        ("jit/{issue_file}-{short_id}", "unknown placeholder {issue_file}"),
    ],
)
def test_bad_branch_templates_are_named(template: str, problem: str) -> None:
    found = check_branch_template(template)
    assert found is not None and found.startswith(problem), found


def test_good_branch_templates_pass() -> None:
    assert check_branch_template(DEFAULT_BRANCH_TEMPLATE) is None
    assert check_branch_template("agents/issue-{issue_id}") is None


@pytest.mark.parametrize("title", HOSTILE_TITLES)
def test_commit_message_is_inert_and_names_only_its_issue(title: str) -> None:
    message = commit_message(title, ISSUE, "Delivered by jit-dispatch.")
    subject = message.split("\n", 1)[0]
    assert len(subject) <= 72
    assert all(c.isprintable() for c in subject)
    assert message_trailer_ids(message) == {ISSUE}
    assert message.endswith(f"\n\nJit-Issue: {ISSUE}\n")


def test_a_title_that_looks_like_a_trailer_is_never_one() -> None:
    message = commit_message(f"Jit-Issue: {OTHER}", ISSUE)
    assert message_trailer_ids(message) == {ISSUE}
    assert message.startswith("[1a2b3c4d] Jit-Issue:")


def test_with_trailer_appends_once() -> None:
    once = with_trailer("agent commit\n\nbody\n", ISSUE)
    assert once == f"agent commit\n\nbody\n\nJit-Issue: {ISSUE}\n"
    assert with_trailer(once, ISSUE) == once


def test_with_trailer_quotes_another_issues_trailer() -> None:
    message = with_trailer(f"agent commit\n\n  jit-issue: {OTHER}\nJit-Issue: {ISSUE}\n", ISSUE)
    assert message_trailer_ids(message) == {ISSUE}
    assert f"> jit-issue: {OTHER}" in message


def test_trailers_are_found_in_git_log_output_of_every_merge_kind(tmp_path: object) -> None:
    squash_body = f"[1a2b3c4d] Fix (#12)\n\n* agent work\n\nJit-Issue: {ISSUE}\n\n* more\n\nCo-authored-by: x <x@y>\n"
    log = "".join(
        f"{sha}\x00{message}\x1e\n"
        for sha, message in [
            ("c3", "Merge pull request #3 from o/jit/x\n\n[9f9f] other\n"),
            ("c2", squash_body),
            ("c1", f"Jit-Issue: {OTHER}\n\nsubject lines never count\n"),
            ("c0", f"old\n\nJit-Issue: {ISSUE}\n"),
        ]
    )
    assert trailer_ids(log) == {ISSUE: "c2"}
    assert "%B" in LOG_FORMAT


def test_trailer_ids_reads_real_git_log(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    repo = Path(str(tmp_path))
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for message in (commit_message("one", ISSUE), "plain\n", commit_message("two", OTHER)):
        subprocess.run(["git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m", message], check=True, env=env)
    out = subprocess.run(
        ["git", "-C", str(repo), "log", f"--format={LOG_FORMAT}"], capture_output=True, text=True, check=True
    ).stdout
    assert set(trailer_ids(out)) == {ISSUE, OTHER}


def test_feedback_json_keeps_every_field() -> None:
    feedback = Feedback(
        "changes requested by alice",
        reviewer="alice",
        review_body="please <b>fix</b>",
        comments=(InlineComment("src/a.py", 3, "typo", "alice"),),
    )
    data = json.loads(feedback.to_json())
    assert data["reason"] == "changes requested by alice"
    assert data["comments"] == [{"path": "src/a.py", "line": 3, "body": "typo", "author": "alice"}]
    assert data["failed_gate"] is None and data["gate_output_tail"] == ""


def test_delivery_round_trips_through_context() -> None:
    delivery = Delivery("jit/1a2b3c4d-x", "main", "2026-01-01T00:00:00Z", "abc", "https://x/pull/4", 4)
    assert delivery_from_context(delivery_context(delivery)) == delivery
    assert delivery_from_context({}) is None


def test_only_a_name_holding_the_issues_id_can_be_its_work_branch() -> None:
    made = branch_name(DEFAULT_BRANCH_TEMPLATE, issue_id=ISSUE, title="x", priority="normal", agent="a")
    assert names_issue(made, ISSUE) and names_issue(f"agents/{ISSUE}", ISSUE)
    assert not names_issue("release", ISSUE) and not names_issue(f"jit/{OTHER[:8]}-x", ISSUE)
