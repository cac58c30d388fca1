"""Real `jit-dispatch` processes against the GitHub fake on a loopback server: lagging lists,
latency, stalls, failed writes and SIGKILL. Each runner has its own token (GitHub's replicas lag
per reader); all tokens comment as the same bot, as a workflow's runners do.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from github_fake import BOT, REPO, FakeGitHub, user
from github_server import UNPACED, FakeServer
from helpers import clean_env
from jit_dispatch.trackers.github import rules
from jit_dispatch.trackers.github.records import parse_record

# Each run holds a per-issue flock for as long as any of its processes lives (the kernel drops it with
# the last one, however they die: a directory the command removes itself stays behind when the command is
# killed first, a false overlap on a loaded machine). Taking it fails while another run of the issue lives.
HOLD = 'exec 9>>"$RUNS/live-$JIT_ISSUE_SHORT_ID"; flock -n 9 || echo "$JIT_ISSUE_SHORT_ID" >> "$RUNS/overlaps"; '
COMMAND = HOLD + 'echo "$JIT_ISSUE_SHORT_ID $JIT_DISPATCH_ATTEMPT" >> "$RUNS/runs"; sleep 0.4'
ME = frozenset({BOT["login"]})


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeGitHub(page_size=30)
    with FakeServer(fake, latency=(0.01, 0.1)) as running:
        yield running


def runner_env(server: FakeServer, runs: Path, token: str, **extra: str) -> dict[str, str]:
    server.fake.actors[token] = BOT
    settings = {
        "GITHUB_TOKEN": token,
        "GITHUB_REPOSITORY": REPO,
        "JIT_DISPATCH_GITHUB_API_URL": server.url,
        "JIT_DISPATCH_TRACKER": "github",
        "RUNS": str(runs),
        "JIT_DISPATCH_RUN_DIR": str(runs / "run-locks"),  # not the machine's: other tests run an issue #1 too
    }
    return clean_env(**{**settings, **extra})


def start(
    server: FakeServer, runs: Path, n: int, *args: str, clock: tuple[str, ...] = (), **extra: str
) -> subprocess.Popen[str]:
    """`clock`: a command prefix such as `faketime -f +1d` (an offset: clocks still run at their rate)."""
    env = runner_env(server, runs, f"ghs_runner{n:02d}_0123456789abcdef", **extra)
    argv = [*clock, sys.executable, "-c", UNPACED, *args]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def once(server: FakeServer, runs: Path, n: int, *args: str, **extra: str) -> subprocess.Popen[str]:
    return start(server, runs, n, "once", "--agent", f"r{n}", "--command", COMMAND, *args, **extra)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def runs(path: Path) -> list[str]:
    return (path / "runs").read_text().split("\n")[:-1] if (path / "runs").exists() else []


def kinds_of(fake: FakeGitHub, number: int) -> list[str]:
    return [m.kind for m in rules.parse_markers(fake.comments[number], ME)]


def overlaps(path: Path) -> list[str]:
    return (path / "overlaps").read_text().split() if (path / "overlaps").exists() else []


def test_lagging_lists_with_ten_runners_no_overlap_no_rerun(server: FakeServer, tmp_path: Path) -> None:
    """Comment and issue lists lag 1.5 s for everyone but the writer: the ref still admits one runner."""
    fake = server.fake
    fake.lag = 1.5
    for number in range(1, 7):
        fake.add_issue(number)
    for wave in range(3):
        procs = [once(server, tmp_path, wave * 10 + n) for n in range(10)]
        results = [finish(p) for p in procs]
        assert all(code == 0 for code, _, _ in results), [err for _, _, err in results]
        if all(fake.issues[n]["state"] == "closed" for n in range(1, 7)):
            break
    assert fake.count("POST", rf"/repos/{REPO}/git/refs") > 6  # runners did collide on locks
    assert overlaps(tmp_path) == []
    assert sorted(Counter(line.split()[0] for line in runs(tmp_path)).items()) == [(f"#{n}", 1) for n in range(1, 7)]
    assert all(fake.issues[n]["state"] == "closed" and fake.labels(n) == ["dispatch"] for n in range(1, 7))
    assert fake.refs == {}  # every lock given back


def test_the_fake_bites_lagging_lists_break_the_comment_protocol(server: FakeServer, tmp_path: Path) -> None:
    """The same lag with `--github-lock comments`: every runner sees only its own claim and wins.

    Label requests are held until every runner has sent one (runners a machine's load starts seconds
    apart all find the issue unclaimed), and each command waits for a second run, up to 20 s, before its
    runner closes the issue: a protocol that admits one runner still fails the test, only later."""
    fake = server.fake
    fake.lag = 10.0
    fake.add_issue(1)
    fake.stall("POST", rf"/repos/{REPO}/issues/1/labels", 240.0)
    fake.faults[-1].times = 8
    wait = (
        COMMAND + '; n=0; while [ "$(wc -l < "$RUNS/runs")" -lt 2 ] && [ $n -lt 100 ]; do sleep 0.2; n=$((n+1)); done'
    )
    procs = [once(server, tmp_path, n, "--github-lock", "comments", "--command", wait) for n in range(8)]
    deadline = time.monotonic() + 90
    while sum(1 for a in server.arrived if a[:2] == ("POST", f"/repos/{REPO}/issues/1/labels")) < 8:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            break  # a runner that found nothing to claim: the rest go on as they are
        time.sleep(0.05)
    server.unstall.set()
    for proc in procs:
        finish(proc)
    assert len(runs(tmp_path)) > 1  # run more than once: why refs are the default


def test_a_stalled_runner_that_wins_late_re_checks_and_gives_back(server: FakeServer, tmp_path: Path) -> None:
    fake = server.fake
    fake.add_issue(1)
    slow = "ghs_runner00_0123456789abcdef"
    fake.stall("POST", rf"/repos/{REPO}/git/refs", 240.0, token=slow)  # held until the other runner is done
    late = once(server, tmp_path, 0)
    deadline = time.monotonic() + 60
    while ("POST", f"/repos/{REPO}/git/refs", slow) not in server.arrived:  # it reached its claim
        assert time.monotonic() < deadline and late.poll() is None
        time.sleep(0.05)
    code, _, err = finish(once(server, tmp_path, 1))
    assert code == 0 and fake.issues[1]["state"] == "closed" and fake.refs == {}, err
    server.unstall.set()  # now its lock is created: on an issue closed meanwhile
    code, out, err = finish(late)
    assert code == 0 and "every candidate was taken" in out, out + err  # it won the lock, re-checked, gave back
    assert runs(tmp_path) == ["#1 1"] and fake.refs == {}


def test_a_failed_close_is_finished_by_the_next_run_without_running_again(server: FakeServer, tmp_path: Path) -> None:
    fake = server.fake
    fake.add_issue(1)
    fake.fail("PATCH", rf"/repos/{REPO}/issues/1", 403, "Resource not accessible by integration")
    code, _, err = finish(once(server, tmp_path, 0))
    assert code == 0 and "finishes it" in err  # done: the result is recorded; the rest is a warning
    assert fake.issues[1]["state"] == "open" and "dispatch:claimed" in fake.labels(1)
    assert [parse_record(m).kind for m in fake.lock_records().values()] == ["done"]
    code, _, err = finish(start(server, tmp_path, 1, "status"))
    assert code == 0 and "#1: its done settle is unfinished" in err, err
    code, _out, err = finish(once(server, tmp_path, 1))
    assert code == 0 and "finished the done settle of #1" in err
    assert fake.issues[1]["state"] == "closed" and fake.labels(1) == ["dispatch"] and fake.refs == {}
    assert runs(tmp_path) == ["#1 1"]


def test_a_failed_unlabel_is_finished_by_reap(server: FakeServer, tmp_path: Path) -> None:
    fake = server.fake
    fake.add_issue(1)
    fake.fail("DELETE", rf"/repos/{REPO}/issues/1/labels/dispatch%3Aclaimed", 403, "Forbidden")
    code, _, err = finish(once(server, tmp_path, 0, "--command", "exit 3"))
    assert code == 1, err  # released (exit 3): the outcome stands
    assert "dispatch:claimed" in fake.labels(1)
    code, _out, err = finish(start(server, tmp_path, 1, "reap", "--older-than", "1h"))
    assert code == 0 and "finished the release settle of #1" in err, err
    assert fake.labels(1) == ["dispatch"] and fake.refs == {}
    kinds = [m.kind for m in rules.parse_markers(fake.comments[1], ME)]
    assert kinds == ["claim", "release"]  # one release marker: attempt 1 counted once
    code, _, err = finish(once(server, tmp_path, 2))
    assert code == 0 and runs(tmp_path) == ["#1 2"], err


def test_sigkill_after_the_done_marker_is_finished_by_status_repair(server: FakeServer, tmp_path: Path) -> None:
    fake = server.fake
    fake.add_issue(1)
    fake.stall("PATCH", rf"/repos/{REPO}/issues/1", 600.0)  # the close hangs; the runner is killed meanwhile
    proc = once(server, tmp_path, 0)
    deadline = time.monotonic() + 60
    while not any(m.kind == "done" for m in rules.parse_markers(fake.comments[1], ME)):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fake.faults.clear()
    code, _out, err = finish(start(server, tmp_path, 1, "status", "--repair"))
    assert code == 0 and "finished the done settle of #1" in err, err
    assert fake.issues[1]["state"] == "closed" and fake.labels(1) == ["dispatch"] and fake.refs == {}
    code, _, err = finish(once(server, tmp_path, 2))
    assert code == 0 and runs(tmp_path) == ["#1 1"], err


def test_the_token_never_reaches_the_command_nor_the_live_log(server: FakeServer, tmp_path: Path) -> None:
    fake = server.fake
    fake.add_issue(1)
    fake.add_issue(2)
    token = "ghs_runner00_0123456789abcdef"
    grep = f'env | grep -c "{token}" && exit 9 || exit 0'
    remote = f"https://x-access-token:{token}@github.com/{REPO}.git"
    extra = {"GH_TOKEN": token, "JIT_DISPATCH_GITHUB_TOKEN": token, "PUSH_URL": remote}
    code, out, err = finish(once(server, tmp_path, 0, "--command", grep, **extra))
    assert code == 0 and fake.issues[1]["state"] == "closed", out + err
    code, out, err = finish(once(server, tmp_path, 0, "--pass-token", "--command", 'echo "leak $GITHUB_TOKEN"'))
    assert code == 0 and "leak ***" in out and token not in out + err
    assert all(token not in body for body in fake.bodies(2))


def test_another_bots_markers_are_ignored(server: FakeServer, tmp_path: Path) -> None:
    fake = server.fake
    fake.add_issue(1)
    other = user("other-app[bot]", "Bot", 99)
    for n in range(3):
        fake.add_comment(1, rules.render_marker("release", {"nonce": f"o{n}", "reason": "x", "parked": True}), other)
    code, _, err = finish(once(server, tmp_path, 0))
    assert code == 0 and runs(tmp_path) == ["#1 1"], err


def test_without_contents_write_once_fails_first_in_one_line(server: FakeServer, tmp_path: Path) -> None:
    fake = server.fake
    fake.add_issue(1)
    fake.contents_write = False
    code, _out, err = finish(once(server, tmp_path, 0))
    assert code == 3 and err.count("\n") == 1 and "contents: write" in err and "Traceback" not in err
    assert runs(tmp_path) == [] and fake.labels(1) == ["dispatch"] and fake.comments[1] == []
    code, _, err = finish(once(server, tmp_path, 0, "--github-lock", "comments"))
    assert code == 0 and runs(tmp_path) == ["#1 1"], err


def test_the_reaper_releases_a_dead_lock_and_spares_a_live_one(server: FakeServer, tmp_path: Path) -> None:
    """Clock-free: dead only after the reaper watched the lock unchanged for two announced heartbeats;
    a reaper on another machine whose wall clock is a day ahead still spares the live one (whose last
    beat is seconds old by GitHub's clock, past --older-than 1s: the reaper watches it too)."""
    fake = server.fake
    fake.add_issue(1, "dies")
    fake.add_issue(2, "lives")
    hang = 'echo $$ > "$RUNS/dead.pid"; exec sleep 60'
    dead = once(server, tmp_path, 0, "--heartbeat", "2s", "--issue", "1", "--command", hang)
    reaped = tmp_path / "reaped"  # the live command runs until the reaper is done (at most 60 s)
    wait = f'n=0; while [ ! -e "{reaped}" ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done'
    live = once(server, tmp_path, 1, "--heartbeat", "10s", "--issue", "2", "--command", wait)
    deadline = time.monotonic() + 60
    while len(fake.refs) < 2 or not (tmp_path / "dead.pid").exists() or not fake.comments[2]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    dead.send_signal(signal.SIGKILL)  # the dispatcher dies; its command lives on, unwatched
    dead.wait()
    os.kill(int((tmp_path / "dead.pid").read_text()), signal.SIGKILL)
    time.sleep(2.0)  # its last beat is now over 1s old by GitHub's clock (whole seconds: `Date`, commit dates)
    started = time.monotonic()
    ahead = ("faketime", "-m", "-f", "+1d") if shutil.which("faketime") else ()  # the reaper's clock a day ahead
    elsewhere = {"JIT_DISPATCH_RUN_DIR": str(tmp_path / "another-machine")}  # it cannot see the live command
    try:
        code, out, err = finish(start(server, tmp_path, 2, "reap", "--older-than", "1s", clock=ahead, **elsewhere))
    finally:
        reaped.touch()
    assert code == 0, err
    assert time.monotonic() - started >= 4.0, out + err  # it watched for two heartbeat intervals
    assert "#1  released" in out and "#2  skipped (alive" in out and "#2  released" not in out, out + err
    assert fake.labels(1) == ["dispatch"] and "refs/jit-dispatch/claims/gh-1" not in fake.refs
    code, _, err = finish(live)
    assert code == 0 and fake.issues[2]["state"] == "closed", err


def kill_while_claiming(server: FakeServer, tmp_path: Path, step: str) -> None:
    """Runner 0 SIGKILLed while its `step` request (labels, comments) of issue #1 hangs: its lock stays."""
    server.fake.stall("POST", rf"/repos/{REPO}/issues/1/{step}", 600.0)  # lands never (503 at the end)
    proc = once(server, tmp_path, 0, "--heartbeat", "1s")
    deadline = time.monotonic() + 60
    while ("POST", f"/repos/{REPO}/issues/1/{step}", "ghs_runner00_0123456789abcdef") not in server.arrived:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    server.fake.faults.clear()


@pytest.mark.parametrize("step", ["labels", "comments"], ids=["killed-before-labelling", "killed-before-commenting"])
def test_a_runner_killed_while_claiming_leaves_a_lock_only_reap_frees(
    server: FakeServer, tmp_path: Path, step: str
) -> None:
    fake = server.fake
    fake.add_issue(1)
    kill_while_claiming(server, tmp_path, step)
    code, out, err = finish(once(server, tmp_path, 1))
    assert code == 0 and "idle" in out and runs(tmp_path) == [], out + err  # the lock keeps it
    time.sleep(2.0)  # the lock is now over 1s old by GitHub's clock (whole seconds: `Date`, commit dates)
    code, out, err = finish(start(server, tmp_path, 2, "reap", "--older-than", "1s"))
    assert code == 0 and "#1  released" in out, out + err
    assert fake.refs == {} and fake.labels(1) == ["dispatch"]
    code, _, err = finish(once(server, tmp_path, 3))
    assert code == 0 and runs(tmp_path) == ["#1 1"], err  # its command never ran: no attempt counted
    assert kinds_of(fake, 1)[-2:] == ["claim", "done"] and "release" not in kinds_of(fake, 1)


@pytest.mark.skipif(not shutil.which("faketime"), reason="needs libfaketime's faketime")
def test_a_reaper_whose_clock_is_a_day_fast_judges_ages_on_githubs_clock(server: FakeServer, tmp_path: Path) -> None:
    """The finding: a reaper whose clock is a day fast ignored `--older-than 3h` (it compared its clock
    with GitHub's commit dates). Ages are GitHub's `Date` against GitHub's commit dates; here GitHub's
    clock is itself an hour behind this machine's (any skew of either side is harmless)."""
    fake = server.fake
    fake.clock_offset = -3600.0
    fake.add_issue(1)
    kill_while_claiming(server, tmp_path, "labels")  # it dies holding a lock nobody renews
    ahead = ("faketime", "-m", "-f", "+1d")
    code, out, err = finish(start(server, tmp_path, 1, "reap", "--older-than", "3h", clock=ahead))
    assert code == 0 and "0 stale claim(s) reaped" in out, out + err  # seconds old, not a day
    assert "refs/jit-dispatch/claims/gh-1" in fake.refs
    time.sleep(2.0)  # now it is older than 1s on GitHub's clock
    code, out, err = finish(start(server, tmp_path, 1, "reap", "--older-than", "1s", clock=ahead))
    assert code == 0 and "#1  released" in out, out + err
