"""The measurements of bench/run.py: whole `jit-dispatch` processes against their floors.

Scale (dispatch vs a json-parsing floor), startup, overhead on the real store, peak RSS and a
cProfile of one dispatch. Each run that writes a store does so on a `WorkingCopy` of a cached one.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import ROOT, BenchError, Run, alternate, run_timed
from stores import Fixture

SLEEP_SECONDS = 0.5

# The floor: read index.json, json-parse every issue file it lists, keep nothing (keeping 50k parsed
# issues alive doubles the time through allocation and the cyclic GC; the dispatcher keeps no such list).
FLOOR_CODE = (
    "import collections,json,os,sys;d=sys.argv[1];"
    "collections.deque((json.loads(open(os.path.join(d,'issues',i+'.json'),'rb').read())"
    " for i in json.load(open(os.path.join(d,'index.json')))['all_ids']),maxlen=0)"
)

OUTCOME_LINE = re.compile(r"^jit-dispatch: (done|gated|released|parked|lost|idle|error)\b", re.MULTILINE)


class WorkingCopy:
    """A copy of a cached store, put back to the cached bytes after every run that writes it.

    Every jit write renames a whole file into place (new inode) or appends to events.jsonl, so
    comparing (inode, size, mtime) with the state after the copy finds each changed file cheaply.
    """

    def __init__(self, source: Path, target: Path) -> None:
        self.source = source
        self.root = target
        shutil.copytree(source, target, copy_function=shutil.copyfile)
        self.events_size = (target / "events.jsonl").stat().st_size
        self.manifest = {sub: self._scan(sub) for sub in ("", "issues")}

    def _scan(self, sub: str) -> dict[str, tuple[int, int, int, bool]]:
        found = {}
        with os.scandir(self.root / sub) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                found[entry.name] = (entry.inode(), st.st_size, st.st_mtime_ns, entry.is_dir(follow_symlinks=False))
        return found

    def restore(self) -> int:
        """Undo every change since the copy; the number of entries put back."""
        changed = 0
        for sub, before in self.manifest.items():
            now = self._scan(sub)
            for name, sig in now.items():
                path = self.root / sub / name
                if sig == before.get(name) or (sub == "" and name == "issues"):
                    continue
                changed += 1
                if name not in before:  # lock files, temp files
                    shutil.rmtree(path) if sig[3] else path.unlink()
                elif sub == "" and name == "events.jsonl" and sig[0] == before[name][0]:
                    os.truncate(path, self.events_size)  # appended in place
                else:
                    tmp = path.with_name(path.name + ".bench-restore")
                    shutil.copyfile(self.source / sub / name, tmp)
                    os.replace(tmp, path)
            for name in before.keys() - now.keys():
                changed += 1
                shutil.copyfile(self.source / sub / name, self.root / sub / name)
            if changed:
                self.manifest[sub] = self._scan(sub)
        return changed


def dispatcher_argv(override: str | None) -> list[str]:
    """The console script users run (prefer the project's venv), else `python -m jit_dispatch`."""
    if override:
        return [override]
    for candidate in (ROOT / ".venv" / "bin" / "jit-dispatch", Path(sys.executable).parent / "jit-dispatch"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    return [sys.executable, "-m", "jit_dispatch"]


def interpreter_of(argv: list[str]) -> str:
    """The python the dispatcher runs on (the console script's shebang), for a same-interpreter floor."""
    if len(argv) > 1:
        return argv[0]
    with open(argv[0], "rb") as script:
        first = script.readline().decode(errors="replace").strip()
    if first.startswith("#!") and "python" in first:
        words = first[2:].split()
        return words[-1] if words[0].endswith("/env") else words[0]
    return sys.executable


def done_check(target: str) -> Callable[[Run], str | None]:
    """Each measured dispatch must do the same work: claim the target and settle `done`."""
    wanted = f"jit-dispatch: done {target[:8]}"

    def check(run: Run) -> str | None:
        return None if wanted in run.stdout else f"expected {wanted!r} in the output"

    return check


@dataclass
class ScaleRow:
    size: int
    stats: dict
    runs: int
    dispatch: list[float]
    floor: list[float]
    dispatch_cpu: list[float]  # user + system seconds: far less sensitive than wall time to other load
    floor_cpu: list[float]


def bench_scale(fixture: Fixture, work: Path, runs: int, cmd: list[str], python: str, env: dict) -> ScaleRow:
    copy = WorkingCopy(fixture.root, work / f"scale-{fixture.size}-{fixture.shape}" / ".jit")
    store = str(copy.root)
    check = done_check(fixture.target)
    cpu_d: list[float] = []
    cpu_f: list[float] = []

    def dispatch() -> float:
        run = run_timed([*cmd, "once", "--agent", "bench", "--command", "true", "--jit-dir", store], env, check)
        if copy.restore() < 2:
            raise BenchError("the dispatch changed fewer files than a claim and a completion write")
        cpu_d.append(run.cpu_seconds)
        return run.seconds

    def floor() -> float:
        run = run_timed([python, "-c", FLOOR_CODE, store], env)
        cpu_f.append(run.cpu_seconds)
        return run.seconds

    label = f"{fixture.size} {fixture.shape} issues: dispatch / floor"
    times_d, times_f = alternate(dispatch, floor, runs, label=label)
    shutil.rmtree(copy.root.parent)
    return ScaleRow(fixture.size, fixture.stats, runs, times_d, times_f, cpu_d[1:], cpu_f[1:])  # no warm-up


@dataclass
class OverheadResult:
    runs: int
    dispatch: list[float]
    shell: list[float]
    outcome: str


def bench_overhead(seed: Path, work: Path, runs: int, cmd: list[str], env: dict) -> OverheadResult:
    sleep = f"sleep {SLEEP_SECONDS:g}"
    outcomes: Counter[str] = Counter()

    def dispatch() -> float:
        target = work / "seed" / ".jit"
        shutil.rmtree(target.parent, ignore_errors=True)
        shutil.copytree(seed, target, copy_function=shutil.copyfile)  # plain copies: writable
        argv = [*cmd, "once", "--agent", "bench", "--command", sleep, "--jit-dir", str(target)]
        run = run_timed(argv, env, ok_codes=(0, 1))  # 1: the command "failed"; still a whole dispatch, counted
        found = OUTCOME_LINE.findall(run.stdout)
        outcome = found[-1] if found else "?"
        if outcome not in ("done", "gated"):
            reason = re.search(r"^\s*reason: (.*)$", run.stdout, re.MULTILINE)
            outcome += f" ({reason.group(1).strip()})" if reason else ""
        outcomes[outcome] += 1
        return run.seconds

    def shell() -> float:
        return run_timed(["bash", "-c", sleep], env).seconds

    times_d, times_s = alternate(dispatch, shell, runs, label="real store: dispatch / bash")
    shutil.rmtree(work / "seed", ignore_errors=True)
    shown = ", ".join(f"{name} ×{count}" for name, count in outcomes.most_common())
    return OverheadResult(runs, times_d, times_s, f"{shown} (warm-up included)")


@dataclass
class RssResult:
    label: str
    output_bytes: int
    max_rss_kb: int
    seconds: float


# A child's ru_maxrss also counts the process it was forked from: at exec, Linux keeps the
# high-water RSS of the image being replaced (a copy of the forking parent). So the bench, itself
# tens of MB by now, does not fork the dispatcher; this small helper (`python -I -S`, ~5 MB) does,
# and reports os.wait4's ru_maxrss: the dispatcher's own peak, or its children's if larger.
RSS_HELPER = """
import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)} {time.perf_counter() - started}")
"""


def peak_rss(argv: list[str], env: dict, scratch: Path) -> tuple[int, float]:
    """ru_maxrss (KiB on Linux) of `argv` and its waited-for descendants, and its wall time."""
    result = scratch / "rss-result.txt"
    with open(scratch / "rss-stderr.txt", "w+b") as errors:
        helper = [sys.executable, "-I", "-S", "-c", RSS_HELPER, str(result), *argv]
        subprocess.run(helper, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, check=True)
        max_rss, code, seconds = result.read_text().split()
        if int(code):
            errors.seek(0)
            raise BenchError(f"{' '.join(argv)}: exit code {code}: {errors.read()[-2000:]!r}")
    return int(max_rss), float(seconds)


def bench_rss(fixture: Fixture, work: Path, cmd: list[str], env: dict, output_bytes: int, runs: int) -> list[RssResult]:
    copy = WorkingCopy(fixture.root, work / "rss" / ".jit")
    big = f'yes "some line of output 0123456789" | head -c {output_bytes}'
    once = [*cmd, "once", "--agent", "bench", "--jit-dir", str(copy.root), "--command"]
    cases = [
        ("the measuring helper alone (execs `true`): the floor of this measure", ["true"], 0),
        ("tiny output (`true`)", [*once, "true"], 0),
        (f"{output_bytes / 1e6:g} MB of output", [*once, big], output_bytes),
    ]
    results = []
    for label, argv, size in cases:
        samples = []
        for _ in range(runs):
            samples.append(peak_rss(argv, env, work))
            copy.restore()
        rss = max(s[0] for s in samples)
        results.append(RssResult(label, size, rss, statistics.median(s[1] for s in samples)))
    shutil.rmtree(copy.root.parent)
    return results


def bench_startup(cmd: list[str], python: str, env: dict, runs: int) -> tuple[list[float], list[float]]:
    """`jit-dispatch --version` (imports the whole CLI, touches no store) against `python -c 'import json'`."""
    return alternate(
        lambda: run_timed([*cmd, "--version"], env).seconds,
        lambda: run_timed([python, "-c", "import json"], env).seconds,
        runs,
    )


def profile_dispatch(fixture: Fixture, work: Path, python: str, env: dict, results: Path) -> str:
    """cProfile of one `once` on the store (after a warm run); the top functions by cumulative time."""
    import pstats  # only here: most runs do not profile

    copy = WorkingCopy(fixture.root, work / "profile" / ".jit")
    out = results / f"profile-{fixture.size}.pstats"
    argv = [python, "-m", "cProfile", "-o", str(out), "-m", "jit_dispatch", "once", "--agent", "bench"]
    argv += ["--command", "true", "--jit-dir", str(copy.root)]
    for _ in range(2):
        run_timed(argv, env, done_check(fixture.target))
        copy.restore()
    shutil.rmtree(copy.root.parent)
    text = io.StringIO()
    stats = pstats.Stats(str(out), stream=text)
    stats.sort_stats("cumulative").print_stats("jit_dispatch", 20)  # the package's own functions
    stats.sort_stats("tottime").print_stats(15)  # where the time is actually spent
    return "\n".join(line for line in text.getvalue().splitlines() if not line.startswith(("   Ordered", "   List")))
