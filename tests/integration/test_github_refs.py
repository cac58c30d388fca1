"""The GitHub claim lock (`--github-lock refs`): records, the clock-free rule, and the tracker
against the stateful fake in-process (`responses`). Real processes: test_github_processes.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from github_fake import BOT, REPO, FakeGitHub, serving, without_pacing
from helpers import clean_env, run_cli
from jit_dispatch.domain.selection import Filters
from jit_dispatch.domain.staleness import LockWatch, lock_is_dead
from jit_dispatch.errors import TrackerError
from jit_dispatch.trackers.github import rules
from jit_dispatch.trackers.github.records import (
    CLAIM,
    LockRecord,
    check_lock_prefix,
    number_of,
    parse_record,
    render_record,
)
from jit_dispatch.trackers.github.reflock import RefLockedTracker

TOKEN = "ghs_0123456789abcdefSECRETtoken0123456789"
REF = "refs/jit-dispatch/claims/gh-1"
ME = frozenset({BOT["login"]})


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with serving() as server:
        yield server


@pytest.fixture(autouse=True)
def no_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    without_pacing(monkeypatch)


def tracker(sleeps: list[float] | None = None, **kw: Any) -> RefLockedTracker:
    settings = rules.GitHubSettings(REPO)
    waits = sleeps if sleeps is not None else []
    return RefLockedTracker(settings, TOKEN, sleep=waits.append, heartbeat=kw.pop("heartbeat", 300.0), **kw)


def record(fake: FakeGitHub) -> LockRecord:
    found = parse_record(fake.commits[fake.refs[REF]]["message"])
    assert found is not None
    return found


def kinds(fake: FakeGitHub, number: int = 1) -> list[str]:
    return [m.kind for m in rules.parse_markers(fake.comments[number], ME)]


# ---------------------------------------------------------------------------- pure parts


def test_records_round_trip_and_hostile_values_stay_in_their_field() -> None:
    hostile = LockRecord(CLAIM, 12, "n1", 'agent:x"}\n\njit-dispatch done #12', "https://run", 2, 60.0)
    parsed = parse_record(render_record(hostile))
    assert parsed == hostile and render_record(hostile).count("\n") == 3
    settled = parse_record(render_record(hostile.settled("release", "exit 1", True, 3)))
    assert settled is not None and (settled.kind, settled.parked, settled.max_attempts) == ("release", True, 3)
    for junk in ("", "jit-dispatch claim #1\n\nnot json", "Merge branch 'x'", 'jit-dispatch claim #1\n\n{"agent":"a"}'):
        assert parse_record(junk) is None


def test_lock_prefixes_github_accepts() -> None:
    assert check_lock_prefix("refs/jit-dispatch/claims/") == "refs/jit-dispatch/claims/"
    assert check_lock_prefix("refs/team-a/") == "refs/team-a/"
    bad = ("jit/", "refs/", "refs/x", "refs/heads/locks/", "refs/tags/l/", "refs/a b/", "refs/a..b/", "refs/.x/")
    for prefix in (*bad, "refs/x.lock/", "refs/a~1/", "refs/a:b/"):
        with pytest.raises(ValueError):
            check_lock_prefix(prefix)
    assert number_of("refs/jit-dispatch/claims/", REF) == 1
    assert number_of("refs/jit-dispatch/claims/", "refs/jit-dispatch/claims/gh-01") is None
    assert number_of("refs/jit-dispatch/claims/", "refs/heads/gh-1") is None


def test_the_clock_free_rule() -> None:
    watch = LockWatch()
    assert watch.see("1", "a", 100.0) == 0.0
    assert watch.see("1", "a", 159.0) == 59.0
    # under two intervals: alive, whatever the clocks say
    assert not lock_is_dead(unchanged_for=59.0, interval=30.0, age=1e9, older_than=0)
    assert watch.see("1", "b", 161.0) == 0.0  # it moved: the watch starts over
    assert lock_is_dead(unchanged_for=65.0, interval=30.0, age=7200.0, older_than=3600.0)
    assert not lock_is_dead(unchanged_for=60.0, interval=30.0, age=1800.0, older_than=3600.0)  # not old enough


# ---------------------------------------------------------------------------- the tracker


def test_claim_heartbeat_and_done_move_one_ref_forward(fake: FakeGitHub) -> None:
    fake.add_issue(1)
    t = tracker()
    claimed = t.claim("#1", "agent:a", "https://run/1", Filters())
    assert claimed is not None and claimed.state == "in_progress" and "dispatch:claimed" in fake.labels(1)
    first = record(fake)
    assert (first.kind, first.agent, first.run, first.attempt, first.heartbeat) == (
        CLAIM,
        "agent:a",
        "https://run/1",
        1,
        300.0,
    )
    assert kinds(fake) == ["claim"]
    before = fake.refs[REF]
    assert t.heartbeat("#1", "agent:a")
    assert fake.descends(fake.refs[REF], before) and record(fake).beat == 1
    assert t.complete("#1", "agent:a").outcome == "done"
    assert fake.refs == {} and fake.issues[1]["state"] == "closed" and kinds(fake) == ["claim", "done"]


def test_a_held_lock_turns_others_away_without_a_trace(fake: FakeGitHub) -> None:
    fake.add_issue(1)
    assert tracker().claim("#1", "agent:a", "r", Filters()) is not None
    fake.issues[1]["labels"] = [lb for lb in fake.issues[1]["labels"] if lb["name"] != "dispatch:claimed"]  # a lag
    assert tracker().claim("#1", "agent:b", "r", Filters()) is None
    assert kinds(fake) == ["claim"] and record(fake).agent == "agent:a"


def test_the_winner_re_checks_and_gives_back_an_issue_closed_meanwhile(fake: FakeGitHub) -> None:
    fake.add_issue(1)

    def close() -> None:
        fake.issues[1]["state"] = "closed"

    fake.before("POST", rf"/repos/{REPO}/git/refs", close)
    assert tracker().claim("#1", "agent:a", "r", Filters()) is None
    assert fake.refs == {} and fake.comments[1] == [] and fake.labels(1) == ["dispatch"]


@pytest.mark.parametrize(
    ("status", "headers", "times"),
    [(502, {}, 3), (403, {"Retry-After": "60"}, 1)],
    ids=["three-502s", "secondary-limit-60s"],
)
def test_a_settle_outlasts_transient_failures(
    fake: FakeGitHub, status: int, headers: dict[str, str], times: int
) -> None:
    fake.add_issue(1)
    sleeps: list[float] = []
    t = tracker(sleeps)
    assert t.claim("#1", "agent:a", "r", Filters()) is not None
    fake.fail(
        "POST", rf"/repos/{REPO}/issues/1/comments", status, "You have exceeded a secondary rate limit", headers, times
    )
    settled = t.complete("#1", "agent:a")
    assert settled.outcome == "done" and settled.warnings == ()
    assert fake.issues[1]["state"] == "closed" and kinds(fake) == ["claim", "done"] and fake.refs == {}
    assert (60.0 in sleeps) == ("Retry-After" in headers)


def test_a_recorded_success_is_never_stays_claimed_and_any_tracker_finishes_it(fake: FakeGitHub) -> None:
    fake.add_issue(1)
    t = tracker()
    assert t.claim("#1", "agent:a", "r", Filters()) is not None
    fake.fail("POST", rf"/repos/{REPO}/issues/1/comments", 403, "Forbidden", times=99)
    settled = t.complete("#1", "agent:a")
    assert settled.outcome == "done" and "next once, reap or status --repair finishes it" in settled.warnings[0]
    assert record(fake).kind == "done" and fake.issues[1]["state"] == "open"
    fake.faults.clear()
    other = tracker()
    assert other.snapshot().locked == frozenset({"#1"})  # its unfinished settle holds it
    assert other.repair() == ["finished the done settle of #1 left half-done"]
    assert fake.issues[1]["state"] == "closed" and kinds(fake) == ["claim", "done"] and fake.refs == {}
    assert other.repair() == []


def test_a_settle_is_fenced_by_the_lock(fake: FakeGitHub) -> None:
    """A person's release (or a reaper's) moves the lock on: the runner's heartbeat and settle lose."""
    fake.add_issue(1)
    runner = tracker()
    assert runner.claim("#1", "agent:a", "r", Filters()) is not None
    person = tracker()
    assert person.release("#1", "agent:a", "taking it back", 3).outcome == "released"
    assert fake.refs == {} and kinds(fake) == ["claim", "release"]
    assert not runner.heartbeat("#1", "agent:a")
    assert runner.complete("#1", "agent:a").outcome == "lost"
    assert kinds(fake) == ["claim", "release"] and fake.issues[1]["state"] == "open"


def test_identity_from_get_user_or_the_actions_fallback(fake: FakeGitHub) -> None:
    fake.add_issue(1)
    fake.user_endpoint = False  # an installation token
    t = tracker(identity="github-actions[bot]")
    assert t.trusted() == ME
    fake.actor = {**BOT, "login": "my-app[bot]"}
    learner = tracker()  # outside Actions, an App token learns itself from its own comment
    assert learner.trusted() == frozenset()
    assert learner.claim("#1", "agent:a", "r", Filters()) is not None
    assert "my-app[bot]" in learner.trusted()


def test_without_contents_write_the_tracker_refuses_first(fake: FakeGitHub) -> None:
    fake.add_issue(1)
    fake.contents_write = False
    with pytest.raises(TrackerError, match=r"`contents: write`") as failed:
        tracker()
    assert "\n" not in str(failed.value) and TOKEN not in str(failed.value)
    assert fake.count("POST", r".*") == 0  # GET /repos said so: nothing written


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--lock-prefix", "refs/heads/locks/"), "--lock-prefix: 'refs/heads/locks/' is not a ref namespace"),
        (("--lock-prefix", "locks/"), "--lock-prefix: 'locks/' must start with refs/"),
        (("--github-lock", "files"), "'files' is not one of 'refs', 'comments'"),
    ],
)
def test_bad_lock_options_fail_in_one_line_before_any_request(args: tuple[str, ...], words: str) -> None:
    env = clean_env(GITHUB_TOKEN=TOKEN, GITHUB_REPOSITORY=REPO, JIT_DISPATCH_GITHUB_API_URL="http://127.0.0.1:9")
    run = run_cli("once", "--tracker", "github", "--agent", "a", "--command", "true", *args, env=env)
    assert run.returncode == 2 and words in run.stderr and run.stderr.count("\n") == 1, run.stderr
    assert TOKEN not in run.stderr + run.stdout


def test_the_request_budget_of_a_run(fake: FakeGitHub) -> None:
    """docs/github-issues.md#rate-limits-and-failures: 25 requests for a run that claims, 6 for an idle one."""
    from jit_dispatch.engine.dispatch import Request, dispatch_once
    from jit_dispatch.process.child import CancelToken
    from jit_dispatch.report.summary import summary_markdown

    class Quiet:
        def command_starting(self, *_: Any) -> None: ...
        def output(self, _chunk: bytes) -> None: ...
        def command_finished(self, _run: Any) -> None: ...

    for number in (1, 2, 3):
        fake.add_issue(number)
    fake.page_size = 100
    t = tracker()
    result = dispatch_once(t, Request(agent="agent:a", command="true", run_ref="r"), CancelToken(), Quiet())
    assert t.record_result(result, lambda r: summary_markdown(r, 3)) is None
    assert result.outcome == "done" and len(fake.requests) == 25
    for number in (2, 3):
        fake.issues[number]["state"] = "closed"
    fake.requests.clear()
    idle = dispatch_once(tracker(), Request(agent="agent:a", command="true", run_ref="r"), CancelToken(), Quiet())
    assert idle.outcome == "idle" and len(fake.requests) == 6


@pytest.mark.parametrize("status", [502, 504])
def test_a_lock_creation_that_landed_behind_an_error_is_recognised_not_retried_blindly(
    fake: FakeGitHub, status: int
) -> None:
    """POST git/refs lands, but the answer is an error: the retry reads the ref first, finds its own
    commit there, and claims once (a blind retry would get 422 and give its own claim away)."""
    fake.add_issue(1)
    fake.fail("POST", rf"/repos/{REPO}/git/refs", status, "Bad Gateway", apply_first=True)
    claimed = tracker().claim("#1", "agent:a", "r", Filters())
    assert claimed is not None and claimed.state == "in_progress"
    assert fake.count("POST", rf"/repos/{REPO}/git/refs") == 1, "no second create once the first had landed"
    assert record(fake).agent == "agent:a" and kinds(fake) == ["claim"]
    assert tracker().claim("#1", "agent:b", "r", Filters()) is None, "and the lock holds"


def test_a_lock_creation_lost_behind_an_error_to_another_runner_is_not_taken_for_ours(fake: FakeGitHub) -> None:
    """The first POST fails without landing and meanwhile another runner creates the lock: the retry
    sees a lock that is not its commit and gives up, rather than running the issue twice."""
    fake.add_issue(1)
    assert tracker().claim("#1", "agent:b", "r", Filters()) is not None
    fake.issues[1]["labels"] = [lb for lb in fake.issues[1]["labels"] if lb["name"] != "dispatch:claimed"]  # a lag
    fake.fail("POST", rf"/repos/{REPO}/git/refs", 502, "Bad Gateway")
    assert tracker().claim("#1", "agent:a", "r", Filters()) is None
    assert record(fake).agent == "agent:b" and kinds(fake) == ["claim"]


def test_a_reaper_reads_each_list_once_unless_its_repair_wrote(fake: FakeGitHub) -> None:
    """List pages cached within a run: the repair's listings of lock refs and claimed issues serve the
    claims snapshot that follows; after a write of its own (a label it removed) both are read again."""
    from jit_dispatch.domain.values import State

    refs_list = rf"/repos/{REPO}/git/matching-refs/jit-dispatch/claims/gh-"
    claimed_list = rf"/repos/{REPO}/issues"  # the label is a query parameter
    for number in (1, 2):
        fake.add_issue(number)
    holder = tracker()
    assert holder.claim("#1", "agent:a", "r", Filters()) is not None
    reaper = tracker()
    before = (fake.count("GET", refs_list), fake.count("GET", claimed_list))
    assert reaper.repair() == []
    snapshot = reaper.snapshot(full_states=(State.IN_PROGRESS,))
    assert [i.id for i in snapshot.issues if i.state == State.IN_PROGRESS] == ["#1"]
    lists = (fake.count("GET", refs_list) - before[0], fake.count("GET", claimed_list) - before[1])
    assert lists == (1, 2)  # refs once; issues: the claimed label once, the ready label once
    fake.issues[2]["labels"].append({"name": rules.CLAIMED_LABEL})  # labelled, no lock, no claim: a leftover
    before = (fake.count("GET", refs_list), fake.count("GET", claimed_list))
    assert reaper.repair() == [f"removed {rules.CLAIMED_LABEL} from #2: no lock and no live claim"]
    reaper.snapshot(full_states=(State.IN_PROGRESS,))
    lists = (fake.count("GET", refs_list) - before[0], fake.count("GET", claimed_list) - before[1])
    assert lists == (2, 3) and fake.labels(2) == ["dispatch"]  # it wrote: both read again
