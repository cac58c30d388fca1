#!/usr/bin/env python3
"""Stress `once --tracker github` on a hostile loopback GitHub (issue 22): waves of runners started
together, SIGKILLs at random points of their cycle, clients whose heartbeats hang, ~8% of writes
failing (half of them after GitHub applied them), short secondary rate limits, lagging lists, a
reaper in every wave.

    .venv/bin/python bench/github_stress.py                       # 16 runners a wave until 200 claims
    .venv/bin/python bench/github_stress.py --runners 8 --claims 60 --seed 3

Each runner works in its own workspace as actions/checkout leaves it (its token persisted as a
base64 extraheader) and its command prints `git config --list`: a credential in any comment body
is a leak. Each command takes a per-issue directory for its run: a second runner inside it is an
overlap. Reported (all must be 0): overlaps, issues run again after a recorded `done`, leaked
credentials, issues parked before using up their attempts (or parked while closed as completed).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "src"))

from github_fake import BOT, REPO, FakeGitHub  # noqa: E402
from github_server import FakeServer  # noqa: E402
from jit_dispatch.trackers.github import rules  # noqa: E402

UNPACED = (
    "import jit_dispatch.trackers.github.api as a; a.THROTTLE = False; from jit_dispatch.cli.main import main; main()"
)
# Takes the issue's directory (one left by a SIGKILLed command, whose pid is dead, is taken over and
# counted; one whose command lives is an overlap); prints the workspace's git config (the credential,
# base64); runs 1-3 s; fails one run in five (a release).
COMMAND = (
    'd="$RUNS/running-$JIT_ISSUE_SHORT_ID"; '
    'if ! mkdir "$d" 2>/dev/null; then p=$(cat "$d/pid" 2>/dev/null); '
    'if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then echo x >> "$RUNS/overlaps"; '
    'else echo x >> "$RUNS/killed"; fi; fi; '
    'echo $$ > "$d/pid"; echo $$ > "$RUNS/pid-${JIT_AGENT_ID//[^A-Za-z0-9]/_}"; '
    "trap 'rm -rf \"$d\"; exit 143' TERM; "
    'echo "$JIT_ISSUE_SHORT_ID" >> "$RUNS/runs"; git config --list; sleep $((RANDOM % 3 + 1)) & wait; '
    'rm -rf "$d"; [ $((RANDOM % 5)) -ne 0 ]'
)
MAX_ATTEMPTS = 3
HANG = 9.0  # a hanging client's commits are held this long after its lock (its fence falls at 1.5 intervals)
WRITES = ("POST", "PATCH", "DELETE")


class HostileServer(FakeServer):
    """Every write fails now and then (502 or 504; half after GitHub applied it); short secondary limits."""

    def __init__(self, fake: FakeGitHub, rng: random.Random, failing: float) -> None:
        super().__init__(fake, latency=(0.01, 0.15))
        self.rng, self.failing, self.injected = rng, failing, Counter[str]()
        self.hanging: set[str] = set()  # tokens whose commits hang for a while once they created a lock
        self.locked_at: dict[str, float] = {}

    def serve(self, method: str, path: str, body: str | None, token: str) -> tuple[int, dict[str, str], str]:
        if method == "POST" and path.endswith("/git/refs"):
            self.locked_at.setdefault(token, time.monotonic())
        elif method == "POST" and path.endswith("/git/commits") and token in self.hanging and token in self.locked_at:
            self.unstall.wait(max(0.0, self.locked_at[token] + HANG - time.monotonic()))  # its beats hang
        with self.lock:
            roll = self.rng.random()
            if method in WRITES and roll < self.failing and "/git/trees" not in path:
                status = self.rng.choice((502, 504))
                self.fake.fail(method, re.escape(path.split("?", 1)[0]), status, "Bad Gateway", token=token,
                               apply_first=self.rng.random() < 0.5)  # fmt: skip
                self.injected[f"{status}"] += 1
            elif roll > 1 - self.failing / 4:
                message = "You have exceeded a secondary rate limit."
                self.fake.fail(
                    method, re.escape(path.split("?", 1)[0]), 403, message, {"Retry-After": "1"}, token=token
                )
                self.injected["secondary limit"] += 1
        return super().serve(method, path, body, token)


def workspace(root: Path, token: str) -> Path:
    """A git repository with `token` persisted as actions/checkout does it."""
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    header = "AUTHORIZATION: basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
    subprocess.run(["git", "config", "http.https://github.com/.extraheader", header], cwd=root, check=True)
    return root


def leaked(text: str, token: str) -> bool:
    """The token literally, or decodable from base64 at any offset."""
    if token in text:
        return True
    for run in re.findall(r"[A-Za-z0-9+/]{16,}", text):
        for start in range(4):
            chunk = run[start:][: (len(run) - start) // 4 * 4]
            try:
                if token[4:-4] in base64.b64decode(chunk).decode("latin-1"):
                    return True
            except ValueError:
                continue
    return False


def stress(
    runners: int, issues: int, claims: int, lag: float, seed: int, failing: float, heartbeat: float = 2.0
) -> dict[str, Any]:
    rng = random.Random(seed)
    fake = FakeGitHub(page_size=100, lag=lag)
    for number in range(1, issues + 1):
        fake.add_issue(number)
    kills = hangs = waves = 0
    outcomes = Counter[str]()
    tokens: list[str] = []
    started = time.monotonic()
    with HostileServer(fake, rng, failing) as server, tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        while len(_lines(runs / "runs")) < claims and waves < 60 and _open(fake):
            waves += 1
            procs: list[subprocess.Popen[bytes]] = []
            for n in range(runners + 1):
                token = f"ghs_s{seed}w{waves}r{n}_0123456789abcdef"
                tokens.append(token)
                fake.actors[token] = BOT
                env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "JIT_", "RUNNER_"))}
                env |= {"GITHUB_TOKEN": token, "GITHUB_REPOSITORY": REPO, "RUNS": tmp, "TMPDIR": tmp}
                env |= {"JIT_DISPATCH_GITHUB_API_URL": server.url, "JIT_DISPATCH_TRACKER": "github"}
                if n == runners:  # the wave's reaper
                    args = ["reap", "--older-than", "1s", "--max-attempts", str(MAX_ATTEMPTS)]
                else:
                    env |= {"JIT_DISPATCH_SPREAD_INDEX": str(n), "JIT_DISPATCH_SPREAD_TOTAL": str(runners)}
                    args = ["once", "--agent", f"r{n}", "--command", COMMAND, "--heartbeat", f"{heartbeat:g}s"]
                    args += ["--json", "--max-attempts", str(MAX_ATTEMPTS), "--no-fail-on-command-failure"]
                    if rng.random() < 0.1:  # a client whose beats hang from its claim on
                        hangs += 1
                        server.hanging.add(token)
                cwd = workspace(runs / "ws" / token, token)
                argv = [sys.executable, "-c", UNPACED, *args]
                procs.append(subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL, start_new_session=True))  # fmt: skip
            for stale in runs.glob("pid-*"):
                stale.unlink()
            victims = rng.sample(range(runners), k=min(2, runners))
            timers = [threading.Timer(rng.uniform(0.5, 10.0), _kill, (procs[n], runs, n)) for n in victims]
            for timer in timers:
                timer.start()
            for proc in procs:
                try:
                    out = proc.communicate(timeout=240)[0].decode()
                except subprocess.TimeoutExpired:
                    _kill(proc)
                    out = "timeout"
                if proc.returncode == -signal.SIGKILL:
                    kills += 1
                    outcomes["killed"] += 1
                elif '"outcome": "' in out:
                    outcomes[out.split('"outcome": "', 1)[1].split('"', 1)[0]] += 1
                elif proc is not procs[-1]:
                    outcomes[f"exit {proc.returncode}"] += 1
            for timer in timers:
                timer.cancel()
        fake.faults.clear()
        server.unstall.set()
        ran = Counter(_lines(runs / "runs"))
        overlaps = len(list(_lines(runs / "overlaps")))
        me = frozenset({BOT["login"]})
        rerun_after_done = wrongly_parked = 0
        bodies: list[str] = []
        for number, thread in fake.comments.items():
            bodies += [c["body"] for c in thread]
            markers = rules.parse_markers(thread, me)
            done = [m for m in markers if m.kind == "done"]
            claimed_after = done and any(m.kind == "claim" and m.comment_id > done[0].comment_id for m in markers)
            if len({m.nonce for m in done}) > 1 or claimed_after:
                rerun_after_done += 1
            parked = "dispatch:parked" in [lb["name"] for lb in fake.issues[number]["labels"]]
            completed = fake.issues[number]["state"] == "closed"
            if parked and (completed or rules.failed_attempts(markers) < MAX_ATTEMPTS):
                wrongly_parked += 1
        leaks = sum(1 for token in tokens if any(leaked(body, token) for body in bodies))
        return {
            "claims (commands run)": sum(ran.values()),
            "overlaps": overlaps,
            "re-runs after done": rerun_after_done,
            "leaked credentials": leaks,
            "wrongly parked": wrongly_parked,
            "waves": waves,
            "SIGKILLs": kills,
            "commands SIGKILLed mid-run (their issue run again later)": len(_lines(runs / "killed")),
            "hanging clients": hangs,
            "faults injected": dict(server.injected),
            "closed": sum(1 for raw in fake.issues.values() if raw["state"] == "closed"),
            "parked": sum(1 for raw in fake.issues.values() if "dispatch:parked" in str(raw["labels"])),
            "locks left": len(fake.refs),
            "outcomes": dict(outcomes),
            "seconds": round(time.monotonic() - started),
        }


def _open(fake: FakeGitHub) -> int:
    """Issues still to do: open and not parked."""
    return sum(1 for raw in fake.issues.values() if raw["state"] == "open" and "dispatch:parked" not in str(raw))


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _kill(proc: subprocess.Popen[bytes], runs: Path | None = None, n: int = 0) -> None:
    """The runner and its command (a session of its own), as a VM that dies takes both."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    pid_file = runs / f"pid-agent_r{n}" if runs is not None else None
    if pid_file is not None and pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runners", type=int, default=16)
    parser.add_argument("--issues", type=int, default=180)
    parser.add_argument("--claims", type=int, default=200, help="stop after this many commands ran")
    parser.add_argument("--lag", type=float, default=1.0)
    parser.add_argument("--failing", type=float, default=0.08, help="share of writes answered 502/504")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--heartbeat", type=float, default=2.0, help="seconds; the fence falls at 1.5x")
    args = parser.parse_args()
    print(f"{args.runners} runners a wave, {args.issues} issues, lists lag {args.lag}s, {args.failing:.0%} writes fail")
    print(stress(args.runners, args.issues, args.claims, args.lag, args.seed, args.failing, args.heartbeat))


if __name__ == "__main__":
    main()
