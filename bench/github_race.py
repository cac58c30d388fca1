#!/usr/bin/env python3
"""Race real `once --tracker github` processes on the loopback GitHub fake (tests/github_server.py).

    .venv/bin/python bench/github_race.py                       # refs and comments, 16 runners, 12 issues
    .venv/bin/python bench/github_race.py --runners 8 --issues 6 --lag 1 --modes refs
    .venv/bin/python bench/github_race.py --runners 50 --issues 500 --waves 1 --modes refs --spread both

Lists (issues, comments, refs) lag `--lag` seconds for every reader but a comment's writer;
each request waits 10-200 ms. Waves of `--runners` processes start together until every issue is
closed (or `--waves` ran). Each command takes a per-issue directory for 0.5 s: a second runner
inside it is an overlap. Counts are correctness figures, not timings; the request cost is counted
per claim (every request the fake received, and the lock commits among them), with and without
`--spread-index`/`--spread-total` (what the Action passes from the matrix, Kubernetes from
`JOB_COMPLETION_INDEX`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "src"))

from github_fake import BOT, REPO, FakeGitHub  # noqa: E402
from github_server import FakeServer  # noqa: E402

UNPACED = (
    "import jit_dispatch.trackers.github.api as a; a.THROTTLE = False; from jit_dispatch.cli.main import main; main()"
)
COMMAND = (
    'd="$RUNS/running-$JIT_ISSUE_SHORT_ID"; mkdir "$d" 2>/dev/null || echo x >> "$RUNS/overlaps"; '
    'echo "$JIT_ISSUE_SHORT_ID" >> "$RUNS/runs"; sleep 0.5; rmdir "$d" 2>/dev/null; true'
)


def trial(mode: str, runners: int, issues: int, lag: float, waves: int, spread: bool = False) -> dict[str, object]:
    fake = FakeGitHub(page_size=100, lag=lag)
    for number in range(1, issues + 1):
        fake.add_issue(number)
    with FakeServer(fake, latency=(0.01, 0.2)) as server, tempfile.TemporaryDirectory() as tmp:
        runs, outcomes, started = Path(tmp), Counter[str](), time.monotonic()
        errors: list[str] = []
        for wave in range(waves):
            procs = []
            for n in range(runners):
                token = f"ghs_w{wave}r{n}_0123456789abcdef"
                fake.actors[token] = BOT
                env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "JIT_"))}
                env |= {"GITHUB_TOKEN": token, "GITHUB_REPOSITORY": REPO, "RUNS": tmp}
                env |= {"JIT_DISPATCH_GITHUB_API_URL": server.url, "JIT_DISPATCH_GITHUB_LOCK": mode}
                if spread:
                    env |= {"JIT_DISPATCH_SPREAD_INDEX": str(n), "JIT_DISPATCH_SPREAD_TOTAL": str(runners)}
                argv = [sys.executable, "-c", UNPACED, "once", "--tracker", "github", "--agent", f"r{n}"]
                argv += ["--command", COMMAND, "--json", "--no-fail-on-command-failure"]
                procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            for proc in procs:
                out, err = (text.decode() for text in proc.communicate(timeout=300))
                outcome = out.split('"outcome": "', 1)[1].split('"', 1)[0] if '"outcome": "' in out else "error"
                outcomes[outcome] += 1
                if outcome == "error" and len(errors) < 3:
                    errors.append((err.strip().splitlines() or [""])[-1][:200])
            if all(fake.issues[n]["state"] == "closed" for n in fake.issues):
                break
        ran = Counter((runs / "runs").read_text().split()) if (runs / "runs").exists() else Counter()
        overlaps = len((runs / "overlaps").read_text().split()) if (runs / "overlaps").exists() else 0
        claims = max(1, sum(ran.values()))
        per_runner = sorted(Counter(token for _, _, token in server.arrived).values())
        commits = sum(1 for method, path, _ in server.arrived if method == "POST" and path.endswith("/git/commits"))
        return {
            "mode": mode,
            "spread": spread,
            "requests": len(server.arrived),
            "requests per claim": round(len(server.arrived) / claims, 1),
            "lock commits per claim": round(commits / claims, 1),
            "median requests per runner": per_runner[len(per_runner) // 2] if per_runner else 0,
            "runs": sum(ran.values()),
            "issues run more than once": sum(1 for c in ran.values() if c > 1),
            "overlaps": overlaps,
            "closed": sum(1 for raw in fake.issues.values() if raw["state"] == "closed"),
            "locks left": len(fake.refs),
            "outcomes": dict(outcomes),
            "errors": errors,
            "seconds": round(time.monotonic() - started, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runners", type=int, default=16)
    parser.add_argument("--issues", type=int, default=12)
    parser.add_argument("--lag", type=float, default=2.0)
    parser.add_argument("--waves", type=int, default=4)
    parser.add_argument("--modes", default="refs,comments")
    parser.add_argument("--spread", choices=("off", "on", "both"), default="off", help="runner i of n: --spread-index")
    args = parser.parse_args()
    print(f"{args.runners} runners a wave, {args.issues} issues, lists lag {args.lag}s, latency 10-200 ms")
    spreads = {"off": [False], "on": [True], "both": [False, True]}[args.spread]
    for mode in args.modes.split(","):
        for spread in spreads:
            print(trial(mode, args.runners, args.issues, args.lag, args.waves, spread))


if __name__ == "__main__":
    main()
