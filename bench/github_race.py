#!/usr/bin/env python3
"""Race real `once --tracker github` processes on the loopback GitHub fake (tests/github_server.py).

    .venv/bin/python bench/github_race.py                       # refs and comments, 16 runners, 12 issues
    .venv/bin/python bench/github_race.py --runners 8 --issues 6 --lag 1 --modes refs

Lists (issues, comments, refs) lag `--lag` seconds for every reader but a comment's writer;
each request waits 10-200 ms. Waves of `--runners` processes start together until every issue is
closed (or `--waves` ran). Each command takes a per-issue directory for 0.5 s: a second runner
inside it is an overlap. Counts are correctness figures, not timings.
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
sys.path.insert(0, str(ROOT / "tests"))
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


def trial(mode: str, runners: int, issues: int, lag: float, waves: int) -> dict[str, object]:
    fake = FakeGitHub(page_size=100, lag=lag)
    for number in range(1, issues + 1):
        fake.add_issue(number)
    with FakeServer(fake, latency=(0.01, 0.2)) as server, tempfile.TemporaryDirectory() as tmp:
        runs, outcomes, started = Path(tmp), Counter[str](), time.monotonic()
        for wave in range(waves):
            procs = []
            for n in range(runners):
                token = f"ghs_w{wave}r{n}_0123456789abcdef"
                fake.actors[token] = BOT
                env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "JIT_"))}
                env |= {"GITHUB_TOKEN": token, "GITHUB_REPOSITORY": REPO, "RUNS": tmp}
                env |= {"JIT_DISPATCH_GITHUB_API_URL": server.url, "JIT_DISPATCH_GITHUB_LOCK": mode}
                argv = [sys.executable, "-c", UNPACED, "once", "--tracker", "github", "--agent", f"r{n}"]
                argv += ["--command", COMMAND, "--json", "--no-fail-on-command-failure"]
                procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
            for proc in procs:
                out = proc.communicate(timeout=300)[0].decode()
                outcomes[out.split('"outcome": "', 1)[1].split('"', 1)[0] if '"outcome": "' in out else "error"] += 1
            if all(fake.issues[n]["state"] == "closed" for n in fake.issues):
                break
        ran = Counter((runs / "runs").read_text().split()) if (runs / "runs").exists() else Counter()
        overlaps = len((runs / "overlaps").read_text().split()) if (runs / "overlaps").exists() else 0
        return {
            "mode": mode,
            "runs": sum(ran.values()),
            "issues run more than once": sum(1 for c in ran.values() if c > 1),
            "overlaps": overlaps,
            "closed": sum(1 for raw in fake.issues.values() if raw["state"] == "closed"),
            "locks left": len(fake.refs),
            "outcomes": dict(outcomes),
            "seconds": round(time.monotonic() - started, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runners", type=int, default=16)
    parser.add_argument("--issues", type=int, default=12)
    parser.add_argument("--lag", type=float, default=2.0)
    parser.add_argument("--waves", type=int, default=4)
    parser.add_argument("--modes", default="refs,comments")
    args = parser.parse_args()
    print(f"{args.runners} runners a wave, {args.issues} issues, lists lag {args.lag}s, latency 10-200 ms")
    for mode in args.modes.split(","):
        print(trial(mode, args.runners, args.issues, args.lag, args.waves))


if __name__ == "__main__":
    main()
