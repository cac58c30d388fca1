"""GitHub Issues as the tracker, against a stateful fake of GitHub's REST API (`responses`).

The dispatcher runs for real: `dispatch_once` in-process with the GitHub tracker, the command
as a real child process, and the CLI in-process where exit codes, the log and the step summary
matter (`responses` patches this process only).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from github_fake import REPO, FakeGitHub, serving, user, without_pacing
from helpers import PROJECT_ROOT, clean_env, parse_outputs
from jit_dispatch.cli.main import main
from jit_dispatch.domain.secrets import Scrubber
from jit_dispatch.domain.selection import Filters, plan
from jit_dispatch.engine.dispatch import Request, dispatch_once
from jit_dispatch.errors import TrackerError
from jit_dispatch.process import credentials
from jit_dispatch.process.child import CancelToken, RunResult
from jit_dispatch.report.summary import summary_markdown
from jit_dispatch.trackers.github import api as github_api
from jit_dispatch.trackers.github import rules
from jit_dispatch.trackers.github.tracker import GitHubTracker
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

TOKEN = "ghs_0123456789abcdefSECRETtoken0123456789"
COMMENTS = r"/repos/octo-org/widgets/issues/\d+/comments"


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with serving() as server:
        yield server


@pytest.fixture(autouse=True)
def no_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    without_pacing(monkeypatch)


def tracker(**settings: Any) -> GitHubTracker:
    return GitHubTracker(rules.GitHubSettings(REPO, **settings), TOKEN, sleep=lambda _s: None)


class Hooks:
    def __init__(self, on_finish: Any = None) -> None:
        self.output_bytes = b""
        self.on_finish = on_finish

    def command_starting(self, issue: Any, attempt: int) -> None:
        pass

    def output(self, chunk: bytes) -> None:
        self.output_bytes += chunk

    def command_finished(self, run: RunResult) -> None:
        if self.on_finish:
            self.on_finish()

    def gate_starting(self, step: Any) -> None:
        pass

    def gate_finished(self, run: Any) -> None:
        pass


def dispatch(t: GitHubTracker, command: str = "echo working on {issue_id}", hooks: Hooks | None = None, **kw: Any):
    request = Request(agent=kw.pop("agent", "agent:runner-a"), command=command, run_ref="https://run/1", **kw)
    return dispatch_once(t, request, CancelToken(), hooks or Hooks(), base_env=clean_env())


def render(result: Any) -> str:
    return summary_markdown(result, 3)


def markers(fake: FakeGitHub, number: int) -> list[rules.Marker]:
    return rules.parse_markers(fake.comments[number], frozenset({"github-actions[bot]"}))


# ---------------------------------------------------------------------------- selection


def test_listing_paginates_skips_pull_requests_and_orders_by_priority_time_number(fake: FakeGitHub) -> None:
    fake.add_issue(1, "old normal", created_at="2025-01-01T00:00:00Z")
    fake.add_issue(2, "high", labels=("dispatch", "P1"), created_at="2025-03-01T00:00:00Z")
    fake.add_issue(3, "a pull request", labels=("dispatch", "P0"), pull_request=True)
    fake.add_issue(4, "same second, lower number", created_at="2025-02-01T00:00:00Z")
    fake.add_issue(5, "same second, higher number", created_at="2025-02-01T00:00:00Z")
    fake.add_issue(6, "low", labels=("dispatch", "P3"))
    fake.add_issue(7, "not for the dispatcher", labels=("bug",))
    t = tracker(priority_labels=rules.parse_priority_labels("critical=P0,high=P1,normal=P2,low=P3"))
    snapshot = t.snapshot()
    assert fake.count("GET", r"/repos/octo-org/widgets/issues") == 3  # 6 labelled items, 2 a page, via Link
    result = plan(snapshot.issues, snapshot.states, snapshot.gates, Filters())
    assert [i.id for i in result.dispatchable] == ["#2", "#1", "#4", "#5", "#6"]
    assert "#3" not in snapshot.states and "#7" not in snapshot.states
    assert fake.count("GET", COMMENTS) == 0  # selection reads no comments


def test_what_is_not_dispatchable(fake: FakeGitHub) -> None:
    fake.add_issue(1, "claimed", labels=("dispatch", "dispatch:claimed"))
    fake.add_issue(2, "parked", labels=("dispatch", "dispatch:parked"))
    fake.add_issue(3, "a person is on it", assignees=(user("octocat"),))
    fake.add_issue(4, "a bot is assigned", assignees=(user("Copilot", "Bot", 9),))
    fake.add_issue(5, "blocked by an open issue", blocked_by=(1,))
    fake.add_issue(6, "blocked by a closed issue", blocked_by=(8,))
    fake.add_issue(8, "done blocker", state="closed", state_reason="completed")
    fake.add_issue(9, "fine")
    snapshot = tracker().snapshot()
    result = plan(snapshot.issues, snapshot.states, snapshot.gates, Filters())
    assert sorted(i.id for i in result.dispatchable) == ["#4", "#6", "#9"]
    assert [(h.issue.id, h.reason.split(":")[0]) for h in result.held] == [("#2", "parked")]
    # only issues GitHub counts an open blocker for are asked for their dependencies
    assert fake.count("GET", r".*/dependencies/blocked_by") == 1

    everyone = tracker(include_assigned=True).snapshot()
    assert "#3" in [i.id for i in plan(everyone.issues, everyone.states, {}, Filters()).dispatchable]


def test_dependencies_without_a_summary_and_servers_without_the_api(fake: FakeGitHub) -> None:
    fake.add_issue(1, "blocker")
    fake.add_issue(2, "blocked, no summary in the payload", blocked_by=(1,), summary=False)
    snapshot = tracker().snapshot()
    assert [i.id for i in plan(snapshot.issues, snapshot.states, {}, Filters()).dispatchable] == ["#1"]

    fake.dependencies_api = False  # an older GitHub Enterprise Server: 404, "no dependency data"
    fake.add_issue(3, "no summary either", summary=False)
    t = tracker()
    snapshot = t.snapshot()
    assert sorted(i.id for i in plan(snapshot.issues, snapshot.states, {}, Filters()).dispatchable) == [
        "#1",
        "#2",
        "#3",
    ]
    assert fake.count("GET", r".*/dependencies/blocked_by") == 1 + 1  # asked once, then not again


def test_filters_apply_to_github_labels(fake: FakeGitHub) -> None:
    fake.add_issue(1, labels=("dispatch", "area:api", "priority:high"))
    fake.add_issue(2, labels=("dispatch", "area:ui", "bug"))
    fake.add_issue(3, labels=("dispatch", "priority:low"))
    snapshot = tracker().snapshot()

    def ids(filters: Filters) -> list[str]:
        return [i.id for i in plan(snapshot.issues, snapshot.states, {}, filters).dispatchable]

    assert ids(Filters(labels=("area:*",))) == ["#1", "#2"]
    assert ids(Filters(exclude_labels=("bug",))) == ["#1", "#3"]
    assert ids(Filters(min_priority="normal")) == ["#1", "#2"]
    assert ids(Filters(issue_id="#3")) == ["#3"]


# ---------------------------------------------------------------------------- a run, settled


def test_done_closes_the_issue_with_the_summary_as_comment(fake: FakeGitHub) -> None:
    fake.add_issue(1, "Add the <b>widget</b> @everyone")
    t = tracker()
    result = dispatch(t, "echo working on {issue_id}; printf '%s\\n' \"$JIT_ISSUE_TITLE\"")
    assert result.outcome == "done" and result.issue.id == "#1" and result.attempt == 1
    assert "working on #1" in result.output_tail
    assert fake.issues[1]["state"] == "closed" and fake.issues[1]["state_reason"] == "completed"
    assert "dispatch:claimed" not in fake.labels(1)
    kinds = [m.kind for m in markers(fake, 1)]
    assert kinds == ["claim", "done"]
    assert t.record_result(result, render) is None
    done = fake.bodies(1)[-1]
    assert done.startswith("<!-- jit-dispatch:done ") and "✅ **jit-dispatch**: done by" in done
    heading = next(line for line in done.splitlines() if line.startswith("### "))
    assert heading.startswith("### ✅ jit-dispatch · done · `#1`")
    assert "<b>" not in heading and "@everyone" not in heading  # issue text is inert outside the code block
    assert "```text\nworking on #1\nAdd the <b>widget</b> @everyone\n```" in done  # the output tail, fenced


def test_done_leaves_an_issue_closed_meanwhile_as_it_is(fake: FakeGitHub) -> None:
    fake.add_issue(1)

    def closed_as_not_planned() -> None:
        fake.issues[1].update(state="closed", state_reason="not_planned")

    result = dispatch(tracker(), "true", hooks=Hooks(on_finish=closed_as_not_planned))
    assert result.outcome == "done" and fake.issues[1]["state_reason"] == "not_planned"
    assert fake.count("PATCH", r"/repos/octo-org/widgets/issues/1") == 0


def test_checks_are_the_quality_gates_of_github_issues(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.add_issue(1, "needs a build")
    built = tmp_path / "built"
    check = f"test -f {built} && echo check saw {{issue_id}}"
    failed = dispatch(tracker(), "true", checks=(check,))
    reason = f"check '{check}' failed (exit 1)"
    assert (failed.outcome, failed.reason, failed.failed_gate) == ("released", reason, check)
    assert fake.issues[1]["state"] == "open"
    assert markers(fake, 1)[-1].data["reason"] == f"check '{check}' failed (exit 1)"
    done = dispatch(tracker(), f"touch {built}", checks=(check,))
    assert done.outcome == "done" and fake.issues[1]["state"] == "closed"
    assert [(g.step.key, g.status, g.output) for g in done.gates] == [(check, "passed", "check saw #1\n")]


def test_result_comment_stays_under_githubs_limit(fake: FakeGitHub) -> None:
    fake.add_issue(1, "loud")
    t = tracker()
    result = dispatch(t, "python3 -c \"import sys; [print('`' * 300 + str(i)) for i in range(3000)]\"; exit 3")
    assert result.outcome == "released"
    assert t.record_result(result, render) is None
    body = fake.bodies(1)[-1]
    assert len(body) < rules.COMMENT_LIMIT and body.startswith("<!-- jit-dispatch:release ")


def test_failure_releases_with_reason_and_parks_at_the_limit(fake: FakeGitHub) -> None:
    fake.add_issue(1, "flaky")
    t = tracker()
    first = dispatch(t, "echo boom; exit 7", max_attempts=2)
    assert (first.outcome, first.reason, first.attempt) == ("released", "exit code 7", 1)
    assert fake.issues[1]["state"] == "open" and fake.labels(1) == ["dispatch"]
    release = markers(fake, 1)[-1]
    assert release.kind == "release" and release.data["reason"] == "exit code 7" and release.data["attempt"] == 1
    assert "released by ` agent:runner-a ` after attempt 1 of 2: exit code 7" in fake.bodies(1)[-1]

    second = dispatch(tracker(), "exit 7", max_attempts=2)
    assert (second.outcome, second.attempt) == ("parked", 2)
    assert "dispatch:parked" in fake.labels(1) and "dispatch:claimed" not in fake.labels(1)
    assert "Parked: remove the `dispatch:parked` label" in fake.bodies(1)[-1]
    idle = dispatch(tracker(), "exit 0")
    assert idle.outcome == "idle" and "held back" in idle.reason


def test_a_strangers_fake_markers_do_not_count(fake: FakeGitHub) -> None:
    """Anyone may comment on a public issue; forged failure or claim markers are ignored."""
    fake.add_issue(1)
    mallory = user("mallory", uid=666)
    for n in range(5):
        fake.add_comment(1, rules.render_marker("release", {"nonce": f"x{n}", "reason": "forged"}), mallory, "NONE")
    fake.add_comment(1, rules.render_marker("claim", {"nonce": "forged", "agent": "agent:mallory"}), mallory)
    result = dispatch(tracker(), "exit 1", max_attempts=3)
    assert (result.outcome, result.attempt) == ("released", 1)


def test_unpark_starts_the_count_over(fake: FakeGitHub) -> None:
    fake.add_issue(1)
    assert dispatch(tracker(), "exit 1", max_attempts=1).outcome == "parked"
    t = tracker()
    assert t.unpark("#1") is True and "dispatch:parked" not in fake.labels(1)
    assert t.unpark("#1") is False
    again = dispatch(tracker(), "exit 1", max_attempts=2)
    assert (again.outcome, again.attempt) == ("released", 1)


def test_heartbeat_edits_the_claim_comment(fake: FakeGitHub) -> None:
    fake.add_issue(1)
    t = tracker()
    claimed = t.claim("#1", "agent:a", "https://run/1", Filters())
    assert claimed is not None and claimed.state == "in_progress" and claimed.assignee == "agent:a"
    comments_before = len(fake.comments[1])
    assert t.heartbeat("#1", "agent:a") is True
    assert len(fake.comments[1]) == comments_before
    assert "dispatch.heartbeat_at" in rules.marker_context(markers(fake, 1))
    assert tracker().heartbeat("#1", "agent:a") is False  # not this process's claim


# ---------------------------------------------------------------------------- the race


def test_claim_race_lower_comment_wins_and_the_loser_takes_the_next_issue(fake: FakeGitHub) -> None:
    """B reads #1 before A labels it: both post a claim; B's comment is older, so B wins."""
    fake.add_issue(1, "top", labels=("dispatch", "priority:high"))
    fake.add_issue(2, "next")
    a, b = tracker(), tracker()
    got: dict[str, Any] = {}
    labels_of_1 = r"/repos/octo-org/widgets/issues/1/labels"
    fake.before("POST", labels_of_1, lambda: got.update(b=b.claim("#1", "agent:b", "rb", Filters())))
    result = dispatch(a, "echo A on {issue_id}")
    assert got["b"] is not None and got["b"].id == "#1" and got["b"].assignee == "agent:b"
    assert result.outcome == "done" and result.issue.id == "#2"  # A lost #1 and moved on
    live = rules.live_claims(markers(fake, 1))
    assert [c.agent for c in live] == ["agent:b"]  # A deleted its own claim comment
    assert fake.count("DELETE", r"/repos/octo-org/widgets/issues/comments/\d+") == 1
    assert "dispatch:claimed" in fake.labels(1) and fake.issues[1]["state"] == "open"
    assert b.complete("#1", "agent:b").outcome == "done"


def test_a_runner_arriving_after_the_label_backs_off_without_commenting(fake: FakeGitHub) -> None:
    fake.add_issue(1)
    a, b = tracker(), tracker()
    got: dict[str, Any] = {}
    fake.before("POST", COMMENTS, lambda: got.update(b=b.claim("#1", "agent:b", "rb", Filters())))
    assert a.claim("#1", "agent:a", "ra", Filters()) is not None
    assert got["b"] is None
    assert [m.agent for m in markers(fake, 1)] == ["agent:a"]


def test_taking_an_issue_back_by_removing_the_label_makes_the_old_run_lost(fake: FakeGitHub) -> None:
    fake.add_issue(1)
    b = tracker()

    def someone_takes_it_back() -> None:
        fake.issues[1]["labels"] = [lbl for lbl in fake.issues[1]["labels"] if lbl["name"] != "dispatch:claimed"]
        assert b.claim("#1", "agent:b", "rb", Filters()) is not None

    result = dispatch(tracker(), "echo slow", hooks=Hooks(on_finish=someone_takes_it_back))
    assert result.outcome == "lost"
    assert fake.issues[1]["state"] == "open"  # not closed by the runner that lost it
    assert [m.kind for m in markers(fake, 1)] == ["claim", "claim"]  # and no comment as owner
    assert rules.winning_claim(markers(fake, 1)).agent == "agent:b"


def test_reaped_claim_is_lost_and_the_reaper_sees_claims_like_jit_ones(fake: FakeGitHub) -> None:
    fake.add_issue(1)
    fake.add_issue(2)
    runner = tracker()
    assert runner.claim("#1", "agent:a", "https://run/1", Filters()) is not None
    reaper = tracker()
    snapshot = reaper.snapshot(full_states=("ready", "in_progress"))
    claimed = [i for i in snapshot.issues if i.state == "in_progress"]
    assert [(i.id, i.assignee) for i in claimed] == [("#1", "agent:a")]
    assert claimed[0].context["dispatch.claimed_at"] and claimed[0].context["dispatch.run"] == "https://run/1"
    assert reaper.release("#1", "agent:a", "stale claim (silent 3h)", 3).outcome == "released"
    assert runner.complete("#1", "agent:a").outcome == "lost"
    assert fake.issues[1]["state"] == "open" and "dispatch:claimed" not in fake.labels(1)


# ---------------------------------------------------------------------------- failures of the API


def test_comment_post_502_retried_once_without_a_duplicate(fake: FakeGitHub) -> None:
    fake.add_issue(1)
    fake.fail("POST", COMMENTS, 502, "Server Error")  # failed before GitHub stored it
    fake.fail("POST", COMMENTS, 502, "Server Error", apply_first=True)  # stored, but answered 502
    result = dispatch(tracker(), "exit 0")
    assert result.outcome == "done"
    assert [m.kind for m in markers(fake, 1)] == ["claim", "done"]  # one claim, one done: no duplicates
    # claim: 502, posted again; done: stored but 502, found by its nonce instead of posted again
    assert fake.count("POST", COMMENTS) == 3


def test_secondary_rate_limit_with_short_retry_after_is_retried(fake: FakeGitHub) -> None:
    fake.add_issue(1)
    message = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
    fake.fail("GET", r"/repos/octo-org/widgets/issues", 403, message, {"Retry-After": "1"})
    snapshot = tracker().snapshot()
    assert [i.id for i in snapshot.issues] == ["#1"]
    assert fake.count("GET", r"/repos/octo-org/widgets/issues") == 2


def test_a_long_rate_limit_fails_fast_with_a_clear_error(fake: FakeGitHub) -> None:
    fake.add_issue(1)
    message = "You have exceeded a secondary rate limit."
    fake.fail("GET", r"/repos/octo-org/widgets/issues", 403, message, {"Retry-After": "60"})
    started = time.monotonic()
    with pytest.raises(TrackerError, match=r"secondary rate limit \(403.*wait 60s"):
        tracker().snapshot()
    assert time.monotonic() - started < 5
    assert fake.count("GET", r"/repos/octo-org/widgets/issues") == 1


def test_5xx_on_reads_is_retried_by_pygithub_but_not_past_a_hurry(fake: FakeGitHub) -> None:
    fake.add_issue(1)
    fake.fail("GET", r"/repos/octo-org/widgets/issues", 502, "Bad Gateway")
    assert len(tracker().snapshot().issues) == 1
    fake.fail("GET", r"/repos/octo-org/widgets/issues", 502, "Bad Gateway")
    hurried = tracker()
    hurried.hurry(0)  # cancelled, and no time left: no retry may wait at all
    with pytest.raises(TrackerError, match="GitHub API error 502"):
        hurried.snapshot()


@pytest.mark.parametrize(
    ("status", "message", "words"),
    [
        (401, "Bad credentials", "rejected the token"),
        (403, "Resource not accessible by integration", "GitHub refused"),
        (404, "Not Found", "not found (404)"),
    ],
)
def test_auth_errors_name_the_permission(fake: FakeGitHub, status: int, message: str, words: str) -> None:
    fake.add_issue(1)
    fake.fail("GET", r"/repos/octo-org/widgets/issues", status, message)
    with pytest.raises(TrackerError) as caught:
        tracker().snapshot()
    assert words in str(caught.value) and "`issues: write`" in str(caught.value)
    assert TOKEN not in str(caught.value) and TrackerError.exit_code == 3


def test_a_claim_refused_half_way_leaves_no_trace(fake: FakeGitHub) -> None:
    fake.add_issue(1)
    fake.fail("POST", COMMENTS, 403, "Resource not accessible by integration")
    with pytest.raises(TrackerError, match="`issues: write`"):
        dispatch(tracker(), "exit 0")
    assert fake.labels(1) == ["dispatch"] and fake.comments[1] == []


def test_markers_count_from_our_own_identity_people_with_write_access_and_trusted_actors(fake: FakeGitHub) -> None:
    """Another installed app's bot cannot park or settle an issue; a person with write access can."""
    fake.add_issue(1)
    other = user("other-app[bot]", "Bot", 99)
    for n in range(3):  # would park it, were they trusted
        fake.add_comment(1, rules.render_marker("release", {"nonce": f"o{n}", "reason": "forged"}), other, "NONE")
    result = dispatch(tracker(), "exit 0")
    assert result.outcome == "done" and result.attempt == 1
    fake.add_issue(2)
    fake.permissions["maintainer"] = "maintain"
    fake.add_comment(
        2, rules.render_marker("release", {"nonce": "p", "reason": "by hand"}), user("maintainer"), "MEMBER"
    )
    fake.add_comment(2, rules.render_marker("release", {"nonce": "o", "reason": "app"}), other, "NONE")
    assert dispatch(tracker(), "exit 0").attempt == 2  # the member's release counts, the app's does not
    fake.add_issue(3)
    fake.add_comment(3, rules.render_marker("release", {"nonce": "o", "reason": "app"}), other, "NONE")
    assert dispatch(tracker(trusted_actors=("Other-App[bot]",)), "exit 0").attempt == 2


def test_an_organization_member_without_write_access_cannot_park_an_issue(fake: FakeGitHub) -> None:
    """The finding: `author_association: MEMBER` was taken as write access; three forged release markers
    from a member with read permission parked an issue a failure early."""
    fake.add_issue(1)
    member = user("member-only", uid=55)
    for n in range(3):
        fake.add_comment(1, rules.render_marker("release", {"nonce": f"m{n}", "reason": "forged"}), member, "MEMBER")
    fake.permissions["member-only"] = "triage"
    t = tracker()
    result = dispatch(t, "exit 1")
    assert result.outcome == "released" and result.attempt == 1 and "dispatch:parked" not in fake.labels(1)
    asked = fake.count("GET", r"/repos/octo-org/widgets/collaborators/member-only/permission")
    assert asked == 1  # asked once for the whole run, however many times the comments were read


def test_retry_sleeps_never_outlast_the_deadline() -> None:
    class Response:
        def __init__(self) -> None:
            self.headers = {"Retry-After": "60"}

    budget = github_api.Budget()
    retry = github_api.BoundedRetry(budget, total=2)
    budget.deadline = time.monotonic() + 0.2
    assert not budget.allows(60) and not budget.allows(0.5) and budget.allows(0)
    started = time.monotonic()
    retry.sleep(Response())  # GitHub asks for 60 s; 0.2 s are left
    assert time.monotonic() - started < 0.5
    assert not budget.allows(0)


# ---------------------------------------------------------------------------- the CLI


@pytest.fixture
def actions_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    for key in list(os.environ):
        if key.startswith(("GITHUB_", "JIT_", "RUNNER_")):
            monkeypatch.delenv(key)
    files = {"summary": tmp_path / "summary.md", "output": tmp_path / "output.txt"}
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(files["summary"]))
    monkeypatch.setenv("GITHUB_OUTPUT", str(files["output"]))
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("RUNNER_TEMP", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(credentials, "_scrubber", Scrubber())  # what a fresh process knows
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield files
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def run_main(*args: str) -> int:
    """The CLI in-process; the environment as it was before (a process's changes to it end with it)."""
    saved = dict(os.environ)
    try:
        with pytest.raises(SystemExit) as ended:
            main(list(args))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return int(ended.value.code or 0)


def assert_token_only_masked(text: str) -> None:
    """The token may appear only inside the `::add-mask::` command that hides it."""
    assert TOKEN not in re.sub(r"^::add-mask::.*$", "", text, flags=re.M)


def test_cli_once_in_actions_never_shows_the_token(
    fake: FakeGitHub, actions_env: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    fake.add_issue(12, "Token is " + TOKEN[:6])
    code = run_main("once", "--tracker", "github", "--agent", "ci", "--command", 'echo "$GITHUB_TOKEN" | wc -c')
    out, err = capfd.readouterr()
    assert code == 0
    assert f"::add-mask::{TOKEN}" in err
    for text in (out, err, actions_env["summary"].read_text(), actions_env["output"].read_text(), *fake.bodies(12)):
        assert_token_only_masked(text)
    outputs = parse_outputs(actions_env["output"].read_text())
    assert outputs["outcome"] == "done" and outputs["issue-id"] == "#12" and outputs["short-id"] == "#12"
    assert "github:octo-org/widgets" in actions_env["summary"].read_text()
    assert "### ✅ jit-dispatch · done" in fake.bodies(12)[-1]  # the summary, as the result comment


def test_a_command_echoing_the_token_does_not_put_it_in_the_summary_or_comment(
    fake: FakeGitHub, actions_env: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    fake.add_issue(1)
    command = 'echo "leak: $GITHUB_TOKEN"; exit 4'
    code = run_main("once", "--tracker", "github", "--agent", "ci", "--command", command, "--pass-token")
    out, err = capfd.readouterr()
    assert code == 1
    assert "leak: ***" in out  # the live log: cut here, and hidden by the runner, which `::add-mask::` told
    assert f"::add-mask::{TOKEN}" in err
    for text in (actions_env["summary"].read_text(), actions_env["output"].read_text(), *fake.bodies(1)):
        assert TOKEN not in text
    assert "leak: ***" in actions_env["summary"].read_text() and "leak: ***" in fake.bodies(1)[-1]


def test_a_check_echoing_the_token_does_not_put_it_in_the_summary_outputs_or_comment(
    fake: FakeGitHub, actions_env: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    fake.add_issue(1)
    check = 'echo "check leak: $GITHUB_TOKEN"; exit 5'
    code = run_main(
        "once", "--tracker", "github", "--agent", "ci", "--command", "true", "--check", check, "--pass-token"
    )
    capfd.readouterr()
    assert code == 1
    for text in (actions_env["summary"].read_text(), actions_env["output"].read_text(), *fake.bodies(1)):
        assert TOKEN not in text
    assert "check leak: ***" in actions_env["summary"].read_text()


def test_the_actions_token_is_the_dispatchers_not_the_commands(
    fake: FakeGitHub, actions_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Action passes its token as JIT_DISPATCH_GITHUB_TOKEN; the command (untrusted issue text) never sees it."""
    monkeypatch.delenv("GITHUB_TOKEN")
    monkeypatch.setenv("JIT_DISPATCH_GITHUB_TOKEN", TOKEN)
    fake.add_issue(1)
    command = 'env | grep -c "SECRETtoken" && exit 9 || exit 0'
    assert run_main("once", "--tracker", "github", "--agent", "ci", "--command", command) == 0
    assert fake.issues[1]["state"] == "closed"


def test_cli_status_reap_and_release_work_on_github(
    fake: FakeGitHub, actions_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS")
    fake.add_issue(1, "stale", labels=("dispatch", "dispatch:claimed"))
    old = {"nonce": "n-old", "agent": "agent:gone", "run": "https://run/0", "at": "2025-01-01T00:00:00Z"}
    fake.add_comment(1, rules.render_marker("claim", old) + "\nclaimed")
    fake.add_issue(2, "running", labels=("dispatch", "dispatch:claimed"))
    fresh = {**old, "nonce": "n-new", "agent": "agent:busy", "at": gl_now()}
    fake.add_comment(2, rules.render_marker("claim", fresh) + "\nclaimed")
    fake.add_issue(3, "waiting", labels=("dispatch", "priority:high"))

    assert run_main("status", "--tracker", "github", "--json") == 0
    board = capfd.readouterr().out
    assert '"#3"' in board and "agent:gone" in board and "agent:busy" in board

    assert run_main("reap", "--tracker", "github", "--older-than", "1h") == 0
    assert "#1" in capfd.readouterr().out
    assert "dispatch:claimed" not in fake.labels(1) and "dispatch:claimed" in fake.labels(2)
    assert [m.kind for m in markers(fake, 1)] == ["claim", "release"]
    assert markers(fake, 1)[-1].data["nonce"] == "n-old"

    assert run_main("release", "--tracker", "github", "#2", "a person needs it", "--park") == 0
    assert fake.labels(2) == ["dispatch", "dispatch:parked"]
    assert run_main("unpark", "--tracker", "github", "2") == 0
    assert fake.labels(2) == ["dispatch"]


def gl_now() -> str:
    from jit_dispatch.domain.transitions import format_timestamp

    return format_timestamp()


def test_cli_error_exit_3_names_the_permission_and_hides_the_token(
    fake: FakeGitHub, actions_env: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    fake.add_issue(1)
    fake.fail("GET", r"/repos/octo-org/widgets/issues", 403, f"Resource not accessible by integration {TOKEN}")
    code = run_main("once", "--tracker", "github", "--agent", "ci", "--command", "true")
    out, err = capfd.readouterr()
    assert code == 3
    assert "::error title=jit-dispatch::" in err and "`issues: write`" in err
    for text in (out, err, actions_env["output"].read_text()):
        assert_token_only_masked(text)
    assert parse_outputs(actions_env["output"].read_text())["outcome"] == "error"


def test_cli_ready_and_issue_selection(
    fake: FakeGitHub, actions_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS")
    fake.add_issue(3, "third", labels=("dispatch", "priority:high"))
    fake.add_issue(4, "fourth")
    fake.add_issue(5, "a pr", pull_request=True)
    assert run_main("ready", "--tracker", "github") == 0
    out, _ = capfd.readouterr()
    assert [line.split()[0] for line in out.splitlines()] == ["#3", "#4"]
    assert run_main("once", "--tracker", "github", "--agent", "me", "--command", "true", "--issue", "4", "--json") == 0
    assert '"issue_id": "#4"' in capfd.readouterr().out
    assert run_main("once", "--tracker", "github", "--agent", "me", "--command", "true", "--issue", "#5") == 2
    assert "#5 is a pull request" in capfd.readouterr().err
    assert run_main("ready", "--tracker", "github", "--github-repo", "not-a-repo") == 2
    monkeypatch.delenv("GITHUB_TOKEN")
    assert run_main("ready", "--tracker", "github") == 2
    assert "--github-token: missing" in capfd.readouterr().err


def test_the_jit_path_never_imports_pygithub(tmp_path: Path) -> None:
    store = JitStore.init(tmp_path / ".jit")
    store.create_issues([NewIssue("one")])
    script = (
        "import sys\n"
        "from jit_dispatch.cli.main import main\n"
        "try:\n"
        "    main(['once', '--agent', 'ci', '--command', 'true'])\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code)\n"
        "print('github' in sys.modules, 'jit_dispatch.trackers.github.tracker' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.splitlines()[-2:] == ["exit 0", "False False"], proc.stderr
    assert (PROJECT_ROOT / "src" / "jit_dispatch" / "trackers" / "github" / "tracker.py").is_file()


def test_the_action_installs_pygithub_and_passes_the_token_only_for_the_github_tracker() -> None:
    import yaml

    action = yaml.safe_load((PROJECT_ROOT / "action.yml").read_text())
    assert action["inputs"]["tracker"]["default"] == "jit"
    assert action["inputs"]["github-token"]["default"] == "${{ github.token }}"
    steps = {step.get("id"): step for step in action["runs"]["steps"]}
    github_lock = 'if [ "$TRACKER" = github ]; then lock=requirements/action-github.lock; fi'
    assert github_lock in steps["install"]["run"] and '-r "$lock"' in steps["install"]["run"]  # the lock with PyGithub
    assert "${{ inputs.tracker }}" in steps["cache"]["with"]["key"]  # no venv without PyGithub reused for github
    env = steps["dispatch"]["env"]
    assert env["JIT_DISPATCH_TRACKER"] == "${{ inputs.tracker }}"
    assert env["JIT_DISPATCH_GITHUB_TOKEN"] == "${{ inputs.github-token }}"
    # the token goes only to the GitHub tracker and to pull-request delivery (docs/delivery.md#github)
    unset = (
        'if [ "$JIT_DISPATCH_TRACKER" != github ] && [ "$JIT_DISPATCH_DELIVER" != pull-request ]; then\n'
        "  unset JIT_DISPATCH_GITHUB_TOKEN\nfi"
    )
    assert unset in steps["dispatch"]["run"]


def test_a_comment_claim_winner_re_checks_the_issue(fake: FakeGitHub) -> None:
    """`--github-lock comments`: an issue closed while the claim was being posted is given back whole."""
    fake.add_issue(1)

    def close() -> None:
        fake.issues[1]["state"] = "closed"

    fake.before("POST", COMMENTS, close)
    assert tracker().claim("#1", "agent:a", "r", Filters()) is None
    assert fake.comments[1] == [] and "dispatch:claimed" not in fake.labels(1)


def test_a_comment_settle_left_half_done_is_finished_by_repair(fake: FakeGitHub) -> None:
    """`--github-lock comments`: the done marker is the durable result; a failed close is a warning."""
    fake.add_issue(1)
    fake.fail("PATCH", r"/repos/octo-org/widgets/issues/1", 403, "Resource not accessible by integration")
    result = dispatch(tracker(), "exit 0")
    assert result.outcome == "done" and any("finishes it" in w for w in result.warnings)
    assert fake.issues[1]["state"] == "open" and "dispatch:claimed" in fake.labels(1)
    assert tracker().repair() == ["finished the done settle of #1 left half-done"]
    assert fake.issues[1]["state"] == "closed" and "dispatch:claimed" not in fake.labels(1)
    assert [m.kind for m in markers(fake, 1)] == ["claim", "done"] and tracker().repair() == []


def test_result_comments_neutralise_issue_references_as_they_do_mentions(fake: FakeGitHub) -> None:
    """The finding: titles with `#1` or `owner/repo#7` created cross-references from the result comment."""
    fake.add_issue(3, "Fixes #1 and octo-org/other#7, ping @team")
    t = tracker()
    result = dispatch(t, "echo see '#2' in the log; exit 1")
    assert t.record_result(result, render) is None
    body = fake.bodies(3)[-1]
    prose = re.sub(r"(`+)[^`]*?\1", "", re.sub(r"```.*?```", "", body, flags=re.S))  # code cannot link
    prose = prose.split("\n", 1)[1]  # past the hidden marker line
    assert not re.search(r"(?<![&\w])#\d", prose) and "octo-org/other#7" not in prose and "@team" not in prose
    assert "&#x23;1" in body and "see '#2' in the log" in body  # shown, inert; the output tail stays verbatim
