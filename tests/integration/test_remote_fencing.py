"""Self-fencing by the runner's own clock (docs/remote-mode.md#self-fencing), with real git.

A runner cut off from the remote (its receive-pack and upload-pack hang), or whose pushes take
0.5–2 intervals, while a reaper loops beside it: the runner's command must have stopped before
the reaper's release lets another runner start the same issue. Commands write timestamps every
50 ms; two runs of one issue overlap when their stamps interleave.
"""

from __future__ import annotations

import itertools
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import clean_env, git, make_remote, run_cli
from jit_dispatch.trackers.jit.store import NewIssue
from remote_runs import LOCKS, finish, install_hook, start, wait_for


def stamping(stamps: Path, seconds: float | None = None) -> str:
    """A command writing the time every 50 ms into `stamps/<issue>.<pid>`; forever without `seconds`."""
    loop = "while :" if seconds is None else f"end=$(( $(date +%s) + {int(seconds)} )); while [ $(date +%s) -lt $end ]"
    return f'f={stamps}/$JIT_ISSUE_ID.$$; {loop}; do date +%s.%N >> "$f"; sleep 0.05; done'


def spans(stamps: Path) -> dict[str, list[tuple[float, float]]]:
    """Per issue, each run's (first stamp, last stamp), in order."""
    runs: dict[str, list[tuple[float, float]]] = {}
    for path in stamps.iterdir():
        times = [float(line) for line in path.read_text().split()]
        if times:
            runs.setdefault(path.name.split(".")[0], []).append((times[0], times[-1]))
    return {issue: sorted(found) for issue, found in runs.items()}


def assert_no_overlap(stamps: Path) -> dict[str, int]:
    """No two runs of one issue overlap; how many runs each issue had."""
    for issue, found in spans(stamps).items():
        for (_, end), (begin, _) in itertools.pairwise(found):
            assert begin > end, f"{issue[:8]}: a run began at {begin:.2f} while another ran until {end:.2f}"
    return {issue: len(found) for issue, found in spans(stamps).items()}


def wrap_transport(clone: Path, flag: Path, *, receive: bool = True, upload: bool = True, sleep: float = 0) -> None:
    """This clone's pushes (receive-pack) and fetches (upload-pack) wait `sleep` seconds, and hang
    while `flag` exists: a network partition, on one side."""
    for kind, wanted in (("receive", receive), ("upload", upload)):
        if not wanted:
            continue
        wrapper = clone.parent / f"{clone.name}-{kind}-pack"
        wrapper.write_text(
            f'#!/bin/sh\nsleep {sleep}\nwhile [ -f {flag} ]; do sleep 0.1; done\nexec git-{kind}-pack "$@"\n'
        )
        wrapper.chmod(0o755)
        git(clone, "config", f"remote.origin.{kind}pack", str(wrapper))


def reap_once(reaper: Path) -> list[tuple[str, str]]:
    reaped = run_cli("reap", "--older-than", "1s", "--sync", "git", "--json", cwd=reaper, timeout=120)
    assert reaped.returncode == 0, reaped.stderr
    return [(r["issue_id"], r["outcome"].split()[0]) for r in reaped.json["reaped"]]


class ReaperLoop:
    """`reap --older-than 1s` again and again in a separate process, as a cron would."""

    def __init__(self, reaper: Path, log: Path) -> None:
        script = f"while :; do {_cli()} reap --older-than 1s --sync git --json >> {log} 2>&1; sleep 0.2; done"
        self.proc = subprocess.Popen(["bash", "-c", script], cwd=reaper, env=clean_env(), start_new_session=True)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def _cli() -> str:
    return f"{shlex.quote(sys.executable)} -m jit_dispatch"


@pytest.mark.parametrize("cut", ["pushes", "pushes-and-fetches"])
def test_a_runner_cut_off_from_the_remote_stops_its_command_before_another_runner_starts_it(
    tmp_path: Path, cut: str
) -> None:
    """The beats hang in git. The watchdog, not the thread doing git, stops the command within 1.5
    intervals of the last confirmed beat's sending; the reaper releases only later, and the second
    runner's command starts after the first one's last stamp."""
    remote = make_remote(tmp_path, [NewIssue("partitioned")])
    target = remote.ids[0]
    cut_off, other, reaper = (remote.clone(tmp_path / name) for name in ("cut-off", "other", "reaper"))
    partition, stamps = tmp_path / "partition", tmp_path / "stamps"
    stamps.mkdir()
    wrap_transport(cut_off, partition, upload=cut == "pushes-and-fetches")
    first = start(cut_off, "cut-off", stamping(stamps), "--heartbeat", "2s", "--push-budget", "60s")
    try:
        wait_for(lambda: any(stamps.iterdir()), 60, "the first command to start")
        partition.touch()
        deadline = time.monotonic() + 90
        while (target, "released") not in reap_once(reaper):
            assert time.monotonic() < deadline, "the reaper never released the silent claim"
        code, result, stderr = finish(start(other, "other", stamping(stamps, 2), "--issue", target), timeout=90)
        assert (code, result["outcome"]) == (0, "done"), (result, stderr)
    finally:
        partition.unlink(missing_ok=True)
    code, result, stderr = finish(first, timeout=120)
    assert result["outcome"] in ("lost", "released"), (result, stderr)
    assert "could not be renewed" in (result["reason"] or "") or result["outcome"] == "lost", result
    assert assert_no_overlap(stamps) == {target: 2}
    assert remote.issue(target)["state"] == "done"
    assert remote.refs() == [], "no jit-dispatch ref left"


@pytest.mark.parametrize("ratio", [0.5, 1.0, 2.0])
def test_pushes_slower_than_the_heartbeat_never_let_two_commands_overlap(tmp_path: Path, ratio: float) -> None:
    """Every push of one runner takes `ratio` heartbeat intervals; a reaper loops beside it with a
    1 s threshold and other runners keep trying the issue meanwhile. Whatever the slow runner ends
    with (done, or fenced), the issue's command never ran twice at once, and it ends done."""
    interval = 2.0
    remote = make_remote(tmp_path, [NewIssue("slow remote")])
    target = remote.ids[0]
    slow, rescuer, reaper = (remote.clone(tmp_path / name) for name in ("slow", "rescuer", "reaper"))
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    wrap_transport(slow, tmp_path / "never", upload=False, sleep=ratio * interval)
    loop = ReaperLoop(reaper, tmp_path / "reaper.log")
    try:
        proc = start(slow, "slow", stamping(stamps, 8), "--heartbeat", f"{interval:g}s", "--max-attempts", "9")
        wait_for(lambda: bool(remote.refs(LOCKS)), 60, "the slow runner's lock")
        deadline = time.monotonic() + 180
        while proc.poll() is None or remote.issue(target)["state"] != "done":
            assert time.monotonic() < deadline, "the issue was never finished"
            _code, result, stderr = finish(start(rescuer, "rescuer", stamping(stamps, 1), "--issue", target), 90)
            assert result["outcome"] in ("done", "idle"), (result, stderr)
            time.sleep(0.2)
        _code, result, stderr = finish(proc)
        assert result["outcome"] in ("done", "released", "lost"), (result, stderr)
    finally:
        loop.stop()
    assert assert_no_overlap(stamps)[target] >= 1


def test_beats_taking_a_large_share_of_the_interval_announce_a_longer_one(tmp_path: Path) -> None:
    """Each heartbeat push takes 3 s against a 10 s interval (over a quarter): the runner says so in
    its warnings, its next beats announce a longer interval, and a looping reaper never releases it."""
    remote = make_remote(tmp_path, [NewIssue("slow beats")])
    target = remote.ids[0]
    runner, reaper = remote.clone(tmp_path / "runner"), remote.clone(tmp_path / "reaper")
    zero = "0" * 40
    # The hook records every lock message it receives: polling the ref could miss the last beat,
    # which a settle replaces within a second.
    messages = tmp_path / "lock-messages"
    install_hook(
        remote,
        f'while read -r old new ref; do\n  if [ "${{ref#{LOCKS}}}" != "$ref" ] && [ "$new" != {zero} ]; then\n'
        f'    git log -1 --format=%B "$new" >> {messages}\n'
        f'    if [ "$old" != {zero} ]; then sleep 3; fi\n  fi\ndone\nexit 0\n',
    )
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    loop = ReaperLoop(reaper, tmp_path / "reaper.log")
    try:
        code, result, stderr = finish(start(runner, "w", stamping(stamps, 24), "--heartbeat", "10s"))
    finally:
        loop.stop()
    announced = {line.split(": ")[1] for line in messages.read_text().splitlines() if line.startswith("heartbeat:")}
    assert (code, result["outcome"]) == (0, "done"), (result, stderr)
    assert any("announcing" in w and "raise --heartbeat" in w for w in result["warnings"]), result["warnings"]
    assert "10" in announced and max(float(a) for a in announced) >= 12, announced
    assert assert_no_overlap(stamps) == {target: 1}
    assert "released" not in (tmp_path / "reaper.log").read_text()
