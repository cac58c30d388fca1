"""The experiments of bench/remote.py and their tables: lock attempts, claim latency, big trees."""

from __future__ import annotations

import math
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from common import fmt, median, p90, table_head
from remote_runner import MIXED_PRIORITIES, Bench, Wave, build_remote, clone, fresh_copy, issue_specs

ATTEMPTS_TARGET = 1.5
LINEAR_EXPONENT = 1.1  # local growth exponent up to this counts as linear (noise margin included) …
NEAR_LINEAR_EXPONENT = 1.5  # … up to this as slightly super-linear; a serialised protocol shows about 2
BIG_TREE_TARGET = 1.25  # 20k-file median over 0-file median above this counts as growing with the tree


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


# ===================================================================== report


def attempts_table(rows: list[AttemptRow], issues: int) -> list[str]:
    runners = rows[0].runners if rows else 0
    lines = [
        f"## Lock push attempts per successful claim ({runners} runners, {issues} ready issues)",
        "",
        *table_head(
            [
                "priorities",
                "order",
                "waves",
                "claims",
                "runners without a claim",
                "median",
                "mean",
                "max",
                "distribution (attempts×claims)",
                "median latency (s)",
                "target median ≤ 1.5",
            ],
            "llrrrrrrlrl",
        ),
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
        *table_head(
            [
                "runners",
                "waves",
                "claims",
                "median (s)",
                "p90 (s)",
                "max (s)",
                "median ÷ median(1)",
                "median ÷ N (s)",
                "growth exponent vs previous N",
                "wall, all finished (s)",
                "state commits",
                "problems",
            ],
            "r" * 12,
        ),
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
        "At most 2 state commits per claim (claim, result); a fold carries several claims and results.",
        "",
    ]
    return lines, verdict


def tree_table(rows: list[TreeRow]) -> tuple[list[str], bool]:
    lines = [
        "## One remote transaction vs. the size of the rest of the tree (`once --command true`, whole process)",
        "",
        *table_head(
            ["clone", "other files", "runs", "median (s)", "min (s)", "max (s)", "ratio to 0 files"], "lrrrrrr"
        ),
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
