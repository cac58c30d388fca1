#!/usr/bin/env python3
"""What jit's quality gates add to a dispatch cycle, against the processes they must spawn.

    .venv/bin/python bench/gates.py                 # 41 rounds → bench/results/gates.md
    .venv/bin/python bench/gates.py --rounds 5      # a smoke run

One round measures, side by side in this process (so interpreter start-up is out of the figures):

* `none`:  one full cycle (`dispatch_once`: snapshot, claim, command `true`, settle `done`) on a
  store whose issues require no gate;
* `gates`: the same cycle on an identical store whose issues require three auto postchecks
  `true` (the checkers run, their run records, `gates_status` and events are written);
* `floor`: spawning `sh -c true` three times from Python (`subprocess.run`);
* `books`: the `gates` cycle with the checker processes replaced by an instant success: what the
  bookkeeping alone costs (planning, run records, `gates_status`, events, report rows).

The target: median(gates) − median(none) ≤ 2 × median(floor) — the gates cost their processes,
not the bookkeeping. Rounds alternate the three so machine load hits all of them alike; every
cycle consumes one ready issue, so each store holds one issue per round (plus a warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from jit_dispatch.engine import gates as gate_engine  # noqa: E402
from jit_dispatch.engine.dispatch import Request, dispatch_once  # noqa: E402
from jit_dispatch.process.child import CancelToken, RunResult  # noqa: E402
from jit_dispatch.trackers.jit.store import JitStore, NewIssue  # noqa: E402

GATE_KEYS = ("unit", "lint", "fmt")


class Quiet:
    """Hooks that drop the output: the log is not what is measured."""

    def command_starting(self, issue: object, attempt: int) -> None: ...
    def output(self, chunk: bytes) -> None: ...
    def command_finished(self, run: object) -> None: ...
    def gate_starting(self, step: object) -> None: ...
    def gate_finished(self, run: object) -> None: ...


def make_store(repo: Path, issues: int, *, gates: bool) -> JitStore:
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    store = JitStore.init(repo / ".jit")
    if gates:
        registry = {
            key: {
                "version": 1, "key": key, "title": key, "description": "", "stage": "postcheck", "mode": "auto",
                "checker": {"type": "exec", "command": "true", "timeout_seconds": 60, "working_dir": None, "env": {}},
                "reserved": {}, "auto": True, "example_integration": None,
            }
            for key in GATE_KEYS
        }  # fmt: skip
        (store.root / "gates.json").write_text(json.dumps({"gates": registry}, indent=2))
    required = GATE_KEYS if gates else ()
    store.create_issues(NewIssue(f"issue {n}", gates_required=required) for n in range(issues))
    return JitStore.open(store.root)


def cycle(store: JitStore, expected_gates: int) -> float:
    request = Request(agent="agent:bench", command="true", heartbeat_seconds=None)
    started = time.perf_counter()
    result = dispatch_once(JitStore.open(store.root), request, CancelToken(), Quiet(), os.environ)
    elapsed = time.perf_counter() - started
    if result.outcome != "done" or len(result.gates) != expected_gates:
        raise SystemExit(f"bench: unexpected cycle: {result.outcome} {result.reason} ({len(result.gates)} gates)")
    return elapsed


def books(store: JitStore) -> float:
    """A `gates` cycle whose checkers spawn nothing."""
    spawn = gate_engine.run_command
    gate_engine.run_command = lambda *_args, **_kw: RunResult(0, 0.0, "", 0)
    try:
        return cycle(store, 3)
    finally:
        gate_engine.run_command = spawn


def floor() -> float:
    started = time.perf_counter()
    for _ in GATE_KEYS:
        subprocess.run(["sh", "-c", "true"], check=True)
    return time.perf_counter() - started


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jit-dispatch-bench-gates-") as tmp:
        plain = make_store(Path(tmp) / "none", args.rounds + 1, gates=False)
        gated = make_store(Path(tmp) / "gates", args.rounds + 1, gates=True)
        stubbed = make_store(Path(tmp) / "books", args.rounds + 1, gates=True)
        cycle(plain, 0), cycle(gated, 3), books(stubbed), floor()  # warm-up: imports, page cache
        none_s, gates_s, books_s, floor_s = [], [], [], []
        for _ in range(args.rounds):
            none_s.append(cycle(plain, 0))
            gates_s.append(cycle(gated, 3))
            books_s.append(books(stubbed))
            floor_s.append(floor())
    extra = median(gates_s) - median(none_s)
    ratio = extra / median(floor_s)
    verdict = "met" if ratio <= 2 else "NOT met"
    bookkeeping = median(books_s) - median(none_s)
    load = os.getloadavg()[0]
    report = "\n".join([
        f"# Gate cost — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"`bench/gates.py --rounds {args.rounds}`; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {load:.2f}; medians of {args.rounds} alternating rounds, in-process.",
        "",
        "| measure | median (ms) |",
        "|---|---:|",
        f"| cycle, no gates (`none`) | {median(none_s) * 1000:.2f} |",
        f"| cycle, three auto postchecks `true` (`gates`) | {median(gates_s) * 1000:.2f} |",
        f"| extra cost of the gates (`gates` − `none`) | {extra * 1000:.2f} |",
        f"| of which bookkeeping (`books` − `none`: checkers spawn nothing) | {bookkeeping * 1000:.2f} |",
        f"| floor: `sh -c true` three times from Python | {median(floor_s) * 1000:.2f} |",
        "",
        f"Extra cost ÷ floor: **{ratio:.2f}×** (target ≤ 2: {verdict}); bookkeeping ÷ floor: "
        f"{bookkeeping / median(floor_s):.2f}×.",
        "",
    ])  # fmt: skip
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "gates.md").write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
