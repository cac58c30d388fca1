#!/usr/bin/env python3
"""Benchmark `jit-dispatch once` as users run it: a whole process, against a floor.

    .venv/bin/python bench/run.py                        # full run, ~4 min on 2 cores → bench/results/latest.md
    .venv/bin/python bench/run.py --quick                # smoke run, seconds → bench/results/quick.md
    .venv/bin/python bench/run.py --sizes 1000,10000 --runs 9 --profile 10000
    .venv/bin/python bench/run.py --rev HEAD~3             # the package as committed at a revision
    .venv/bin/python bench/run.py --shapes steady --sizes 10000,50000   # only the steady-state stores

What it measures (every figure is a median of alternating runs, after one warm-up of each side):

1. Scale. Synthetic stores of 1k/10k/50k issues shaped like the real data (jit-format.md §12):
   ~2 KB per issue, 3-5 labels, 2-4 gates with their status, documents, a third with 1-3
   dependencies, mostly `done` with a few percent `ready`/`backlog`; written in jit's exact
   bytes (`dumps_pretty(ordered_issue(...))`). `jit-dispatch once --command true` claims and
   completes the top issue (outcome `done`, which also promotes the backlog issues it unblocks),
   against the floor: `python -c` that json-parses every issue file listed in index.json, same
   interpreter.
   Two store shapes (bench/stores.py): `real`, the real stores' state mix (mostly done), and
   `steady`, a third ready or backlog (backlog only while a dependency is unresolved).
   Stores are cached under bench/results/stores/ (keyed by size, shape and generator version);
   each measured dispatch runs on a working copy that is put back to the cached bytes afterwards.
2. Overhead on the real 175-issue store: `once --command 'sleep 0.5'` minus `bash -c 'sleep 0.5'`.
3. Peak RSS (`os.wait4` ru_maxrss: the dispatcher and its children) while the command prints
   200 MB, against the same run with a tiny output.

The measured processes import a frozen copy of the package (the working tree at start, or
`--rev`), so edits made to src/ during a run do not mix into it. Bytecode is cached under the
results dir even if PYTHONDONTWRITEBYTECODE is set (an installed package has its .pyc files;
`--no-pyc-cache` measures without). Page caches cannot be dropped without root, so all figures
are warm-cache figures; the load average is recorded, as other work on the machine skews them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from common import (
    ROOT,
    BenchError,
    bytecode_note,
    clean_env,
    load_average,
    machine,
    median,
    prepend_path,
    run_timed,
    snapshot_code,
    table_head,
)
from local_measure import (
    SLEEP_SECONDS,
    OverheadResult,
    RssResult,
    ScaleRow,
    bench_overhead,
    bench_rss,
    bench_scale,
    bench_startup,
    dispatcher_argv,
    interpreter_of,
    profile_dispatch,
)
from stores import SHAPES, cached_store

DEFAULT_SIZES = (1000, 10000, 50000)
SEED_STORE = ROOT / "tests" / "fixtures" / "seed-era" / ".jit"  # derived from a real jit store
BIG_OUTPUT_BYTES = 200_000_000
QUICK_OUTPUT_BYTES = 20_000_000
OVERHEAD_TARGET_SECONDS = 0.3


def render(
    *,
    argv: list[str],
    cmd: list[str],
    python: str,
    python_version: str,
    scale: list[ScaleRow],
    startup: tuple[list[float], list[float]] | None,
    overhead: OverheadResult | None,
    overhead_note: str,
    rss: list[RssResult],
    rss_store: int,
    profile: str,
    bytecode: str,
    load: tuple[str, str],
    code: str,
    elapsed: float,
) -> str:
    info = machine()
    lines = [
        "# jit-dispatch benchmark",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; code: {code}",
        f"- machine: {info['nproc']} CPUs (nproc), {info['cpu']}, {info['os']}",
        f"- load average: {load[0]} at the start, {load[1]} at the end (other work on the machine skews timings)",
        f"- python: {python_version} ({python}); bytecode {bytecode}",
        f"- dispatcher: `{' '.join(cmd)}`",
        f"- command: `{' '.join(argv)}` ({elapsed:.0f} s in all)",
        "- whole-process wall time, warm page cache; medians of alternating runs after one warm-up each;"
        " the CPU ratio compares user + system time (of the process and its children), which other"
        " work on the machine disturbs far less than wall time",
        "",
        "## Dispatch vs floor",
        "",
        "`jit-dispatch once --agent bench --command true --jit-dir STORE` (claims the top issue, settles"
        " `done`, promotes the backlog issues it unblocks, at least one) vs the floor `python -c` that"
        " json-parses every issue file listed in index.json and keeps nothing.",
        "",
        *table_head(
            [
                "issues",
                "store (files)",
                "states",
                "runs",
                "dispatch median (s)",
                "floor median (s)",
                "ratio",
                "dispatch min (s)",
                "floor min (s)",
                "dispatch − floor (s)",
                "CPU ratio (user+sys medians)",
            ],
            "rllrrrrrrrr",
        ),
    ]
    for row in scale:
        s = row.stats
        states = ", ".join(f"{k} {v}" for k, v in s["states"].items())
        store = (
            f"{s.get('shape', 'real')}: {s['file_bytes_total'] / 1e6:.1f} MB,"
            f" median {s['file_bytes_median']} B, mean {s['file_bytes_mean']} B"
        )
        d, f = median(row.dispatch), median(row.floor)
        lines.append(
            f"| {row.size} | {store} | {states} | {row.runs} | {d:.3f} | {f:.3f} | {d / f:.2f}x"
            f" | {min(row.dispatch):.3f} | {min(row.floor):.3f} | {d - f:+.3f}"
            f" | {median(row.dispatch_cpu) / median(row.floor_cpu):.2f}x |"
        )
    if startup:
        d, f = median(startup[0]), median(startup[1])
        lines += [
            "",
            "## Startup",
            "",
            *table_head(["process", "median (s)"], "lr"),
            f"| `jit-dispatch --version` (imports the CLI, no store) | {d:.3f} |",
            f"| `python -c 'import json'` | {f:.3f} |",
            f"| difference: the dispatcher's import cost | {d - f:+.3f} |",
        ]
    lines += ["", "## Overhead on the real 175-issue store", ""]
    if overhead:
        d, s = median(overhead.dispatch), median(overhead.shell)
        verdict = "within" if d - s <= OVERHEAD_TARGET_SECONDS else "OVER"
        lines += [
            f"{overhead.runs} alternating runs; outcome of the dispatches: {overhead.outcome}.",
            "",
            *table_head(["process", "median (s)", "min (s)"], "lrr"),
            f"| `jit-dispatch once --command 'sleep {SLEEP_SECONDS:g}'` | {d:.3f} | {min(overhead.dispatch):.3f} |",
            f"| `bash -c 'sleep {SLEEP_SECONDS:g}'` | {s:.3f} | {min(overhead.shell):.3f} |",
            f"| **dispatcher overhead** | **{d - s:.3f}** | {verdict} the {OVERHEAD_TARGET_SECONDS} s target |",
        ]
    else:
        lines.append(overhead_note)
    lines += [
        "",
        "## Peak memory",
        "",
        f"`os.wait4` ru_maxrss of `jit-dispatch once` (dispatcher and its children) on the {rss_store}-issue store,"
        " dispatcher stdout to /dev/null, forked by a ~5 MB helper (a child's ru_maxrss includes the RSS of"
        " the process it was forked from); the largest of the runs.",
        "",
        *table_head(["command output", "peak RSS (MB)", "wall median (s)"], "lrr"),
    ]
    for r in rss:
        lines.append(f"| {r.label} | {r.max_rss_kb / 1024:.1f} | {r.seconds:.3f} |")
    if len(rss) == 3:
        lines.append(f"| growth with output | {(rss[2].max_rss_kb - rss[1].max_rss_kb) / 1024:+.1f} | |")
    if profile:
        lines += ["", "## Profile", "", "```", profile.strip(), "```"]
    return "\n".join(lines) + "\n"


# ===================================================================== main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", help="comma-separated store sizes (default 1000,10000,50000; --quick: 1000)")
    parser.add_argument(
        "--shapes", default="real,steady", help=f"comma-separated store shapes, of {', '.join(SHAPES)} (default both)"
    )
    parser.add_argument("--runs", type=int, help="runs per side (default 15, 7 from 50k issues; --quick: 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: few runs, 20 MB of output; writes quick.md")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results", help="cache and report dir")
    parser.add_argument("--seed-store", type=Path, default=SEED_STORE, help="the real 175-issue .jit directory")
    parser.add_argument("--rev", help="measure the package as committed at this git revision (default: working tree)")
    parser.add_argument(
        "--dispatcher", help="another jit-dispatch executable, measured with its own package (default: this venv's)"
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        type=int,
        const=0,
        metavar="SIZE",
        help="also cProfile one dispatch on the store of SIZE issues (default: the largest)",
    )
    parser.add_argument(
        "--no-pyc-cache",
        action="store_true",
        help="keep the caller's PYTHONDONTWRITEBYTECODE (default: cache bytecode under the results dir)",
    )
    args = parser.parse_args(argv)
    try:
        sizes = args.sizes.split(",") if args.sizes else ["1000"] if args.quick else DEFAULT_SIZES
        args.sizes = [int(s) for s in sizes]
    except ValueError:
        parser.error(f"--sizes: not a comma-separated list of integers: {args.sizes!r}")
    if any(s < 20 for s in args.sizes):
        parser.error("--sizes: each store needs at least 20 issues")
    args.shapes = args.shapes.split(",")
    if not args.shapes or any(shape not in SHAPES for shape in args.shapes):
        parser.error(f"--shapes: each of {', '.join(SHAPES)}")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs: at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    load = load_average()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    results: Path = args.results_dir.resolve()
    results.mkdir(parents=True, exist_ok=True)
    pycache = None if args.no_pyc_cache else results / "pycache"
    env = clean_env(pycache)
    cmd = dispatcher_argv(args.dispatcher)
    python = interpreter_of(cmd)

    def runs_for(size: int) -> int:
        if args.runs is not None:
            return args.runs
        return 3 if args.quick else 7 if size >= 50000 else 15

    fixtures = [cached_store(results, size, shape) for size in args.sizes for shape in args.shapes]
    work = Path(tempfile.mkdtemp(prefix="jit-dispatch-bench-"))
    try:
        code = f"the installed package of {args.dispatcher}"
        if not args.dispatcher:
            code_path, code = snapshot_code(work, args.rev)
            prepend_path(env, "PYTHONPATH", str(code_path))
        probe = "import platform,jit_dispatch;print(platform.python_version());print(jit_dispatch.__file__)"
        python_version, imported = run_timed([python, "-c", probe], env).stdout.splitlines()
        if not args.dispatcher and not imported.startswith(str(work)):
            raise BenchError(f"the measured processes import {imported}, not the snapshot of the code")
        scale = []
        for fixture in fixtures:
            megabytes = fixture.stats["file_bytes_total"] / 1e6
            print(f"{fixture.size} issues, {fixture.shape} ({megabytes:.1f} MB):", flush=True)
            scale.append(bench_scale(fixture, work, runs_for(fixture.size), cmd, python, env))
        small = runs_for(min(args.sizes))
        print("startup:", flush=True)
        startup = bench_startup(cmd, python, env, small)
        overhead, note = None, ""
        if args.seed_store.is_dir():
            print(f"overhead on {args.seed_store}:", flush=True)
            overhead = bench_overhead(args.seed_store, work, small, cmd, env)
        else:
            note = f"Skipped: the real store {args.seed_store} is absent."
            print(note, flush=True)
        rss_fixture = fixtures[0]
        output_bytes = QUICK_OUTPUT_BYTES if args.quick else BIG_OUTPUT_BYTES
        print(f"peak RSS ({output_bytes / 1e6:g} MB of output):", flush=True)
        rss = bench_rss(rss_fixture, work, cmd, env, output_bytes, 1 if args.quick else 3)
        profile = ""
        if args.profile is not None:
            size = args.profile or max(args.sizes)
            print(f"profiling one dispatch on {size} issues:", flush=True)
            profile = profile_dispatch(cached_store(results, size, args.shapes[-1]), work, python, env, results)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if pycache is not None:  # the snapshot's bytecode: a new path every run
            shutil.rmtree(pycache / work.relative_to(work.anchor), ignore_errors=True)

    shown_argv = ["bench/run.py", *(sys.argv[1:] if argv is None else argv)]
    table = render(
        argv=shown_argv,
        cmd=cmd,
        python=python,
        python_version=python_version,
        scale=scale,
        startup=startup,
        overhead=overhead,
        overhead_note=note,
        rss=rss,
        rss_store=rss_fixture.size,
        profile=profile,
        bytecode=bytecode_note(env),
        load=(load, load_average()),
        code=code,
        elapsed=time.perf_counter() - started,
    )
    report = results / ("quick.md" if args.quick else "latest.md")
    report.write_text(table, encoding="utf-8")
    print()
    print(table)
    print(f"(written to {report})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
