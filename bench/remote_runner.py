"""Remotes, clones and runners of bench/remote.py: waves of real `jit-dispatch once --sync git` processes.

A bare remote seeded with a `.jit/` store (`build_remote`), fresh copies and shallow clones of it,
and `Bench`, which starts a wave of runners back to back and reads what they did: their JSON
output, when their commands started (mark files), and every git call when the git shim is on.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from common import GIT, BenchError, git, prepend_path, scrubbed_env  # first: jit_dispatch from the source tree
from jit_dispatch.domain.transitions import format_timestamp
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

SLEEP_SECONDS = 1.0
MIXED_PRIORITIES = (("critical", 4), ("high", 8), ("normal", 16), ("low", 12))  # per 40 issues
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


# ===================================================================== remotes and clones


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


def refs_left(bare: Path) -> list[str]:
    """Every jit-dispatch ref on the remote (locks and unfolded results): none once a wave is over."""
    return git("-C", str(bare), "for-each-ref", "--format=%(refname)", "refs/jit-dispatch/").split()


def lock_refs(bare: Path) -> int:
    return len(refs_left(bare))


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
        if done and not 1 <= self.commits <= 2 * done:  # a fold carries several claims and results
            found.append(f"{self.commits} state commits for {done} done issues (at most 2 each expected)")
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
        env = scrubbed_env()
        prepend_path(env, "PYTHONPATH", str(self.code))
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
