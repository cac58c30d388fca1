#!/usr/bin/env python3
"""Benchmark remote mode (`--sync git`): lock contention, claim latency under fan-out, big trees.

    .venv/bin/python bench/remote.py                      # full run, ~5 min on 2 cores → bench/results/remote.md
    .venv/bin/python bench/remote.py --quick              # smoke run, ~20 s → bench/results/remote-quick.md
    .venv/bin/python bench/remote.py --runners 1,8,16,32 --no-profile --rev HEAD

Every runner is a real `python -m jit_dispatch once --sync git --json` process, in its own
`git clone --depth 1` of a local bare remote reached by a `file://` URL, as a matrix job is in its
own checkout. A wave starts its runners back to back (the worst case: no runner sees another's lock
when it lists the remote) and waits for all of them. Each wave gets a fresh copy of the remote
and fresh clones; cloning is never part of a measured time.

1. Lock push attempts per successful claim (`sync_attempts` of the JSON output): 8 runners, 40
   ready issues of one priority, and 40 of mixed priorities (4 critical, 8 high, 16 normal, 12 low),
   each with the Action's spread options (`--spread-index i --spread-total 8`) and without them
   (strict contract order). Target: median <= 1.5 with spread options.
2. Claim latency at 1/8/16/32 runners (spread options on, 64 ready issues; about 24 claims and
   at least 2 waves per N): from just before `Popen` to the command's first instruction (it
   writes `date +%s.%N` to `$MARK_DIR/<short id>`, then sleeps 1 s). Median, p90,
   latency(N)/latency(1), latency(N)/N and the local growth exponent ln(L(N)/L(M))/ln(N/M)
   between consecutive N: 1 is linear growth (the runners share the machine's cores, so CPU cost
   alone is linear), 2 quadratic (a remote protocol that serialised the runners). The verdict uses
   the exponent from the smallest to the largest N (the local ones are noisy): up to 1.1 counts
   as linear, up to 1.5 as slightly super-linear. Waves run in rounds over all N, so a slow
   minute on the machine does not land on one N. Also: wall time until the last runner
   exited, and the state commits on the remote (successful branch pushes; 2 per claim expected).
   Every wave is checked: commands run at most once per issue, no lock refs left, and the remote's
   `done` issues match the runners' reports.
3. One remote transaction on a repository with a big non-`.jit` tree: `once --command true` as a
   whole process, 0 other files against 20 000 (same `.jit/` of 50 issues), alternating runs,
   medians; once with the clone at the remote's tip (a fresh CI checkout), once with the remote one
   run ahead (the transaction has to fetch).
4. Profile (`--profile`, on in the full run): a `git` shim on the runners' PATH logs every git
   call (subcommand, duration, exit code). One wave of `--profile-runners` (default 16), broken
   down into where the claim latency goes and what the record costs afterwards (branch push
   attempts, including the rejected ones: not in the JSON output); and the git time per run of
   part 3. The shim costs a bash start per call, so these waves are not used in part 2.

The measured processes import a frozen copy of the package (the working tree at start, or
`--rev`), so edits made to src/ during a run do not mix into it. Remotes and clones live in
/dev/shm when it exists (`--scratch-dir`): this VM's disk adds seconds of I/O wait to a big wave.
All figures are warm-cache figures on one machine: a real remote adds a network round trip to
every ls-remote, fetch and push, and real runners do not share CPUs.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    from jit_dispatch.jit_store import JitStore, NewIssue
    from jit_dispatch.transitions import format_timestamp
except ImportError:  # run by a python without the package installed: use the source tree
    sys.path.insert(0, str(ROOT / "src"))
    from jit_dispatch.jit_store import JitStore, NewIssue
    from jit_dispatch.transitions import format_timestamp

GIT = shutil.which("git") or "git"
SLEEP_SECONDS = 1.0
ATTEMPTS_TARGET = 1.5
MIXED_PRIORITIES = (("critical", 4), ("high", 8), ("normal", 16), ("low", 12))  # per 40 issues
LINEAR_EXPONENT = 1.1  # local growth exponent up to this counts as linear (noise margin included) …
NEAR_LINEAR_EXPONENT = 1.5  # … up to this as slightly super-linear; a serialised protocol shows about 2
BIG_TREE_TARGET = 1.25  # 20k-file median over 0-file median above this counts as growing with the tree
# The command: its first instruction records when it started, and who ran it (a double run shows as 2 lines).
MARK_COMMAND = 'printf "%s %s\\n" "$(date +%s.%N)" "$JIT_AGENT_ID" >> "$MARK_DIR/$JIT_ISSUE_SHORT_ID"; sleep {sleep}'
SHIM = """#!/bin/bash
start=$EPOCHREALTIME
{git} "$@"
rc=$?
end=$EPOCHREALTIME
args=("$@")
i=0
while [[ ${{args[i]}} == -C || ${{args[i]}} == -c ]]; do i=$((i + 2)); done
printf '%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' "$PPID" "${{args[i]}}" "$start" "$end" "$rc" "${{args[-1]}}" >> "$GIT_SHIM_LOG"
exit $rc
"""


class BenchError(Exception):
    pass


# ===================================================================== remotes and clones


def git(*args: str, cwd: Path | None = None, stdin: bytes | None = None) -> str:
    proc = subprocess.run([GIT, *args], cwd=cwd, input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"git {' '.join(args[:3])} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode(errors="replace")


def issue_specs(count: int, mixed: bool) -> list[NewIssue]:
    """`count` issues, created one second apart (a deterministic dispatch order)."""
    priorities = ["normal"] * count
    if mixed:
        pattern = [p for p, n in MIXED_PRIORITIES for _ in range(n)]
        priorities = [pattern[(k * len(pattern)) // count] for k in range(count)]
        priorities = priorities[1::2] + priorities[0::2]  # interleaved creation order; selection sorts
    base = time.time_ns() - 86_400 * 10**9
    return [
        NewIssue(f"bench issue {k}", p, created_at=format_timestamp(base + k * 10**9)) for k, p in enumerate(priorities)
    ]


def build_remote(bare: Path, specs: list[NewIssue], other_files: int = 0) -> None:
    """A bare repository whose `main` holds `.jit/` with `specs`, plus `other_files` unrelated files.

    The same content as tests/conftest.py `make_remote`, written with `git fast-import` (no work tree:
    20 000 files take a second instead of a minute on a slow disk).
    """
    with tempfile.TemporaryDirectory(prefix="jit-bench-seed-") as tmp:
        store = Path(tmp) / ".jit"
        JitStore.init(store).create_issues(specs)
        files = {".gitignore": b".jit/**/*.lock\n"}
        for path in sorted(store.rglob("*")):
            if path.is_file() and not path.name.endswith(".lock"):
                files[".jit/" + path.relative_to(store).as_posix()] = path.read_bytes()
    for n in range(other_files):
        files[f"src/d{n % 100}/file{n}.txt"] = f"file {n}\n".encode()
    stream = io.BytesIO()
    stream.write(b"commit refs/heads/main\ncommitter bench <bench@example.invalid> 1700000000 +0000\ndata 4\nseed\n")
    for name, data in files.items():
        stream.write(f"M 100644 inline {name}\ndata {len(data)}\n".encode() + data + b"\n")
    git("init", "-q", "--bare", "-b", "main", str(bare))
    git("-C", str(bare), "fast-import", "--quiet", stdin=stream.getvalue())


def fresh_copy(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest, symlinks=True)
    return dest


def clone(bare: Path, dest: Path) -> Path:
    git("clone", "-q", "--depth", "1", f"file://{bare}", str(dest))
    return dest


def clones(bare: Path, parent: Path, count: int) -> list[Path]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda i: clone(bare, parent / f"runner-{i}"), range(count)))


def state_commits(bare: Path) -> int:
    return int(git("-C", str(bare), "rev-list", "--count", "main").strip()) - 1


def lock_refs(bare: Path) -> int:
    return len(git("-C", str(bare), "for-each-ref", "--format=%(refname)", "refs/jit-dispatch/").split())


def done_on_remote(bare: Path) -> int:
    proc = subprocess.run(
        [GIT, "-C", str(bare), "grep", "-l", "-E", '^  "state": "done"', "main", "--", ".jit/issues"],
        capture_output=True,
        check=False,
    )
    return len(proc.stdout.splitlines())


# ===================================================================== running dispatchers


@dataclass
class Runner:
    index: int
    started: float  # time.time() just before Popen
    pid: int = 0
    returncode: int = 0
    ended: float = 0.0
    outcome: str = "no json"
    short_id: str | None = None
    attempts: int | None = None
    error: str = ""
    latency: float | None = None  # process start → command start


@dataclass
class GitCall:
    ppid: int
    sub: str
    start: float
    end: float
    rc: int
    last: str

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def kind(self) -> str:
        """`push` split by target: lock take, lock delete, branch."""
        if self.sub != "push":
            return self.sub
        if self.last.startswith(":"):
            return "push (lock delete)"
        return "push (branch)" if ":refs/heads/" in self.last else "push (lock)"


@dataclass
class Wave:
    runners: list[Runner]
    wall: float
    commits: int
    leftover_locks: int
    done_remote: int
    double_runs: int
    calls: list[GitCall] = field(default_factory=list)

    @property
    def claimed(self) -> list[Runner]:
        return [r for r in self.runners if r.latency is not None]

    def problems(self) -> list[str]:
        found = []
        outcomes = Counter(r.outcome for r in self.runners if r.outcome != "done")
        for outcome, count in sorted(outcomes.items()):
            example = next(r for r in self.runners if r.outcome == outcome)
            found.append(f"{count} runner(s) ended `{outcome}` (exit {example.returncode}): {example.error[:300]}")
        if self.double_runs:
            found.append(f"{self.double_runs} issue(s) had their command run more than once")
        if self.leftover_locks:
            found.append(f"{self.leftover_locks} lock ref(s) left on the remote")
        done = sum(r.outcome == "done" for r in self.runners)
        if self.done_remote != done:
            found.append(f"the remote has {self.done_remote} done issues, the runners reported {done}")
        if self.commits != 2 * done:
            found.append(f"{self.commits} state commits for {done} done issues (2 each expected)")
        return found


class Bench:
    def __init__(self, work: Path, code: Path, *, quick: bool) -> None:
        self.work = work
        self.code = code
        self.quick = quick
        self.sleep = 0.2 if quick else SLEEP_SECONDS
        self.shim_dir = work / "shim"
        self.shim_dir.mkdir()
        (self.shim_dir / "git").write_text(SHIM.format(git=GIT))
        (self.shim_dir / "git").chmod(0o755)
        self._count = 0
        self.problems: list[str] = []
        # big-tree part: size → variant → (measured clone, clone that moves the remote ahead or None)
        self.tree_setups: dict[int, dict[str, tuple[Path, Path | None]]] = {}

    def scratch(self, name: str) -> Path:
        self._count += 1
        path = self.work / f"{self._count:03d}-{name}"
        path.mkdir()
        return path

    def env(self, marks: Path, log: Path | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "JIT_", "RUNNER_"))}
        env["PYTHONPATH"] = os.pathsep.join([str(self.code), *filter(None, [os.environ.get("PYTHONPATH")])])
        env["MARK_DIR"] = str(marks)
        if log is not None:
            env["PATH"] = f"{self.shim_dir}{os.pathsep}{env.get('PATH', '')}"
            env["GIT_SHIM_LOG"] = str(log)
        return env

    def argv(self, command: str, index: int, total: int, spread: bool) -> list[str]:
        argv = [sys.executable, "-m", "jit_dispatch", "once", "--agent", f"bench-{index}", "--sync", "git"]
        argv += ["--json", "--command", command]
        if spread and total > 1:
            argv += ["--spread-index", str(index), "--spread-total", str(total)]
        return argv

    def wave(self, template: Path, count: int, *, spread: bool, profile: bool = False, name: str = "wave") -> Wave:
        """`count` runners started back to back on a fresh copy of `template`, each in its own clone."""
        where = self.scratch(name)
        bare = fresh_copy(template, where / "remote.git")
        dirs = clones(bare, where, count)
        marks = where / "marks"
        marks.mkdir()
        log = where / "git.log" if profile else None
        env = self.env(marks, log)
        command = MARK_COMMAND.format(sleep=self.sleep)
        runners, procs = [], []
        for i, cwd in enumerate(dirs):
            runner = Runner(i, time.time())
            proc = subprocess.Popen(
                self.argv(command, i, count, spread), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            runner.pid = proc.pid
            runners.append(runner)
            procs.append(proc)
        first = runners[0].started
        for runner, proc in zip(runners, procs, strict=True):
            self._finish(runner, proc)
        wall = max(r.ended for r in runners) - first
        double = self._read_marks(marks, runners)
        calls = parse_shim_log(log) if log is not None else []
        return Wave(runners, wall, state_commits(bare), lock_refs(bare), done_on_remote(bare), double, calls)

    def _finish(self, runner: Runner, proc: subprocess.Popen[bytes]) -> None:
        try:
            out, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        runner.ended = time.time()  # the last runner's end: the others ended no later
        runner.returncode = proc.returncode
        runner.error = " ".join(err.decode(errors="replace").split())
        try:
            result = json.loads(out)
        except ValueError:
            return
        runner.outcome = result.get("outcome", "?")
        runner.short_id = result.get("short_id")
        runner.attempts = result.get("sync_attempts")
        runner.error = result.get("reason") or runner.error

    def _read_marks(self, marks: Path, runners: list[Runner]) -> int:
        by_agent = {f"agent:bench-{r.index}": r for r in runners}
        double = 0
        for path in marks.iterdir():
            lines = path.read_text().split("\n")
            entries = [line.split(" ", 1) for line in lines if line.strip()]
            double += len(entries) > 1
            for stamp, agent in entries:
                runner = by_agent.get(agent)
                if runner is not None and runner.short_id == path.name:
                    runner.latency = float(stamp) - runner.started
        return double

    def single(self, cwd: Path, *, profile_log: Path | None = None) -> tuple[float, Runner]:
        """One `once --command true` in `cwd`, timed as a whole process."""
        env = self.env(self.work, profile_log)
        runner = Runner(0, time.time())
        proc = subprocess.Popen(
            self.argv("true", 0, 1, False), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        runner.pid = proc.pid
        self._finish(runner, proc)
        if runner.outcome != "done":
            raise BenchError(f"a single run in {cwd} ended {runner.outcome}: {runner.error[:300]}")
        return runner.ended - runner.started, runner

    def note(self, label: str, wave: Wave) -> None:
        self.problems += [f"{label}: {p}" for p in wave.problems()]


def parse_shim_log(log: Path) -> list[GitCall]:
    if not log.exists():
        return []
    calls = []
    for line in log.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 6:
            ppid, sub, start, end, rc, last = parts
            calls.append(GitCall(int(ppid), sub, float(start), float(end), int(rc), last))
    return calls


# ===================================================================== statistics


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def p90(values: Sequence[float]) -> float:
    """Nearest rank: the smallest value with at least 90 % of the values at or below it."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def fmt(value: float, digits: int = 2) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


# ===================================================================== the experiments


@dataclass
class AttemptRow:
    priorities: str
    order: str
    waves: int
    runners: int
    attempts: list[int]
    latencies: list[float]
    unclaimed: int


def attempts_experiment(bench: Bench, runners: int, issues: int, rounds: int) -> list[AttemptRow]:
    rows = []
    for mixed in (False, True):
        template = bench.work / f"template-attempts-{'mixed' if mixed else 'same'}.git"
        build_remote(template, issue_specs(issues, mixed))
        for spread in (True, False):
            label = f"{'mixed' if mixed else 'same'} priority, {'spread' if spread else 'strict'}"
            attempts: list[int] = []
            latencies: list[float] = []
            unclaimed = 0
            for _ in range(rounds):
                wave = bench.wave(template, runners, spread=spread, name="attempts")
                bench.note(f"attempts ({label})", wave)
                for runner in wave.runners:
                    if runner.outcome == "done" and runner.attempts is not None:
                        attempts.append(runner.attempts)
                    else:
                        unclaimed += 1
                latencies += [r.latency for r in wave.claimed if r.latency is not None]
            rows.append(
                AttemptRow(
                    "mixed" if mixed else "same",
                    f"spread (`--spread-index i --spread-total {runners}`)" if spread else "strict (no spread options)",
                    rounds,
                    runners,
                    attempts,
                    latencies,
                    unclaimed,
                )
            )
            print(f"  attempts: {label}: {sorted(attempts)}", file=sys.stderr, flush=True)
    return rows


@dataclass
class LatencyRow:
    runners: int
    waves: list[Wave]

    @property
    def latencies(self) -> list[float]:
        return [r.latency for w in self.waves for r in w.claimed if r.latency is not None]


def waves_for(n: int) -> int:
    """About 24 claims per N, and at least 2 waves (one wave's claims share its luck), at most 8."""
    return max(2, min(8, math.ceil(24 / n)))


def latency_experiment(bench: Bench, counts: list[int], issues: int, quick: bool) -> list[LatencyRow]:
    """Waves in rounds over every N (1, 8, 16, 32, 1, 8, …), so that a slow minute on the machine
    does not land on a single N."""
    template = bench.work / "template-latency.git"
    build_remote(template, issue_specs(issues, mixed=False))
    rows = {n: LatencyRow(n, []) for n in counts}
    planned = {n: 2 if quick and n == 1 else 1 if quick else waves_for(n) for n in counts}
    for round_no in range(max(planned.values())):
        for n in counts:
            if round_no < planned[n]:
                wave = bench.wave(template, n, spread=True, name=f"latency-{n}")
                bench.note(f"latency N={n}", wave)
                rows[n].waves.append(wave)
    for row in rows.values():
        print(f"  latency N={row.runners}: median {fmt(median(row.latencies))} s", file=sys.stderr, flush=True)
    return list(rows.values())


@dataclass
class TreeRow:
    other_files: int
    variant: str
    times: list[float]


def big_tree_experiment(bench: Bench, sizes: tuple[int, int], runs: int, issues: int, warm_up: bool) -> list[TreeRow]:
    """Alternating single runs: per tree size, a clone at the tip, and a clone the remote ran ahead of."""
    setups: dict[int, dict[str, tuple[Path, Path | None]]] = {}
    for size in sizes:
        template = bench.work / f"template-tree-{size}.git"
        build_remote(template, issue_specs(issues, mixed=False), other_files=size)
        where = bench.scratch(f"tree-{size}")
        at_tip = fresh_copy(template, where / "at-tip.git")
        behind = fresh_copy(template, where / "behind.git")
        setups[size] = {
            "at tip": (clone(at_tip, where / "at-tip"), None),
            "one run behind": (clone(behind, where / "behind"), clone(behind, where / "ahead")),
        }
    times: dict[tuple[int, str], list[float]] = defaultdict(list)
    for round_no in range(0 if warm_up else 1, runs + 1):  # round 0: warm-up of every side, not counted
        order = list(sizes) if round_no % 2 == 0 else list(reversed(sizes))
        for variant in ("at tip", "one run behind"):
            for size in order:
                measured, ahead = setups[size][variant]
                if ahead is not None:
                    bench.single(ahead)  # moves the remote one run ahead of `measured`
                seconds, _ = bench.single(measured)
                if round_no:
                    times[(size, variant)].append(seconds)
    rows = [
        TreeRow(size, variant, times[(size, variant)]) for variant in ("at tip", "one run behind") for size in sizes
    ]
    for row in rows:
        print(f"  tree {row.other_files} ({row.variant}): {fmt(median(row.times), 3)} s", file=sys.stderr)
    bench.tree_setups = setups  # reused by the profile
    return rows


# ===================================================================== profile


@dataclass
class Profile:
    wave: Wave | None
    tree_calls: dict[tuple[int, str], list[GitCall]]


def profile_experiment(bench: Bench, n: int, issues: int, tree_sizes: tuple[int, int] | None) -> Profile:
    template = bench.work / "template-latency.git"
    if not template.exists():
        build_remote(template, issue_specs(issues, mixed=False))
    wave = bench.wave(template, n, spread=True, profile=True, name=f"profile-{n}")
    bench.note(f"profile N={n}", wave)
    tree_calls: dict[tuple[int, str], list[GitCall]] = {}
    setups = bench.tree_setups
    if tree_sizes and setups:
        for variant in ("at tip", "one run behind"):
            for size in tree_sizes:
                measured, ahead = setups[size][variant]
                if ahead is not None:
                    bench.single(ahead)
                log = bench.scratch("profile-tree") / "git.log"
                bench.single(measured, profile_log=log)
                tree_calls[(size, variant)] = parse_shim_log(log)
    return Profile(wave, tree_calls)


def profile_tables(profile: Profile) -> list[str]:
    lines: list[str] = []
    wave = profile.wave
    if wave is not None and wave.claimed:
        n = len(wave.runners)
        by_pid: dict[int, list[GitCall]] = defaultdict(list)
        for call in wave.calls:
            by_pid[call.ppid].append(call)
        before: dict[str, list[float]] = defaultdict(list)
        counts: dict[str, list[int]] = defaultdict(list)
        startup, outside, latencies = [], [], []
        claimed = wave.claimed
        for runner in claimed:
            assert runner.latency is not None
            mark = runner.started + runner.latency
            calls = sorted((c for c in by_pid[runner.pid] if c.start < mark), key=lambda c: c.start)
            latencies.append(runner.latency)
            startup.append((calls[0].start if calls else mark) - runner.started)
            per_kind: dict[str, float] = defaultdict(float)
            per_count: Counter[str] = Counter()
            for call in calls:
                per_kind[call.kind] += call.seconds
                per_count[call.kind] += 1
            kinds = {c.kind for c in wave.calls}
            for kind in kinds:
                before[kind].append(per_kind.get(kind, 0.0))
                counts[kind].append(per_count.get(kind, 0))
            outside.append(runner.latency - startup[-1] - sum(per_kind.values()))
        total = median(latencies)
        lines += [
            f"### Where the claim latency goes ({n} runners, git shim on; median over {len(claimed)} claims)",
            "",
            f"Median latency in this wave: {fmt(total)} s (the shim adds a bash start to every git call). "
            "Each row is a median over the claims, so the shares need not add up to 100 %. A git call counts "
            "here when it starts before the command does: the lock, the re-check after it, the first try at "
            "recording the claim on the branch (read-tree … push (branch)), and background retries that overlap.",
            "",
            "| step before the command starts | calls per claim (median) | seconds per claim (median) | share |",
            "|---|---:|---:|---:|",
            f"| interpreter start + imports (process start → first git call) | – | {fmt(median(startup))} "
            f"| {median(startup) / total:.0%} |",
        ]
        usual = [k for k in before if statistics.fmean(counts[k]) >= 0.5]  # the others: some claims only
        rare = [sum(before[k][i] for k in before if k not in usual) for i in range(len(claimed))]
        rare_calls = [sum(counts[k][i] for k in before if k not in usual) for i in range(len(claimed))]
        for kind in sorted(usual, key=lambda k: -median(before[k])):
            lines.append(
                f"| git {kind} | {median(counts[kind]):g} | {fmt(median(before[kind]), 3)} "
                f"| {median(before[kind]) / total:.0%} |"
            )
        if any(rare_calls):
            names = ", ".join(sorted(k for k in before if k not in usual and max(counts[k]) > 0))
            lines.append(
                f"| other git calls, in some claims only ({names}) | {median(rare_calls):g} | {fmt(median(rare), 3)} "
                f"| {median(rare) / total:.0%} |"
            )
        lines += [
            f"| python between git calls (selection, extract, scheduling) | – | {fmt(median(outside))} "
            f"| {median(outside) / total:.0%} |",
            "",
        ]
        runner_pids = {r.pid for r in wave.runners}
        calls = [c for c in wave.calls if c.ppid in runner_pids]
        kinds = Counter(c.kind for c in calls)
        failed = Counter(c.kind for c in calls if c.rc != 0)
        seconds: dict[str, float] = defaultdict(float)
        for call in calls:
            seconds[call.kind] += call.seconds
        lines += [
            f"### All git calls of that wave ({n} runners, whole runs)",
            "",
            "| git call | calls | failed (lost races) | per runner | median ms | total s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for kind, count in kinds.most_common():
            durations = [c.seconds for c in calls if c.kind == kind]
            lines.append(
                f"| {kind} | {count} | {failed.get(kind, 0)} | {count / n:.1f} | {median(durations) * 1000:.0f} "
                f"| {seconds[kind]:.1f} |"
            )
        branch = kinds.get("push (branch)", 0)
        lines += [
            "",
            f"Branch push attempts: {branch} for {wave.commits} state commits "
            f"({branch - wave.commits} rejected as non-fast-forward and replayed). Wall time {fmt(wave.wall)} s.",
            "",
        ]
    if profile.tree_calls:
        sizes = sorted({size for size, _ in profile.tree_calls})
        variants = sorted({v for _, v in profile.tree_calls}, reverse=True)
        kinds = sorted({c.kind for calls in profile.tree_calls.values() for c in calls})
        header = " | ".join(f"{size} files, {variant}" for variant in variants for size in sizes)
        lines += [
            "### Git time of one run by tree size (ms, git shim on)",
            "",
            f"| git call | {header} |",
            "|---|" + "---:|" * (len(sizes) * len(variants)),
        ]
        for kind in kinds:
            cells = []
            for variant in variants:
                for size in sizes:
                    calls = [c for c in profile.tree_calls.get((size, variant), []) if c.kind == kind]
                    cells.append(f"{sum(c.seconds for c in calls) * 1000:.0f} ({len(calls)})" if calls else "–")
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
        totals = [
            f"**{sum(c.seconds for c in profile.tree_calls.get((size, v), [])) * 1000:.0f}**"
            for v in variants
            for size in sizes
        ]
        lines += ["| **all git** | " + " | ".join(totals) + " |", "", "(calls in parentheses)", ""]
    return lines


# ===================================================================== report


def attempts_table(rows: list[AttemptRow], issues: int) -> list[str]:
    runners = rows[0].runners if rows else 0
    lines = [
        f"## Lock push attempts per successful claim ({runners} runners, {issues} ready issues)",
        "",
        "| priorities | order | waves | claims | runners without a claim | median | mean | max "
        "| distribution (attempts×claims) | median latency (s) | target median ≤ 1.5 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for row in rows:
        dist = ", ".join(f"{a}×{c}" for a, c in sorted(Counter(row.attempts).items()))
        spread = row.order.startswith("spread")
        verdict = ("met" if median(row.attempts) <= ATTEMPTS_TARGET else "**missed**") if spread else "(reference)"
        mean = statistics.fmean(row.attempts) if row.attempts else math.nan
        lines.append(
            f"| {row.priorities} | {row.order} | {row.waves} | {len(row.attempts)} | {row.unclaimed} "
            f"| {fmt(median(row.attempts), 1)} "
            f"| {fmt(mean)} | {max(row.attempts, default=0)} | {dist} | {fmt(median(row.latencies))} | {verdict} |"
        )
    mixed = ", ".join(f"{n} {p}" for p, n in MIXED_PRIORITIES)
    lines += ["", f"Mixed priorities per 40 issues: {mixed}.", ""]
    return lines


def growth_verdict(exponent: float) -> str:
    if math.isnan(exponent) or exponent <= LINEAR_EXPONENT:
        return "at most linear"
    if exponent <= NEAR_LINEAR_EXPONENT:
        return "slightly super-linear"
    return "**super-linear**"


def latency_table(rows: list[LatencyRow], issues: int, sleep: float) -> tuple[list[str], str]:
    lines = [
        f"## Claim latency: process start → command start ({issues} ready issues, spread options on)",
        "",
        "| runners | waves | claims | median (s) | p90 (s) | max (s) | median ÷ median(1) | median ÷ N (s) "
        "| growth exponent vs previous N | wall, all finished (s) | state commits | problems |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = next((median(r.latencies) for r in rows if r.runners == 1), math.nan)
    previous: LatencyRow | None = None
    for row in rows:
        lat = row.latencies
        med = median(lat)
        exponent = math.nan
        if previous is not None and previous.latencies and lat and row.runners > previous.runners:
            exponent = math.log(med / median(previous.latencies)) / math.log(row.runners / previous.runners)
        walls = ", ".join(fmt(w.wall, 1) for w in row.waves)
        commits = ", ".join(str(w.commits) for w in row.waves)
        problems = sum(len(w.problems()) for w in row.waves)
        lines.append(
            f"| {row.runners} | {len(row.waves)} | {len(lat)} | {fmt(med)} | {fmt(p90(lat))} "
            f"| {fmt(max(lat, default=math.nan))} "
            f"| {fmt(med / base)} | {fmt(med / row.runners, 3)} | {fmt(exponent)} | {walls} | {commits} | {problems} |"
        )
        previous = row
    measured = [r for r in rows if r.latencies]
    overall = math.nan
    if len(measured) > 1 and measured[-1].runners > measured[0].runners:
        first, last = measured[0], measured[-1]
        overall = math.log(median(last.latencies) / median(first.latencies)) / math.log(last.runners / first.runners)
    verdict = growth_verdict(overall)
    span = f"{measured[0].runners} → {measured[-1].runners} runners" if len(measured) > 1 else "–"
    lines += [
        "",
        f"Growth: {verdict} (exponent over {span}: {fmt(overall)}; 1 = linear, 2 = quadratic; up to "
        f"{LINEAR_EXPONENT} counts as linear, up to {NEAR_LINEAR_EXPONENT} as slightly super-linear; a fixed "
        "cost per run pulls it below 1, so a linear cost shows as ≤ 1; the local exponents between "
        "neighbouring N are noisier). "
        f"Wall and commits are per wave; each runner's command sleeps {sleep:g} s; "
        "2 state commits per claim (claim, settle) is the expected count.",
        "",
    ]
    return lines, verdict


def tree_table(rows: list[TreeRow]) -> tuple[list[str], bool]:
    lines = [
        "## One remote transaction vs. the size of the rest of the tree (`once --command true`, whole process)",
        "",
        "| clone | other files | runs | median (s) | min (s) | max (s) | ratio to 0 files |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    flat = True
    for row in rows:
        base = next(r for r in rows if r.variant == row.variant and r.other_files == min(x.other_files for x in rows))
        ratio = median(row.times) / median(base.times)
        flat &= ratio <= BIG_TREE_TARGET
        lines.append(
            f"| {row.variant} | {row.other_files} | {len(row.times)} | {fmt(median(row.times), 3)} "
            f"| {fmt(min(row.times), 3)} | {fmt(max(row.times), 3)} | {ratio:.2f}x |"
        )
    verdict = "does not grow with the tree" if flat else "**grows with the tree**"
    lines += [
        "",
        f"Verdict: {verdict} (every ratio ≤ {BIG_TREE_TARGET}). The clone is made before the timed run; "
        "'one run behind': another clone completed an issue just before, so the transaction fetches.",
        "",
    ]
    return lines, flat


def snapshot_code(work: Path, rev: str | None) -> tuple[Path, str]:
    """A frozen copy of the package to measure: the working tree now, or `rev` as committed."""
    target = work / "code"
    package = Path("src") / "jit_dispatch"
    if rev is None:
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))
        try:
            head = git("-C", str(ROOT), "rev-parse", "--short", "HEAD").strip()
            dirty = git("-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", "src").strip()
        except BenchError:
            return target / "src", "working tree (not a git checkout?)"
        return target / "src", f"working tree at start: HEAD {head}" + (
            ", src/ with uncommitted changes" if dirty else ""
        )
    sha = git("-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}").strip()
    archive = subprocess.run([GIT, "-C", str(ROOT), "archive", "--format=tar", sha, str(package)], capture_output=True)
    if archive.returncode != 0:
        raise BenchError(f"--rev {rev}: cannot archive {package}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target / "src", f"{rev} as committed ({sha[:10]})"


# ===================================================================== main


def parse_counts(text: str) -> list[int]:
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError("runner counts must be at least 1")
    return counts


def default_scratch() -> Path | None:
    """tmpfs when there is one: this VM's disk adds seconds of I/O wait to a 32-runner wave."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: small N, few runs; writes remote-quick.md")
    parser.add_argument("--runners", type=parse_counts, help="runner counts of the latency part (default 1,8,16,32)")
    parser.add_argument("--attempt-runners", type=int, help="runners of the attempts part (default 8; --quick: 3)")
    parser.add_argument("--issues", type=int, help="ready issues of the attempts part (default 40; --quick: 9)")
    parser.add_argument("--rounds", type=int, help="waves per attempts configuration (default 3; --quick: 1)")
    parser.add_argument("--other-files", type=int, help="files outside .jit/ of the big tree (default 20000)")
    parser.add_argument("--runs", type=int, help="measured runs per side of the big-tree part (default 13)")
    parser.add_argument("--profile-runners", type=int, help="runners of the profiled wave (default: min(16, max N))")
    parser.add_argument(
        "--profile", action=argparse.BooleanOptionalAction, help="git-shim profile (default: on, off with --quick)"
    )
    parser.add_argument("--rev", help="measure the package as committed at this git revision (default: working tree)")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results", help="where the report goes")
    parser.add_argument(
        "--scratch-dir", type=Path, default=default_scratch(), help="where remotes and clones go (default: /dev/shm)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (remotes, clones, git logs)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.runners = args.runners or ([1, 3] if quick else [1, 8, 16, 32])
    args.attempt_runners = args.attempt_runners or (3 if quick else 8)
    args.issues = args.issues or (9 if quick else 40)
    args.rounds = args.rounds or (1 if quick else 3)
    args.other_files = args.other_files if args.other_files is not None else (2000 if quick else 20000)
    args.runs = args.runs or (1 if quick else 13)
    args.profile_runners = args.profile_runners or min(16, max(args.runners))
    args.profile = (not quick) if args.profile is None else args.profile
    if args.issues < args.attempt_runners:
        parser.error("--issues must be at least --attempt-runners")
    return args


def timed(label: str, step: Callable[[], object]) -> object:
    start = time.monotonic()
    print(f"{label} …", file=sys.stderr, flush=True)
    value = step()
    print(f"{label}: {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    load_at_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="jit-bench-remote-", dir=args.scratch_dir))
    try:
        code, code_label = snapshot_code(work, args.rev)
        bench = Bench(work, code, quick=args.quick)
        latency_issues = max(40, 2 * max(args.runners))
        attempts = timed("attempts", lambda: attempts_experiment(bench, args.attempt_runners, args.issues, args.rounds))
        latency = timed("latency", lambda: latency_experiment(bench, args.runners, latency_issues, args.quick))
        sizes = (0, args.other_files)
        tree = timed("big tree", lambda: big_tree_experiment(bench, sizes, args.runs, 50, not args.quick))
        profile = None
        if args.profile:
            profile = timed("profile", lambda: profile_experiment(bench, args.profile_runners, latency_issues, sizes))
    finally:
        if args.keep:
            print(f"scratch kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    assert isinstance(attempts, list) and isinstance(latency, list) and isinstance(tree, list)
    lat_lines, growth = latency_table(latency, latency_issues, bench.sleep)
    tree_lines, flat = tree_table(tree)
    spread_rows = [r for r in attempts if r.order.startswith("spread")]
    met = all(median(r.attempts) <= ATTEMPTS_TARGET for r in spread_rows)
    load = os.getloadavg()
    lines = [
        f"# Remote mode benchmark{' (quick)' if args.quick else ''}",
        "",
        f"- command: `{' '.join([Path(sys.executable).name, 'bench/remote.py', *(argv or sys.argv[1:])])}`",
        f"- code: {code_label}",
        f"- machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
        f"{git('--version').strip()}; load average {load_at_start:.1f} at start, {load[0]:.1f} at end",
        f"- scratch (remotes, clones): {args.scratch_dir or tempfile.gettempdir()}",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; run took {time.monotonic() - started:.0f} s",
        "- remote: a local bare repository (`file://`), every runner in its own `git clone --depth 1`",
        "",
        "Summary: "
        f"lock attempts median ≤ {ATTEMPTS_TARGET} with spread options: {'met' if met else '**missed**'}; "
        f"claim latency growth: {growth}; "
        f"big tree: {'flat' if flat else '**grows**'}; "
        f"correctness checks: {'all passed' if not bench.problems else f'**{len(bench.problems)} problem(s)**'}.",
        "",
        *attempts_table(attempts, args.issues),
        *lat_lines,
        *tree_lines,
    ]
    if profile is not None:
        lines += ["## Profile", "", *profile_tables(profile)]
    if bench.problems:
        lines += ["## Problems seen", "", *(f"- {p}" for p in bench.problems), ""]
    report = "\n".join(lines).rstrip() + "\n"
    print(report)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / ("remote-quick.md" if args.quick else "remote.md")).write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench/remote.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
