#!/usr/bin/env python3
"""Remote mode as a fleet: CPU per claim as runners grow, a big fan-out over a slow remote.

    .venv/bin/python bench/remote_fleet.py                # solo floor, 8/24/64 runners, 64 and 256 with latency
    .venv/bin/python bench/remote_fleet.py --solo-runs 2 --runners 4 --latency-runners 4   # smoke, ~20 s
    .venv/bin/python bench/remote_fleet.py --runners '' --latency-runners 64 --wait-for-fold  # as before 0.4

1. CPU seconds per claim at N runners started together (spread options, as the Action starts a
   matrix; one issue per runner, command `sleep 0.2`): the user+system CPU of every runner process
   and its git children (os.wait4), divided by the claims settled. The floor is N = 1 measured in
   the same run (median of `--solo-runs` waves); the target is a ratio ≤ 1.5 at 24 runners. Every
   wave's fresh bytecode cache is warmed first (one `once --dry-run`), as an installed package has
   its .pyc files; the floor with a cold cache is reported beside it.
2. For each of `--latency-runners` (default 64 and 256, GitHub's matrix limit) runners, at most
   `--max-parallel` (64) at a time as a matrix's `max-parallel` runs them (256 processes at once
   would starve this 2-core machine's heartbeats, not measure the protocol), every push
   waiting `--latency` seconds (0.3) before the server sees it (a `remote.origin.receivepack`
   wrapper in each clone sleeps, then runs git-receive-pack): wall time; the runner time billed
   after the command ended — from the command's end (it writes a timestamp) to its runner's exit,
   p50/p95/max; the time from a command's end to its result on the branch (a watcher reads the bare
   repository's branch every 50 ms); the refs left when the last runner exited (results the next
   run folds: docs/remote-mode.md#leaving-the-fold-to-the-next-runner) and after one more `once`
   (idle: it folds them). `--wait-for-fold` runs every runner with that flag (the behaviour before
   it existed: each runner exits once its result is on the branch).
3. Branch commits per settled issue, for every wave.

Every wave is checked: each issue's command ran once (no overlaps: one mark per issue), every
runner reported `done`, the branch shows every result, no ref under refs/jit-dispatch/ is left
(after the follow-up run). Remotes and clones live in /dev/shm when it exists. A real remote adds
a network round trip to each git call; runners here share 2 cores, so wall times are an upper
bound and CPU figures are what each runner pays.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from common import ROOT, clean_env, git, load_average, machine, median, prepend_path, snapshot_code
from remote_runner import build_remote, clones, done_on_remote, issue_specs, lock_refs, state_commits

TARGET_RATIO = 1.5
WAIT_TARGET = 10.0  # seconds of runner time after the command, p95 at 64 runners
COMMAND = 'sleep 0.2; date +%s.%N > "$MARK_DIR/$JIT_ISSUE_SHORT_ID"'


@dataclass
class Wave:
    runners: int
    latency: float
    cpu: float = 0.0
    wall: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    done: int = 0
    commits: int = 0
    leftover_refs: int = 0  # after the follow-up run
    refs_at_exit: int = 0  # when the last runner exited
    lags: list[float] = field(default_factory=list)  # command end → result on the branch (s)
    waits: list[float] = field(default_factory=list)  # command end → its runner's exit (s)
    overlaps: int = 0  # issues whose command ran more than once
    parallel: int = 0  # runners at a time
    problems: list[str] = field(default_factory=list)

    @property
    def cpu_per_claim(self) -> float:
        return self.cpu / max(self.done, 1)


def slow_receive_pack(clone: Path, seconds: float) -> None:
    wrapper = clone.parent / f"{clone.name}-receive-pack"
    wrapper.write_text(f'#!/bin/sh\nsleep {seconds}\nexec git-receive-pack "$@"\n')
    wrapper.chmod(0o755)
    git("-C", str(clone), "config", "remote.origin.receivepack", str(wrapper))


def watch_branch(bare: Path, seen: dict[str, float], stop: threading.Event) -> None:
    """When each issue first shows `done` on the branch (time.time())."""
    while not stop.wait(0.05):
        proc = subprocess.run(
            ["git", "-C", str(bare), "grep", "-l", "-E", '^  "state": "done"', "main", "--", ".jit/issues"],
            capture_output=True,
            text=True,
            check=False,
        )
        now = time.time()
        for line in proc.stdout.splitlines():
            seen.setdefault(Path(line).stem[:8], now)


def run_wave(
    work: Path,
    code: Path,
    runners: int,
    latency: float,
    *,
    warm: bool = True,
    wait_for_fold: bool = False,
    parallel: int = 0,
) -> Wave:
    """`warm`: one `once --dry-run` fills the wave's fresh bytecode cache first, as an installed
    package (and the Action's cached venv) has its .pyc files; cold, every runner compiles."""
    wave = Wave(runners, latency)
    parallel = wave.parallel = min(parallel or runners, runners)
    root = Path(tempfile.mkdtemp(prefix=f"wave-{runners}-", dir=work))
    bare = root / "remote.git"
    build_remote(bare, issue_specs(runners, mixed=False))
    checkouts = clones(bare, root, runners)
    if latency:
        for clone in checkouts:
            slow_receive_pack(clone, latency)
    marks = root / "marks"
    marks.mkdir()
    env = clean_env(root / "pycache")
    prepend_path(env, "PYTHONPATH", str(code))
    env["MARK_DIR"] = str(marks)
    if wait_for_fold:
        env["JIT_DISPATCH_WAIT_FOR_FOLD"] = "true"
    if warm:
        argv = [
            sys.executable,
            "-m",
            "jit_dispatch",
            "once",
            "--sync",
            "git",
            "--dry-run",
            "--agent",
            "warm",
            "--command",
            "true",
        ]
        subprocess.run(argv, cwd=checkouts[0], env=env, capture_output=True, check=False)
    seen: dict[str, float] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=watch_branch, args=(bare, seen, stop), daemon=True)
    if latency:
        watcher.start()
    started = time.monotonic()
    argvs = [
        [sys.executable, "-m", "jit_dispatch", "once", "--sync", "git", "--json", "--agent", f"r{i}",
         "--command", COMMAND, "--spread-index", str(i), "--spread-total", str(runners)]
        for i in range(runners)
    ]  # fmt: skip
    outs = [root / f"out-{i}.json" for i in range(runners)]
    exits = run_all(argvs, checkouts, outs, env, parallel)
    for index, out in enumerate(outs):
        wave.cpu += exits[index][2]
        returncode = exits[index][1]
        try:
            reported = json.loads(out.read_text())
            outcome = reported["outcome"]
        except (ValueError, KeyError):
            reported, outcome = {}, f"exit {returncode}, no json"
        if outcome != "done":
            wave.problems.append(f"runner {index}: {outcome}: {reported.get('reason')}")
        wave.outcomes[outcome] = wave.outcomes.get(outcome, 0) + 1
    wave.wall = time.monotonic() - started
    wave.refs_at_exit = lock_refs(bare)
    runner_of = {_ran(out): i for i, out in enumerate(outs)}
    for mark in marks.iterdir():
        stamps = mark.read_text().split()
        wave.overlaps += len(stamps) > 1
        if (index := runner_of.get(mark.name)) is not None:
            wave.waits.append(max(0.0, exits[index][0] - float(stamps[0])))
    if wave.refs_at_exit:  # the next run folds what the fleet left pending: one more `once`, idle
        follow = [sys.executable, "-m", "jit_dispatch", "once", "--sync", "git", "--agent", "next", "--command", "true"]
        subprocess.run(follow, cwd=checkouts[0], env=env, capture_output=True, check=False)
    if latency:
        deadline = time.monotonic() + 30
        while len(seen) < runners and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        watcher.join()
        for mark in marks.iterdir():
            if mark.name in seen:
                wave.lags.append(max(0.0, seen[mark.name] - float(mark.read_text().split()[0])))
    wave.done = done_on_remote(bare)
    wave.commits = state_commits(bare)
    wave.leftover_refs = lock_refs(bare)
    if wave.outcomes != {"done": runners}:
        wave.problems.append(f"{runners} runners: outcomes {wave.outcomes}")
    if wave.overlaps:
        wave.problems.append(f"{runners} runners: {wave.overlaps} issue(s) ran more than once")
    if wave.done != runners or len(list(marks.iterdir())) != runners:
        wave.problems.append(f"{runners} runners: {wave.done} done on the branch, {len(list(marks.iterdir()))} ran")
    if wave.leftover_refs:
        wave.problems.append(f"{runners} runners: {wave.leftover_refs} refs left under refs/jit-dispatch/")
    return wave


def run_all(
    argvs: list[list[str]], cwds: list[Path], outs: list[Path], env: dict[str, str], parallel: int
) -> list[tuple[float, int, float]]:
    """Run every runner, at most `parallel` at a time (a matrix's `max-parallel`: a slot starts the
    next runner when its runner exits); each one's (exit time, exit code, CPU seconds of it and its
    children), timed by a thread of its own as it exits, not when its turn to be collected comes."""
    exits: list[tuple[float, int, float]] = [(0.0, 0, 0.0)] * len(argvs)
    slots = threading.Semaphore(parallel)

    def run(index: int) -> None:
        with slots, outs[index].open("wb") as sink:
            proc = subprocess.Popen(argvs[index], cwd=cwds[index], env=env, stdout=sink, stderr=subprocess.DEVNULL)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            exits[index] = (time.time(), proc.returncode, usage.ru_utime + usage.ru_stime)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(argvs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return exits


def _ran(out: Path) -> str | None:
    """The short id of the issue a runner settled, from its --json output."""
    try:
        return str(json.loads(out.read_text())["short_id"])
    except (ValueError, KeyError, OSError):
        return None


def at_a_time(wave: Wave) -> str:
    return f" ({wave.parallel} at a time)" if wave.parallel < wave.runners else ""


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] if ordered else float("nan")


def report(
    solo: list[Wave],
    cold: list[Wave],
    waves: list[Wave],
    slow: list[Wave],
    argv: list[str],
    code_note: str,
    took: float,
    wait: bool = False,
) -> str:
    info = machine()
    floor = median([w.cpu_per_claim for w in solo])
    cold_floor = median([w.cpu_per_claim for w in cold]) if cold else float("nan")
    lines = [
        "# Remote mode as a fleet",
        "",
        f"- command: `{' '.join(['python3', *argv])}`",
        f"- code: {code_note}",
        f"- machine: {info['platform']}, {info['nproc']} CPUs ({info['cpu']}), python {info['python']}; "
        f"load average {load_average()} at end",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; run took {took:.0f} s",
        "",
        f"Solo floor: median of {len(solo)} one-runner waves, "
        + ", ".join(f"{w.cpu_per_claim:.3f}" for w in solo)
        + f" → **{floor:.3f} s** CPU per claim, bytecode cache warmed before every wave (an installed package "
        f"has its .pyc files). With a cold cache (every runner compiles): {cold_floor:.3f} s; the ratios below "
        f"against that floor would read {cold_floor / floor if floor else float('nan'):.2f}× lower.",
        "",
        "| runners | claims | CPU s per claim | ratio to solo | wall (s) | branch commits per settled issue |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines.append(f"| 1 (median of {len(solo)}) | 1 | {floor:.3f} | 1.00 | {median([w.wall for w in solo]):.1f} | "
                 f"{median([w.commits / max(w.done, 1) for w in solo]):.2f} |")  # fmt: skip
    for w in waves:
        ratio = w.cpu_per_claim / floor if floor else float("nan")
        lines.append(f"| {w.runners} | {w.done} | {w.cpu_per_claim:.3f} | {ratio:.2f} | {w.wall:.1f} | "
                     f"{w.commits / max(w.done, 1):.2f} |")  # fmt: skip
    at24 = next((w for w in waves if w.runners == 24), None)
    if at24 and floor:
        verdict = "met" if at24.cpu_per_claim / floor <= TARGET_RATIO else "**not met**"
        lines += ["", f"Target CPU per claim at 24 runners ≤ {TARGET_RATIO}× the solo floor: {verdict}."]
    if slow:
        lines += [
            "",
            f"Every push delayed {slow[0].latency:g} s"
            + (" (`--wait-for-fold`: each runner exits once its result is on the branch)" if wait else "")
            + ": runner time after the command ended (command end → runner exit), and command end → result "
            "on the branch. Refs left: when the last runner exited / after one more `once`.",
            "",
            "| runners | settled | wall (s) | after command p50 / p95 / max (s) | to the branch p50 / p95 (s) "
            "| overlaps | refs left | branch commits per issue | CPU s per claim |",
            "|---:|---:|---:|---|---|---:|---|---:|---:|",
        ]
        for w in slow:
            lines.append(
                f"| {w.runners}{at_a_time(w)} | {w.done} | {w.wall:.1f} | {median(w.waits):.1f} / {p95(w.waits):.1f} / "
                f"{max(w.waits, default=float('nan')):.1f} | {median(w.lags):.1f} / {p95(w.lags):.1f} | {w.overlaps} "
                f"| {w.refs_at_exit} / {w.leftover_refs} | {w.commits / max(w.done, 1):.2f} | {w.cpu_per_claim:.3f} |"
            )
        at64 = next((w for w in slow if w.runners == 64), None)
        if at64 is not None and not wait:
            verdict = "met" if p95(at64.waits) <= WAIT_TARGET else "**not met**"
            lines += ["", f"Target runner time after the command p95 ≤ {WAIT_TARGET:g} s at 64 runners: {verdict}."]
    problems = [p for w in [*solo, *waves, *slow] for p in w.problems]
    lines += ["", "Checks: " + ("all passed" if not problems else "; ".join(problems))]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runners", default="8,24,64", help="runner counts for the CPU table")
    parser.add_argument("--solo-runs", type=int, default=5, help="one-runner waves for the floor")
    parser.add_argument("--latency-runners", default="64,256", help="runner counts of the slow-remote waves ('': skip)")
    parser.add_argument("--max-parallel", type=int, default=64, help="runners of a slow-remote wave at a time")
    parser.add_argument("--wait-for-fold", action="store_true", help="every runner waits for its fold (as before)")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds each push waits")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "remote-fleet.md")
    args = parser.parse_args()
    started = time.monotonic()
    scratch = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="jit-fleet-", dir=scratch) as tmp:
        work = Path(tmp)
        code, code_note = snapshot_code(work, None)
        print(f"solo floor ({args.solo_runs} waves) …", file=sys.stderr, flush=True)
        solo = [run_wave(work, code, 1, 0.0) for _ in range(args.solo_runs)]
        cold = [run_wave(work, code, 1, 0.0, warm=False) for _ in range(args.solo_runs)]
        waves = []
        for n in (int(x) for x in args.runners.split(",") if x.strip()):
            print(f"{n} runners …", file=sys.stderr, flush=True)
            waves.append(run_wave(work, code, n, 0.0, wait_for_fold=args.wait_for_fold))
        slow = []
        for n in (int(x) for x in str(args.latency_runners).split(",") if x.strip() and int(x)):
            print(f"{n} runners, {args.latency:g} s per push …", file=sys.stderr, flush=True)
            slow.append(run_wave(work, code, n, args.latency, wait_for_fold=args.wait_for_fold,
                                 parallel=args.max_parallel))  # fmt: skip
    took = time.monotonic() - started
    text = report(solo, cold, waves, slow, sys.argv, code_note, took, args.wait_for_fold)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
