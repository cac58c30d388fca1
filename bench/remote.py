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
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from common import ROOT, BenchError, git, load_average, machine, median, snapshot_code, timed
from remote_experiments import (
    ATTEMPTS_TARGET,
    attempts_experiment,
    attempts_table,
    big_tree_experiment,
    latency_experiment,
    latency_table,
    tree_table,
)
from remote_profile import profile_experiment, profile_tables
from remote_runner import Bench

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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    load_at_start = load_average(1, 1)
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
    load = load_average(1, 1)
    info = machine()
    lines = [
        f"# Remote mode benchmark{' (quick)' if args.quick else ''}",
        "",
        f"- command: `{' '.join([Path(sys.executable).name, 'bench/remote.py', *(argv or sys.argv[1:])])}`",
        f"- code: {code_label}",
        f"- machine: {info['platform']}, {info['cpu_count']} CPUs, python {info['python']}, "
        f"{git('--version').strip()}; load average {load_at_start} at start, {load} at end",
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
