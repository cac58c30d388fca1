"""A soak of the pool as a long-running service (issue 19): does it hold with people at work?

On a fresh store (`--issues` ready issues, plus `--chains` pairs of dependencies with a dependent
each), the pool (`start --listen --probe-listen`, 4 commands at once, each ~0.1 s) runs while:

- real jit writers (the newest binary in $JIT_DISPATCH_JIT_BIN) add labels and dependencies to
  random issues — jit reads an issue before it locks it, so some writes land on a fresh claim;
- `--slow-clients` clients hold the webhook port open, sending a header line every 5 s;
- the pool is stopped with SIGTERM and started again, then SIGKILLed and started again (the next
  pool sweeps what the killed one left; `reap` releases its claims once nothing runs);
- /healthz is probed on the probe port every 0.2 s (1 s timeout).

It reports double runs (two runs of one issue alive at once, from the commands' own log), stuck
issues (not done when the queue has drained), lost promotions (backlog issues whose dependencies
are all done), the pool's RSS after warm-up and at the end of its longest phase, and the probes.

    JIT_DISPATCH_JIT_BIN=… .venv/bin/python bench/soak.py [--issues 1000] [--chains 60] [--slow-clients 200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from common import scrubbed_env  # first: jit_dispatch from the source tree
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

COMMAND = (
    'echo "START {issue_id} $EPOCHREALTIME" >> {log}; '
    "trap 'echo \"STOP {issue_id} $EPOCHREALTIME\" >> {log}; exit 143' TERM; "
    'sleep 0.1 & wait $!; echo "END {issue_id} $EPOCHREALTIME" >> {log}'
)


class Pool:
    """One `start` process of the soak, with its ports."""

    def __init__(self, work: Path, env: dict[str, str], name: str) -> None:
        self.out = work / f"pool-{name}.jsonl"
        with self.out.open("w") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jit_dispatch", "start", "--config", str(work / "dispatch.toml"),
                 "--jit-dir", str(work / ".jit"), "--listen", "127.0.0.1:0", "--probe-listen", "127.0.0.1:0",
                 "--log-format", "json"],
                cwd=work, env=env, stdout=handle, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while not (listen := self.events("listen")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"soak: the pool did not start: {self.out.read_text()[-2000:]}")
            time.sleep(0.05)
        self.port = int(listen[0]["url"].rsplit(":", 1)[1])
        self.probe_port = int(listen[0]["probe_url"].rsplit(":", 1)[1])

    def events(self, kind: str) -> list[dict]:
        lines = self.out.read_text().splitlines()
        return [e for line in lines if line.startswith("{") and (e := json.loads(line))["event"] == kind]

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


def read_states(work: Path, ids: list[str] | None = None) -> dict[str, dict]:
    """Issue id → its file as it is now (a file being replaced is read on the next round)."""
    found = {}
    for path in [work / ".jit/issues" / f"{i}.json" for i in ids] if ids else (work / ".jit/issues").glob("*.json"):
        try:
            found[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return found


def runs_started(log: Path) -> int:
    return sum(1 for line in log.read_text().splitlines() if line.startswith("START")) if log.exists() else 0


def read_marks(log: Path) -> dict[str, list[tuple[float, str]]]:
    marks: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for line in log.read_text().splitlines() if log.exists() else []:
        kind, issue, at = line.split()
        marks[issue].append((float(at.replace(",", ".")), kind))
    return marks


def close_killed(log: Path, at: float, closed: list[tuple[str, float]]) -> None:
    """Runs a SIGKILLed pool left without END or STOP (their shell was killed with it): ended, at the
    latest, when the next pool had swept their processes (`at`), which is what the soak records."""
    for issue, seen in read_marks(log).items():
        seen += [(t, "STOP") for i, t in closed if i == issue]
        if sum(1 if kind == "START" else -1 for _, kind in seen) > 0:
            closed.append((issue, at))


def double_runs(log: Path, closed: list[tuple[str, float]]) -> list[str]:
    marks = read_marks(log)
    for issue, at in closed:
        marks[issue].append((at, "STOP"))
    doubled = []
    for issue, seen in marks.items():
        alive = 0
        for _, kind in sorted(seen, key=lambda m: (m[0], m[1] == "START")):
            alive += 1 if kind == "START" else -1
            if alive > 1:
                doubled.append(issue)
                break
    return doubled


def jit_writer(binary: Path, repo: Path, ids: list[str], done: list[str], stop: threading.Event, count: list[int]):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIT_")}
    rng = random.Random()
    while not stop.is_set():
        target = rng.choice(ids)
        if rng.random() < 0.6 or not done:
            args = ["issue", "update", target, "--label", f"component:soak-{rng.randrange(5)}"]
        else:
            args = ["dep", "add", target, rng.choice(done)]  # on a done issue: never blocks
        subprocess.run([str(binary), *args], cwd=repo, env=env, capture_output=True, timeout=60)
        count[0] += 1


def slow_client(port: int, stop: threading.Event) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"POST /webhook/github HTTP/1.1\r\nHost: x\r\n")
            n = 0
            while not stop.wait(5.0):
                sock.sendall(f"X-Slow-{n}: y\r\n".encode())
                n += 1
    except OSError:
        return


def prober(current: list[Pool | None], samples: list[float | None], stop: threading.Event) -> None:
    while not stop.wait(0.2):
        pool = current[0]
        if pool is None:
            continue
        started = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", pool.probe_port), timeout=1.0) as sock:
                sock.settimeout(1.0)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                ok = sock.recv(32).startswith(b"HTTP/1.1 200")
        except OSError:
            ok = False
        if current[0] is pool:  # not a restart meanwhile
            samples.append(time.monotonic() - started if ok else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=60)
    parser.add_argument("--slow-clients", type=int, default=200)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--work", type=Path, help="an empty directory to soak in (kept afterwards)")
    args = parser.parse_args()
    where = os.environ.get("JIT_DISPATCH_JIT_BIN")
    binaries = sorted(Path(where).glob("jit-head-*")) if where else []
    if not binaries:
        raise SystemExit("soak: set JIT_DISPATCH_JIT_BIN to the directory of the real jit binaries")
    keep = contextlib.nullcontext(str(args.work)) if args.work else None
    with keep or tempfile.TemporaryDirectory(prefix="jd-soak-") as tmp:
        work = Path(tmp)
        subprocess.run(["git", "init", "-q", str(work)], check=True)
        store = JitStore.init(work / ".jit")
        ids = store.create_issues(NewIssue(f"soak {n}") for n in range(args.issues))
        for n in range(args.chains):
            first, second = store.create_issues([NewIssue(f"dep a{n}"), NewIssue(f"dep b{n}")])
            ids += [first, second, *store.create_issues([NewIssue(f"after {n}", dependencies=(first, second))])]
        log = work / "runs.log"
        (work / "dispatch.toml").write_text(
            f'poll_interval_secs = 5\n[[agents]]\nid = "soak"\nmax_concurrent = 4\n'
            f"command = {json.dumps(COMMAND.format(log=log, issue_id='{issue_id}'))}\n"
        )
        env = {**scrubbed_env(), "JIT_DISPATCH_WEBHOOK_SECRET": "soak", "JIT_DISPATCH_RUN_DIR": str(work / "runs")}
        stop = threading.Event()
        current: list[Pool | None] = [None]
        probes: list[float | None] = []
        writes = [0]
        done_ids: list[str] = []
        threads = [threading.Thread(target=prober, args=(current, probes, stop), daemon=True)]
        threads += [
            threading.Thread(target=jit_writer, args=(binaries[-1], work, ids, done_ids, stop, writes), daemon=True)
            for _ in range(args.writers)
        ]
        clients_stop = threading.Event()
        signals: list[str] = []
        closed: list[tuple[str, float]] = []  # (issue, when) for runs a SIGKILLed pool left open
        rss: tuple[int, int] = (0, 0)
        started = time.monotonic()
        try:
            for thread in threads:
                thread.start()
            total = len(ids)
            for phase, (until, how) in enumerate(((total // 4, "SIGTERM"), (total // 2, "SIGKILL"), (None, "end"))):
                pool = current[0] = Pool(work, env, str(phase))
                if signals and signals[-1].startswith("SIGKILL"):  # the sweep comes before the first cycle
                    while not (first := pool.events("cycle")) and pool.proc.poll() is None:
                        time.sleep(0.05)
                    swept = datetime.fromisoformat(first[0]["ts"].replace("Z", "+00:00")).timestamp()
                    close_killed(log, swept, closed)
                clients = [threading.Thread(target=slow_client, args=(pool.port, clients_stop), daemon=True)
                           for _ in range(args.slow_clients)]  # fmt: skip
                for client in clients:
                    client.start()
                warm = None
                deadline = time.monotonic() + 900
                next_reap = time.monotonic() + 12 if signals and signals[-1].startswith("SIGKILL") else None
                while time.monotonic() < deadline:
                    if warm is None and len(pool.events("settle")) >= 200:
                        warm = pool.rss_kib()
                    states = [raw["state"] for raw in read_states(work).values()]
                    done_ids[:] = [i for i, raw in read_states(work, ids[:200]).items() if raw["state"] == "done"]
                    if until is not None and runs_started(log) >= until:
                        break
                    if until is None and all(state == "done" for state in states):
                        break
                    if next_reap is not None and time.monotonic() > next_reap:  # the killed pool's claims
                        subprocess.run([sys.executable, "-m", "jit_dispatch", "reap", "--jit-dir", str(work / ".jit"),
                                        "--older-than", "10s"], env=env, capture_output=True)  # fmt: skip
                        next_reap = time.monotonic() + 5
                    time.sleep(0.5)
                if until is None:
                    rss = (warm or 0, pool.rss_kib())
                current[0] = None
                clients_stop.set()
                pool.proc.send_signal(signal.SIGKILL if how == "SIGKILL" else signal.SIGTERM)
                pool.proc.wait(timeout=60)
                clients_stop = threading.Event()
                signals.append(f"{how} after {runs_started(log)} runs")
        finally:
            stop.set()
            clients_stop.set()
            if current[0] is not None and current[0].proc.poll() is None:
                current[0].proc.kill()
        reap = subprocess.run([sys.executable, "-m", "jit_dispatch", "reap", "--jit-dir", str(work / ".jit"),
                               "--older-than", "1s", "--json"], env=env, capture_output=True, text=True)  # fmt: skip
        states = read_states(work)
        stuck = [i for i, raw in states.items() if raw["state"] != "done"]
        lost = [i for i, raw in states.items() if raw["state"] == "backlog"
                and all(states[d]["state"] == "done" for d in raw["dependencies"] if d in states)]  # fmt: skip
        ok = sorted(p for p in probes if p is not None)
        p99 = ok[min(len(ok) - 1, int(len(ok) * 0.99))] * 1000 if ok else float("nan")
        print(
            f"soak: {len(ids)} issues, {runs_started(log)} runs in {time.monotonic() - started:.0f} s; "
            f"{writes[0]} real jit writes; {args.slow_clients} slow clients; signals: {', '.join(signals)}"
        )
        doubled = len(double_runs(log, closed))
        print(f"double runs: {doubled} ({len(closed)} runs ended by the SIGKILL); stuck issues: {len(stuck)}; "
              f"lost promotions: {len(lost)}")  # fmt: skip
        print(f"RSS of the last pool: {rss[0] / 1024:.1f} MiB after 200 runs, {rss[1] / 1024:.1f} MiB at the end")
        print(f"probes on the probe port: {len(ok)}/{len(probes)} answered within 1 s, p99 {p99:.1f} ms")
        print(f"final reap: {len(json.loads(reap.stdout or '{}').get('reaped', []))} claims released")


if __name__ == "__main__":
    main()
