#!/usr/bin/env python3
"""Remote mode under injected faults: no two runs of an issue overlap, no success runs again.

    .venv/bin/python bench/remote_faults.py                          # 500 issues, 8 runners at a time
    .venv/bin/python bench/remote_faults.py --issues 12 --runners 4  # smoke, ~1 min

Runners are real `once --sync git` processes, each in a fresh depth-1 clone of a bare remote (what
actions/checkout makes), `--runners` at a time, started until every issue is done on the branch.
Each draws a fault (seeded):

- `slow`: every push of its clone waits 0–1.2 heartbeat intervals (a `receivepack` wrapper);
- `partition`: its pushes and fetches hang (wrappers) for `--partition` seconds from a random
  moment — the self-fence must stop its command before the reaper's release lets another start;
- `kill`: SIGKILL of the runner and everything it started (as a job teardown does) at a random
  moment: before, during or after the command, the lock push or the result push;
- `kill-dispatcher`: SIGKILL of the dispatcher process alone at a random moment: its command must
  not outlive it (docs/service.md#no-command-outlives-its-dispatcher); a process of its command
  (its environment names the issue) still alive 2 s after the kill counts as **outlived**;
- `torn`: every listing the dispatcher reads is torn as `git ls-remote` can tear one (an
  `uploadpack` wrapper reads `main`, waits `--tear` seconds, then serves that `main` beside the
  `refs/jit-dispatch/` refs of that later moment: a fold landing in between shows the old tip with
  its results already gone);
- none.

Every command writes a timestamp every 50 ms for about a second, then acts as an agent that pushes
code to the state branch: it commits a file and runs `git fetch && git rebase origin/main && git
push` (a few tries) in its shallow checkout. A reaper loops beside the runners (`reap
--older-than 1s`).

Reported: claims (`issue_claimed` events on the branch), runs, outcomes, **overlaps** (two runs of
one issue whose stamps interleave), **re-runs after success** (a run of an issue starting after the
run whose success the branch recorded — the final assignee — ended), agents whose pushes failed,
refs left, commands that outlived their dispatcher, wall time. Runners do not wait for their fold
(the default): later runners, idle ones and the reaper fold what they leave pending.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import ROOT, clean_env, git, load_average, machine
from remote_runner import build_remote, done_on_remote, issue_specs, refs_left

FAULTS = ("none", "slow", "partition", "kill", "kill-dispatcher", "torn")
GRACE = 2.0  # seconds after a dispatcher's SIGKILL by which its command must be gone
AGENT_PUSH = "git fetch -q origin && git rebase -q origin/main && git push -q origin HEAD:main"


def command(stamps: Path) -> str:
    """About a second of timestamps, then an agent's code commit pushed to the state branch."""
    stamp = f'f={stamps}/"$JIT_ISSUE_ID.$BENCH_RUNNER"; i=0; '
    stamp += 'while [ $i -lt 20 ]; do date +%s.%N >> "$f"; sleep 0.05; i=$((i+1)); done'
    work = 'mkdir -p work && echo "$BENCH_RUNNER" > "work/$BENCH_RUNNER.txt" && git add work && git commit -qm agent'
    retry = "git rebase --abort 2>/dev/null; sleep 0.$t"
    push = f"for t in 1 2 3 4 5; do {AGENT_PUSH} && exit 0; {retry}; done; echo agent-push-failed >&2; exit 0"
    return f"{stamp}; {work} && {push}"


@dataclass
class Runner:
    number: int
    fault: str
    proc: subprocess.Popen[str]
    started: float
    clone: Path
    flag: Path
    kill_at: float | None = None
    killed_at: float | None = None  # time.monotonic() of a kill of the dispatcher alone
    partition: tuple[float, float] | None = None
    killed: bool = False
    outcome: str = "killed"
    agent_failed: bool = False


@dataclass
class Totals:
    runs: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    agent_push_failures: int = 0
    outlived: int = 0  # commands still running GRACE after their dispatcher was killed alone
    judging: list[Runner] = field(default_factory=list)  # dispatchers killed alone, judged GRACE later
    killed_alone: int = 0

    def judge(self, now: float) -> None:
        for runner in [r for r in self.judging if r.killed_at is not None and now >= r.killed_at + GRACE]:
            self.judging.remove(runner)
            self.outlived += outlived(runner)


def wrap(clone: Path, flag: Path, sleep: float, torn: tuple[Path, float] | None = None) -> None:
    """Pushes wait `sleep` seconds; pushes and fetches hang while `flag` exists; with `torn` (the
    bare remote, seconds), the dispatcher's listings are torn (its command's git calls are not)."""
    for kind in ("receive", "upload"):
        wrapper = clone.parent / f"{clone.name}-{kind}-pack"
        delay = sleep if kind == "receive" else 0
        body = f"#!/bin/sh\nsleep {delay}\nwhile [ -f {flag} ]; do sleep 0.1; done\n"
        if kind == "upload" and torn is not None:
            body += tear(*torn)
        wrapper.write_text(body + f'exec git-{kind}-pack "$@"\n')
        wrapper.chmod(0o755)
        git("-C", str(clone), "config", f"remote.origin.{kind}pack", str(wrapper))


def tear(bare: Path, seconds: float) -> str:
    """Shell serving `main` as read now beside the jit-dispatch refs as they are `seconds` later:
    `git ls-remote` reads `refs/heads/` before `refs/jit-dispatch/`, stretched."""
    return f"""if [ -z "$JIT_ISSUE_ID" ]; then
  main=$(git --git-dir={bare} rev-parse refs/heads/main); sleep {seconds}
  d=$(mktemp -d {bare}-torn.XXXXXX); git init -q --bare -b main "$d"
  echo {bare}/objects > "$d/objects/info/alternates"
  git --git-dir={bare} for-each-ref --format='create %(refname) %(objectname)' refs/jit-dispatch/ |
    git --git-dir="$d" update-ref --stdin
  git --git-dir="$d" update-ref refs/heads/main "$main"
  git-upload-pack "$d"; rc=$?; rm -rf "$d"; exit $rc
fi
"""


def marked(runner: Runner, *, command_only: bool = False) -> list[int]:
    """The processes carrying the runner's mark (`command_only`: those of its command)."""
    mark = f"BENCH_RUNNER=r{runner.number}".encode()
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in environ and (not command_only or any(v.startswith(b"JIT_ISSUE_ID=") for v in environ)):
            found.append(int(pid))
    return found


def kill_everything(runner: Runner) -> None:
    """SIGKILL the runner and every process carrying its mark (its command and git children too)."""
    for pid in marked(runner):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def outlived(runner: Runner) -> bool:
    """Whether a command of a dispatcher killed alone is still running (then it is ended here)."""
    survivors = marked(runner, command_only=True)
    kill_everything(runner)
    return bool(survivors)


def start_runner(
    n: int,
    rng: random.Random,
    bare: Path,
    work: Path,
    stamps: Path,
    env: dict[str, str],
    interval: float,
    partition: float,
    tear_seconds: float,
) -> Runner:
    clone = work / f"c{n}"
    git("clone", "-q", "--depth", "1", f"file://{bare}", str(clone))
    flag = work / f"c{n}.partitioned"
    fault = rng.choice(FAULTS)
    wrap(clone, flag, rng.uniform(0, 1.2 * interval) if fault == "slow" else 0,
         (bare, tear_seconds) if fault == "torn" else None)  # fmt: skip
    argv = [sys.executable, "-m", "jit_dispatch", "once", "--agent", f"r{n}", "--command", command(stamps),
            "--sync", "git", "--json", "--heartbeat", f"{interval:g}s", "--max-attempts", "100",
            "--push-budget", "60s"]  # fmt: skip
    identity = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                for what, value in (("NAME", "agent"), ("EMAIL", "agent@example.invalid"))}  # fmt: skip
    runner_env = {**env, **identity, "BENCH_RUNNER": f"r{n}"}
    proc = subprocess.Popen(argv, cwd=clone, env=runner_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    now = time.monotonic()
    runner = Runner(n, fault, proc, now, clone, flag)
    if fault in ("kill", "kill-dispatcher"):
        runner.kill_at = now + rng.uniform(0.3, 5.0)
    elif fault == "partition":
        begin = now + rng.uniform(0.5, 3.0)
        runner.partition = (begin, begin + partition)
    return runner


def tend(runner: Runner, now: float) -> None:
    if runner.kill_at is not None and now >= runner.kill_at and not runner.killed:
        runner.killed = True
        if runner.fault == "kill-dispatcher":
            runner.killed_at = time.monotonic()
            with contextlib.suppress(OSError):
                os.kill(runner.proc.pid, signal.SIGKILL)  # the dispatcher alone, not its group
        else:
            kill_everything(runner)
    if runner.partition is not None:
        begin, end = runner.partition
        if begin <= now < end:
            runner.flag.touch()
        elif now >= end:
            runner.flag.unlink(missing_ok=True)


def analyse(stamps: Path, bare: Path) -> dict[str, object]:
    runs: dict[str, list[tuple[float, float, str]]] = {}
    for path in stamps.iterdir():
        times = [float(t) for t in path.read_text().split() if t]
        if times:
            issue, _, who = path.name.partition(".")
            runs.setdefault(issue, []).append((times[0], times[-1], who))
    overlaps, reruns = 0, 0
    for issue, found in runs.items():
        found.sort()
        overlaps += sum(1 for (_, end, _), (begin, _, _) in itertools.pairwise(found) if begin <= end)
        raw = json.loads(git("-C", str(bare), "show", f"main:.jit/issues/{issue}.json"))
        accepted = [
            end for _, end, who in found if raw.get("state") == "done" and raw.get("assignee") == f"agent:{who}"
        ]
        if accepted:
            reruns += sum(1 for begin, _, who in found if begin > accepted[0])
    events = [json.loads(line) for line in git("-C", str(bare), "show", "main:.jit/events.jsonl").splitlines() if line]
    claims = sum(1 for e in events if e.get("type") == "issue_claimed")
    return {
        "claims": claims,
        "runs": sum(len(v) for v in runs.values()),
        "overlaps": overlaps,
        "reruns_after_success": reruns,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issues", type=int, default=500)
    parser.add_argument("--runners", type=int, default=8, help="runners at a time")
    parser.add_argument("--heartbeat", type=float, default=2.0, help="seconds")
    parser.add_argument("--partition", type=float, default=12.0, help="seconds a partition lasts")
    parser.add_argument("--tear", type=float, default=0.3, help="seconds between the two halves of a torn listing")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds; the report covers what ran")
    parser.add_argument("--stuck", type=float, default=180.0, help="stop after this many seconds without a done")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the reaper loop and the runners go with us
    rng = random.Random(args.seed)
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="jit-faults-", dir=base) as tmp:
        work = Path(tmp)
        bare, stamps = work / "remote.git", work / "stamps"
        stamps.mkdir()
        build_remote(bare, issue_specs(args.issues, mixed=False))
        env = clean_env(work / "pycache")
        reaper_clone = work / "reaper"
        git("clone", "-q", "--depth", "1", f"file://{bare}", str(reaper_clone))
        reap = f"{shlex.quote(sys.executable)} -m jit_dispatch reap --older-than 1s --max-attempts 100 --sync git"
        loop = f"while :; do {reap} > /dev/null 2>&1; sleep 0.5; done"
        reaper = subprocess.Popen(["bash", "-c", loop], cwd=reaper_clone, env=env, start_new_session=True)
        active: list[Runner] = []
        totals, number, progress = Totals(), 0, (0, time.monotonic())
        try:
            while time.monotonic() - started < args.timeout:
                now = time.monotonic()
                for runner in active:
                    tend(runner, now)
                for runner in [r for r in active if r.proc.poll() is not None]:
                    active.remove(runner)
                    runner.flag.unlink(missing_ok=True)
                    stdout, stderr = runner.proc.communicate()
                    if not runner.killed:
                        try:
                            runner.outcome = json.loads(stdout)["outcome"]
                        except (json.JSONDecodeError, KeyError):
                            runner.outcome = f"exit {runner.proc.returncode}"
                    totals.outcomes[runner.outcome] = totals.outcomes.get(runner.outcome, 0) + 1
                    totals.faults[runner.fault] = totals.faults.get(runner.fault, 0) + 1
                    totals.agent_push_failures += "agent-push-failed" in stderr
                    if runner.killed_at is not None:
                        totals.judging.append(runner)
                        totals.killed_alone += 1
                totals.judge(now)
                if (finished := done_on_remote(bare)) > progress[0]:
                    progress = (finished, now)
                elif now - progress[1] > args.stuck:  # nothing settles any more: report what is stuck
                    break
                if not active and done_on_remote(bare) >= args.issues:
                    break
                while len(active) < args.runners and done_on_remote(bare) < args.issues:
                    number += 1
                    active.append(
                        start_runner(number, rng, bare, work, stamps, env, args.heartbeat, args.partition, args.tear)
                    )
                time.sleep(0.05)
        finally:
            os.killpg(reaper.pid, signal.SIGKILL)
            reaper.wait()
            for runner in active:
                kill_everything(runner)
        time.sleep(GRACE)
        totals.judge(time.monotonic())
        flush = subprocess.run([sys.executable, "-m", "jit_dispatch", "reap", "--older-than", "1s", "--sync", "git"],
                               cwd=reaper_clone, env=env, capture_output=True, text=True)  # fmt: skip
        figures = analyse(stamps, bare)
        done, leftover = done_on_remote(bare), refs_left(bare)
    wall = time.monotonic() - started
    print(f"# Remote mode under faults ({machine()['cpu']}, load {load_average()})\n")
    print(f"`{' '.join(['bench/remote_faults.py', *sys.argv[1:]])}`, code at {ROOT.name}\n")
    reaped = f"final reap: exit {flush.returncode}"
    print(f"- issues {args.issues}, done on the branch {done}, refs left {len(leftover)} ({reaped})")
    for ref in leftover:  # what a next investigation needs: a lock or a result, and whose
        print(f"  - left: `{ref}`")
    print(f"- runners started {number}, faults {totals.faults}, outcomes {totals.outcomes}")
    print(f"- claims {figures['claims']}, command runs {figures['runs']}")
    print(f"- **overlaps {figures['overlaps']}**, **re-runs after success {figures['reruns_after_success']}**")
    print(f"- commands that outlived their dispatcher (killed alone {totals.killed_alone} times): "
          f"**{totals.outlived}**")  # fmt: skip
    print(f"- agents whose code push failed after 5 tries: {totals.agent_push_failures}")
    print(f"- wall {wall:.0f} s, heartbeat {args.heartbeat:g} s, partitions {args.partition:g} s, seed {args.seed}")
    if figures["overlaps"] or figures["reruns_after_success"] or totals.outlived or done < args.issues:
        sys.exit(1)


if __name__ == "__main__":
    main()
