"""The pool as a service: what watching the store costs, and how fast a change is taken.

On a synthetic store (default 10 000 issues; the agent may take only issues labelled
`bench:wake`, so the pool is idle until the benchmark creates one):

1. Idle cost. CPU seconds per second of `start --listen` while nothing happens (the watcher's
   stat() rounds, the server, the loop), against the floor "one fill cycle" (the median
   `duration_seconds` of cycles the benchmark starts with signed webhooks): the ratio says how
   often polling could run for the same CPU.
2. Wake latency. A ready issue is created (as jit writes one); the time until its command starts,
   against the floor "a fresh `once` process from start to command start" on the same store.
3. Coalescing. 1,000 signed webhooks sent by 4 senders at once: how many fill cycles they start.

    .venv/bin/python bench/service.py [--issues 10000] [--samples 7] [--idle 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import fmt, load_average, machine, median, scrubbed_env  # first: jit_dispatch from the source tree
from jit_dispatch.service.webhooks import sign
from jit_dispatch.trackers.jit.store import JitStore, NewIssue
from stores import build_store

SECRET = "bench"
BURST = 1000  # signed webhooks sent at once: they must cost a few cycles, not one each
CONFIG = """\
poll_interval_secs = 600
[[agents]]
id = "bench"
labels = ["bench:wake"]
command = 'echo "$JIT_ISSUE_ID $EPOCHREALTIME" >> {starts}'
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def started_at(starts: Path, issue_id: str, limit: float = 30.0) -> float:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for line in starts.read_text().splitlines() if starts.exists() else []:
            found, at = line.split()
            if found == issue_id:
                return float(at.replace(",", "."))
        time.sleep(0.005)
    raise SystemExit(f"bench: issue {issue_id} never started")


def log_events(out: Path, kind: str) -> list[dict]:
    return [e for e in map(json.loads, out.read_text().splitlines()) if e["event"] == kind]


def measure_pool(
    work: Path, store: JitStore, env: dict, samples: int, idle_window: float
) -> tuple[float, float, list[float], tuple[int, int, float]]:
    out = work / "pool.jsonl"
    argv = [sys.executable, "-m", "jit_dispatch", "start", "--listen", "127.0.0.1:0", "--log-format", "json"]
    with out.open("w") as handle:
        proc = subprocess.Popen(argv, cwd=work, env={**env, "JIT_DISPATCH_WEBHOOK_SECRET": SECRET}, stdout=handle)
    try:
        deadline = time.monotonic() + 60
        while not (cycles := log_events(out, "cycle")) and time.monotonic() < deadline:
            time.sleep(0.05)
        url = log_events(out, "listen")[0]["url"]
        time.sleep(1.0)  # settle after the first cycle
        before, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle_window)  # the idle window being measured
        idle = (cpu_seconds(proc.pid) - before) / (time.monotonic() - t0)
        for n in range(samples):  # cycles started by webhooks: the floor
            body = json.dumps({"type": "issue_completed", "id": f"bench-{n}"}).encode()
            headers = {"X-Hub-Signature-256": sign(SECRET.encode(), body)}
            urllib.request.urlopen(urllib.request.Request(url + "/webhook/jit", body, headers), timeout=10).read()
            while len(log_events(out, "cycle")) < len(cycles) + n + 1 and time.monotonic() < deadline + 120:
                time.sleep(0.01)
        cycle = median([c["duration_seconds"] for c in log_events(out, "cycle") if c["trigger"] == "webhook"])
        burst = measure_burst(url, out)
        latencies = []
        for n in range(samples):
            (issue_id,) = store.create_issues([NewIssue(f"wake {n}", "critical", labels=("bench:wake",))])
            written = time.time()
            latencies.append(started_at(work / "starts.txt", issue_id) - written)
            time.sleep(0.5)  # let it settle before the next
        return idle, cycle, latencies, burst
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def measure_burst(url: str, out: Path, count: int = BURST) -> tuple[int, int, float]:
    """`count` signed webhooks as fast as 4 senders go: (webhooks, cycles they started, seconds)."""
    before = sum(1 for c in log_events(out, "cycle") if c["trigger"] == "webhook")

    def send(n: int) -> None:
        body = json.dumps({"type": "issue_completed", "id": f"burst-{n}"}).encode()
        headers = {"X-Hub-Signature-256": sign(SECRET.encode(), body)}
        urllib.request.urlopen(urllib.request.Request(url + "/webhook/jit", body, headers), timeout=30).read()

    started = time.monotonic()
    with ThreadPoolExecutor(4) as senders:
        list(senders.map(send, range(count)))
    took = time.monotonic() - started
    time.sleep(1.0)  # the last coalesced cycle
    cycles = sum(1 for c in log_events(out, "cycle") if c["trigger"] == "webhook") - before
    return count, cycles, took


def measure_once(work: Path, store: JitStore, env: dict, samples: int) -> list[float]:
    latencies = []
    for n in range(samples):
        (issue_id,) = store.create_issues([NewIssue(f"once {n}", "critical", labels=("bench:wake",))])
        launched = time.time()
        subprocess.run([sys.executable, "-m", "jit_dispatch", "once", "--agent", "bench"], cwd=work, env=env,
                       check=True, capture_output=True)  # fmt: skip
        latencies.append(started_at(work / "starts.txt", issue_id) - launched)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--issues", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of the idle window")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jit-dispatch-bench-service-") as tmp:
        work = Path(tmp)
        build_store(work / ".jit", args.issues)
        (work / "dispatch.toml").write_text(CONFIG.format(starts=work / "starts.txt"))
        store = JitStore.open(work / ".jit")
        env = scrubbed_env()
        load = load_average()
        idle, cycle, wake, burst = measure_pool(work, store, env, args.samples, args.idle)
        once = measure_once(work, store, env, args.samples)
    info = machine()
    print(f"machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}; load before: {load}, after: "
          f"{load_average()}; {args.issues} issues, {args.samples} samples")  # fmt: skip
    print("| measure | value | floor | ratio |\n|---|---:|---:|---:|")
    print(f"| idle CPU of the pool (s per s) vs one fill cycle (s) | {idle:.4f} | {fmt(cycle, 3)} | "
          f"{idle / cycle:.3f} (= polling every {fmt(cycle / idle if idle else float('inf'), 0)} s) |")  # fmt: skip
    print(f"| store change → command start, median (s) vs fresh `once` | {fmt(median(wake), 3)} | "
          f"{fmt(median(once), 3)} | {median(wake) / median(once):.2f} |")  # fmt: skip
    print(f"| … max (s) | {fmt(max(wake), 3)} | {fmt(max(once), 3)} | |")
    print(f"| fill cycles started by a burst of {burst[0]} signed webhooks ({burst[2]:.1f} s) | {burst[1]} | 1 | |")


if __name__ == "__main__":
    main()
