"""Reaps and repairs decide on exact reads (issue 22, item 3): list endpoints lag, so a reaper or a
repair that acts on what a list showed re-reads the lock ref and the issue (single-resource reads,
current) first. Against the stateful fake in-process; `FakeGitHub.pin` freezes the lists."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_github_tracker
from test_github_tracker import run_main

from github_fake import BOT, REPO, FakeGitHub, serving, without_pacing
from jit_dispatch.domain.selection import Filters
from jit_dispatch.trackers.github import rules
from jit_dispatch.trackers.github.records import CLAIM, LockRecord, ref_name
from jit_dispatch.trackers.github.reflock import RefLockedTracker
from jit_dispatch.trackers.jit.store import JitStore

ME = frozenset({BOT["login"]})
actions_env = test_github_tracker.actions_env  # the fixture: an Actions step's environment
REF = "/repos/octo-org/widgets/git/refs/jit-dispatch/claims/gh-1"


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    without = pytest.MonkeyPatch()
    without_pacing(without)
    with serving() as server:
        yield server
    without.undo()


def tracker(fake: FakeGitHub, who: str, **kw: Any) -> RefLockedTracker:
    """Each runner its own token: lists lag per reader; all comment as the workflow's bot."""
    token = f"ghs_{who}_0123456789abcdef"
    fake.actors[token] = BOT
    return RefLockedTracker(
        rules.GitHubSettings(REPO), token, sleep=lambda _s: None, heartbeat=kw.pop("heartbeat", 300.0), **kw
    )


def kinds(fake: FakeGitHub, number: int = 1) -> list[str]:
    return [m.kind for m in rules.parse_markers(fake.comments[number], ME)]


def test_a_reaper_whose_list_still_shows_a_settled_claim_does_not_release_or_park_it(fake: FakeGitHub) -> None:
    """The finding: no lock found, so an unfenced comment-only release parked an issue closed as completed."""
    fake.add_issue(1)
    runner = tracker(fake, "runner")
    assert runner.claim("#1", "agent:a", "r", Filters()) is not None
    fake.pin()  # every other reader's lists still show the claim
    assert runner.complete("#1", "agent:a").outcome == "done"
    reaper = tracker(fake, "reaper")
    settled = reaper.release("#1", "agent:a", "stale claim", 1, seen=(None, None))
    assert settled.outcome == "lost"
    assert kinds(fake) == ["claim", "done"] and fake.issues[1]["state"] == "closed"
    assert "dispatch:parked" not in fake.labels(1)


def test_a_repair_never_finishes_a_release_whose_lock_was_claimed_again(fake: FakeGitHub) -> None:
    """The finding: `status --repair` re-finished a release from a lagging ref list and stripped
    `dispatch:claimed` from the live claim of the runner that had claimed the issue since."""
    fake.add_issue(1)
    first = tracker(fake, "first")
    assert first.claim("#1", "agent:a", "r", Filters()) is not None
    fake.fail("POST", r"/repos/octo-org/widgets/issues/1/comments", 403, "Forbidden", times=99)
    assert first.release("#1", "agent:a", "exit code 1", 3).warnings  # recorded on the lock, unfinished
    fake.faults.clear()
    fake.pin()  # the ref list keeps showing the release record
    assert tracker(fake, "helper").repair() == ["finished the release settle of #1 left half-done"]
    assert tracker(fake, "second").claim("#1", "agent:b", "r", Filters()) is not None
    late = tracker(fake, "late")
    late.repair()
    assert "dispatch:claimed" in fake.labels(1)  # the live claim keeps its label
    assert kinds(fake) == ["claim", "release", "claim"]  # and no second release marker


def test_a_lock_freed_as_never_started_is_never_counted_as_an_attempt(fake: FakeGitHub) -> None:
    """The finding: a "never started" give-back, finished by another repair, was posted as a failure."""
    fake.add_issue(1)
    holder = tracker(fake, "holder", heartbeat=0.05)
    record = LockRecord(CLAIM, 1, "deadbeef", "agent:a", "r", heartbeat=0.05)
    assert holder.refs.create(1, holder.refs.commit(record))  # then it died before its claim comment
    fake.fail("DELETE", REF, 403, "Forbidden", times=99)  # the reaper's last step fails
    reaper = tracker(fake, "reaper")
    with pytest.raises(Exception):  # noqa: B017 (the reaper's one-line error)
        reaper.release("#1", "agent:a", "stale claim", 3, seen=(None, None))
    fake.faults.clear()
    notes = tracker(fake, "repair").repair()
    assert notes and fake.refs == {} and kinds(fake) == []
    assert rules.failed_attempts(rules.parse_markers(fake.comments[1], ME)) == 0
    assert ref_name("refs/jit-dispatch/claims/", 1) not in fake.refs


def test_repairs_racing_on_one_unfinished_settle_post_one_marker(fake: FakeGitHub) -> None:
    """The finding: repairs racing on lagging lists posted duplicate markers (up to 13 on one issue).
    The second repair starts while the first is about to post; each sees the other's comment late."""
    fake.add_issue(1)
    runner = tracker(fake, "runner")
    assert runner.claim("#1", "agent:a", "r", Filters()) is not None
    fake.fail("POST", r"/repos/octo-org/widgets/issues/1/comments", 403, "Forbidden", times=99)
    assert runner.complete("#1", "agent:a").warnings  # the success is recorded on the lock only
    fake.faults.clear()
    fake.pin()
    racing = [tracker(fake, f"repair{n}") for n in range(3)]
    notes: list[str] = []
    for n in (1, 2):  # each nested just before the previous one posts its marker
        fake.before("POST", r"/repos/octo-org/widgets/issues/1/comments", lambda n=n: notes.extend(racing[n].repair()))
    notes += racing[0].repair()
    assert kinds(fake) == ["claim", "done"], notes
    assert fake.issues[1]["state"] == "closed" and fake.refs == {}


# ---------------------------------------------------------------------------- foreign refs, gone issues


def test_foreign_refs_under_the_lock_prefix_hold_their_issue_and_reap_foreign_removes_them(fake: FakeGitHub) -> None:
    """The finding: an object GitHub cannot show as a commit made every once, reap and status --repair exit 3
    ("not found … needs issues: write"); an ordinary commit made its issue undispatchable forever while
    `ready` and `status` called it dispatchable and `reap` ignored it."""
    for number in (1, 2, 3):
        fake.add_issue(number)
    fake.refs["refs/jit-dispatch/claims/gh-1"] = "f" * 40
    fake.trees["f" * 40] = []  # a tree object
    commit = fake.handle("POST", f"/repos/{REPO}/git/commits", '{"message": "hello", "tree": "t", "parents": []}', "x")
    fake.refs["refs/jit-dispatch/claims/gh-2"] = __import__("json").loads(commit[2])["sha"]
    t = tracker(fake, "runner")
    assert t.repair() == []  # no exit 3
    snapshot = t.snapshot()
    assert set(snapshot.held_back) == {"#1", "#2"} and "reap --foreign" in snapshot.held_back["#1"]
    assert any("#2: refs/jit-dispatch/claims/gh-2 points at a commit" in w for w in snapshot.warnings)
    from jit_dispatch.engine.dispatch import plan_for

    plan = plan_for(snapshot, Filters())
    assert [i.id for i in plan.dispatchable] == ["#3"] and {h.issue.id for h in plan.held} == {"#1", "#2"}
    notes = tracker(fake, "reaper").remove_foreign()
    assert len(notes) == 2 and fake.refs == {}
    assert [i.id for i in plan_for(tracker(fake, "later").snapshot(), Filters()).dispatchable] == ["#1", "#2", "#3"]


@pytest.mark.parametrize("gone", ["deleted", "transferred"])
def test_an_issue_deleted_or_transferred_mid_run_has_its_lock_removed_once(fake: FakeGitHub, gone: str) -> None:
    """The finding: a deleted issue was reported as "issues are disabled (410)", its `done` lock was never
    deleted, and every later once/reap said it would finish the half-done settle, forever."""
    fake.add_issue(1)
    runner = tracker(fake, "runner")
    assert runner.claim("#1", "agent:a", "r", Filters()) is not None
    fake.delete_issue(1) if gone == "deleted" else fake.transfer_issue(1)
    settled = runner.complete("#1", "agent:a")
    assert fake.refs == {}
    word = "deleted (410)" if gone == "deleted" else "transferred to octo-org/elsewhere"
    assert len(settled.warnings) == 1 and word in settled.warnings[0] and "finishes it" not in settled.warnings[0]
    later = tracker(fake, "later")
    assert later.repair() == [] and later.snapshot().warnings == []


def test_reap_foreign_from_the_command_line(
    actions_env: dict[str, Any], capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`status` names the foreign ref and the fix; `reap --foreign` removes it; other trackers refuse the flag."""
    with serving() as fake:
        fake.add_issue(1)
        fake.trees["f" * 40] = []
        fake.refs["refs/jit-dispatch/claims/gh-1"] = "f" * 40
        assert run_main("status", "--tracker", "github") == 0
        assert "jit-dispatch reap --foreign" in capfd.readouterr().err
        assert run_main("reap", "--tracker", "github", "--older-than", "1h", "--foreign") == 0
        assert fake.refs == {} and "removed refs/jit-dispatch/claims/gh-1" in capfd.readouterr().err
    monkeypatch.delenv("GITHUB_ACTIONS")
    JitStore.init(Path.cwd() / ".jit")
    assert run_main("reap", "--older-than", "1h", "--foreign") == 2
    assert "--foreign: only for --tracker github" in capfd.readouterr().err
