"""The profile part of bench/remote.py: every git call of the runners, logged by a git shim on their PATH."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass

from common import fmt, median, table_head
from remote_runner import Bench, GitCall, Wave, build_remote, issue_specs, parse_shim_log


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
            *table_head(
                ["step before the command starts", "calls per claim (median)", "seconds per claim (median)", "share"],
                "lrrr",
            ),
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
            *table_head(["git call", "calls", "failed (lost races)", "per runner", "median ms", "total s"], "lrrrrr"),
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
        header = [f"{size} files, {variant}" for variant in variants for size in sizes]
        lines += [
            "### Git time of one run by tree size (ms, git shim on)",
            "",
            *table_head(["git call", *header], "l" + "r" * len(header)),
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
