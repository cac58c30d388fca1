#!/usr/bin/env python3
"""Enforced graph and local rules, jit-dispatch against the newest jit binary, on random small stores
(docs/jit-format.md#rule-differential).

    JIT_DISPATCH_JIT_BIN=/path/to/jit/bins .venv/bin/python bench/rules_differential.py --cases 300
    .venv/bin/python bench/rules_differential.py --seed 17 --cases 1 --keep /tmp/case   # one case, kept

Each case (tests/support/rule_differential.py): 1–6 issues made by jit (types, `satisfies:`/
`req:`/`checks:`/`hyp:`/`brackets:` labels, dependencies, done or not, criteria sections, manual
gates passed 1 h, 30 h or 10 days ago), then 1–3 random `[[rules]]` of every kind. On a copy jit
takes the target `in_progress` (`issue claim`) then `done`; jit-dispatch runs `once --issue` on the original.
Prints the verdicts' tally and every mismatch with its seed; exit 1 when there is one.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "src"))

import rule_differential as rd  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1000, help="first seed; case i uses seed+i")
    parser.add_argument("--keep", type=Path, help="build the cases under this directory and keep them")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the jit_dispatch source tree to judge")
    args = parser.parse_args()
    where = os.environ.get("JIT_DISPATCH_JIT_BIN")
    binaries = sorted(Path(where).glob("jit-head-*")) if where else []
    if not binaries:
        print("JIT_DISPATCH_JIT_BIN must name the directory of the newest jit (jit-head-*)", file=sys.stderr)
        return 2
    jit = rd.Jit(binaries[-1])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JIT_", "GITHUB_"))}
    env["PYTHONPATH"] = str(args.src.resolve())
    tally: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        base = args.keep or Path(scratch)
        for seed in range(args.seed, args.seed + args.cases):
            case = rd.generate(seed)
            repo = base / f"case-{seed}"
            target = rd.build(jit, case, repo)
            jits = rd.jits_verdict(jit, repo, target, base / f"case-{seed}-jit")
            ours, reason = rd.dispatch_verdict(jit, repo, target, env)
            tally[f"jit {jits.end}"] += 1
            if (found := rd.mismatch(jits, ours)) is not None:
                tally["mismatch"] += 1
                print(f"seed {seed} (MISMATCH): {found}\n  reason: {reason}\n  rules:\n{case.rules}", flush=True)
    elapsed = time.monotonic() - started
    counts = ", ".join(f"{end} {count}" for end, count in sorted(tally.items()))
    print(f"{args.cases} cases (seeds {args.seed}..{args.seed + args.cases - 1}): {counts}")
    print(f"{elapsed:.0f} s ({elapsed / max(args.cases, 1):.2f} s a case)")
    return 1 if tally["mismatch"] else 0


if __name__ == "__main__":
    sys.exit(main())
