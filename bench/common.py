"""What bench/run.py (local mode) and bench/remote.py (remote mode) share.

Statistics (median, p90, number formatting), the machine and its load, the frozen copy of the
package the measured processes import (`--rev`), the environment they run in (bytecode cache),
Markdown table rendering and timing helpers.

Importing this module first also makes `jit_dispatch` importable by a python without the
package installed (the source tree goes on sys.path).
"""

from __future__ import annotations

import io
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIT = shutil.which("git") or "git"

try:
    import jit_dispatch  # noqa: F401  (only whether it imports)
except ImportError:  # run by a python without the package installed: use the source tree
    sys.path.insert(0, str(ROOT / "src"))


class BenchError(Exception):
    pass


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


# ===================================================================== machine and load


def machine() -> dict[str, str]:
    """The machine as the reports describe it."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = str(len(os.sched_getaffinity(0)))
    except AttributeError:
        nproc = str(os.cpu_count())
    return {
        "nproc": nproc,
        "cpu": cpu or platform.processor() or "?",
        "os": f"{platform.system()} {platform.release()}",
        "platform": platform.platform(),
        "cpu_count": str(os.cpu_count()),
        "python": platform.python_version(),
    }


def load_average(digits: int = 2, count: int = 3) -> str:
    """The 1, 5 and 15 minute load averages (the first `count` of them)."""
    return " ".join(f"{x:.{digits}f}" for x in os.getloadavg()[:count])


# ===================================================================== the code measured


def git(*args: str, cwd: Path | None = None, stdin: bytes | None = None) -> str:
    """`git ARGS`' stdout; BenchError if it fails."""
    proc = subprocess.run([GIT, *args], cwd=cwd, input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"git {' '.join(args[:3])} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode(errors="replace")


def _git(*args: str) -> str:
    return git("-C", str(ROOT), *args).strip()


def snapshot_code(work: Path, rev: str | None) -> tuple[Path, str]:
    """A frozen copy of the package to measure: the working tree now, or `rev` as committed.

    Others may edit src/ while a run takes minutes; every measured process imports this copy
    (it goes first on PYTHONPATH, ahead of the editable install's path). Returns the directory
    to put on PYTHONPATH and a description of the code.
    """
    target = work / "code"
    package = Path("src") / "jit_dispatch"
    if rev is None:
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))
        try:
            head = _git("rev-parse", "--short", "HEAD")
            dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "src")
        except (OSError, BenchError):
            return target / "src", "working tree (not a git checkout?)"
        return target / "src", f"working tree at start: HEAD {head}" + (
            ", src/ with uncommitted changes" if dirty else ""
        )
    try:
        sha = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
        archive = subprocess.run(
            [GIT, "-C", str(ROOT), "archive", "--format=tar", sha, str(package)], capture_output=True, check=True
        ).stdout
    except (OSError, BenchError, subprocess.CalledProcessError) as exc:
        raise BenchError(f"--rev {rev}: not a commit of {ROOT} ({exc})") from None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        try:
            tar.extractall(target, filter="data")
        except TypeError:  # Python < 3.11.4: no extraction filters (our own repository's archive)
            tar.extractall(target)
    return target / "src", f"{rev} as committed ({sha[:10]})"


# ===================================================================== environment


def scrubbed_env() -> dict[str, str]:
    """The caller's environment without its GitHub Actions, runner or jit settings.

    The synthetic stores require real-data gates (`cargo test`, …) that cannot run here: these
    benchmarks measure the dispatch itself with gates left to jit; bench/gates.py measures gates.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "JIT_", "RUNNER_"))}
    env["JIT_DISPATCH_GATES"] = "skip"
    return env


def clean_env(pycache: Path | None) -> dict[str, str]:
    """No GitHub Actions or jit settings of the caller leak into the measured runs.

    With `pycache`, bytecode is cached there (src/ stays untouched) even when the caller set
    PYTHONDONTWRITEBYTECODE: an installed package has its .pyc files, so users do not pay for
    compiling the dispatcher's modules on every run.
    """
    env = scrubbed_env()
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def bytecode_note(env: dict[str, str]) -> str:
    if env.get("PYTHONPYCACHEPREFIX") and not env.get("PYTHONDONTWRITEBYTECODE"):
        return f"cached in {env['PYTHONPYCACHEPREFIX']} (as an installed package has its .pyc files)"
    if env.get("PYTHONDONTWRITEBYTECODE"):
        return "as the environment has it: PYTHONDONTWRITEBYTECODE=1, uncached modules are compiled on every run"
    return "as the environment has it"


def prepend_path(env: dict[str, str], key: str, first: str) -> None:
    """`first` ahead of what `env[key]` holds (a PATH-like variable)."""
    env[key] = os.pathsep.join(p for p in (first, env.get(key)) if p)


# ===================================================================== Markdown


def table_head(columns: Sequence[str], align: str) -> list[str]:
    """A Markdown table's header and rule; `align` has one letter per column: `l`eft or `r`ight."""
    if len(columns) != len(align):
        raise ValueError(f"{len(columns)} columns, {len(align)} alignments")
    rule = "".join("---:|" if a == "r" else "---|" for a in align)
    return [table_row(*columns), "|" + rule]


def table_row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


# ===================================================================== timing


@dataclass
class Run:
    seconds: float
    stdout: str
    cpu_seconds: float = 0.0  # user + system time of the process and the children it waited for


def run_timed(
    argv: Sequence[str],
    env: dict[str, str],
    expect: Callable[[Run], str | None] | None = None,
    ok_codes: tuple[int, ...] = (0,),
) -> Run:
    """Run `argv` to its end, timed as a whole process; BenchError on an unexpected exit code or output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(list(argv), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    run = Run(seconds, proc.stdout, cpu)
    problem = f"exit code {proc.returncode}" if proc.returncode not in ok_codes else (expect(run) if expect else None)
    if problem:
        shown = " ".join(argv)
        raise BenchError(f"{shown}: {problem}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}")
    return run


def alternate(
    a: Callable[[], float], b: Callable[[], float], runs: int, label: str = ""
) -> tuple[list[float], list[float]]:
    """One warm-up of each, then A B A B …; the raw times of each side."""
    a()
    b()
    times_a: list[float] = []
    times_b: list[float] = []
    for i in range(runs):
        times_a.append(a())
        times_b.append(b())
        if label:
            print(f"  {label} {i + 1}/{runs}: {times_a[-1]:.3f}s / {times_b[-1]:.3f}s", flush=True)
    return times_a, times_b


def timed(label: str, step: Callable[[], object]) -> object:
    """Run one stage of a benchmark, reporting its start and duration on stderr."""
    start = time.monotonic()
    print(f"{label} …", file=sys.stderr, flush=True)
    value = step()
    print(f"{label}: {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
    return value
