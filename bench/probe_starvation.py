"""Can slow clients on the webhook port starve the probes? (issue 19, item 8)

Starts `start --listen` on an empty store, opens N idle/slow clients on the webhook port (each
sends a partial request and one more header line every `--trickle` seconds, never finishing),
then probes `/healthz` once per 0.2 s for `--rounds` rounds with a 1 s timeout (kubelet's), on
the webhook port and, when the pool has one, on the `--probe-listen` port.

    .venv/bin/python bench/probe_starvation.py [--clients 200] [--rounds 50] [--trickle 5] [--no-probe-port]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import scrubbed_env  # first: jit_dispatch from the source tree
from jit_dispatch.trackers.jit.store import JitStore


def listening(out: Path, proc: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in out.read_text().splitlines():
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("event") == "listen":
                return event
        if proc.poll() is not None:
            raise SystemExit(f"bench: the pool exited: {out.read_text()}")
        time.sleep(0.05)
    raise SystemExit("bench: the pool never listened")


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def slow_client(port: int, trickle: float, stop: threading.Event) -> None:
    """A request that never ends: the request line, then one header line every `trickle` seconds."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"POST /webhook/github HTTP/1.1\r\nHost: x\r\n")
        n = 0
        while not stop.wait(trickle):
            sock.sendall(f"X-Slow-{n}: y\r\n".encode())
            n += 1
    except OSError:
        return  # cut by the server: a well-behaved outcome


def probe(port: int) -> float | None:
    """Seconds for GET /healthz to answer 200, or None after a 1 s timeout or any failure."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.settimeout(1.0)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = sock.recv(64)
    except OSError:
        return None
    return time.monotonic() - started if answer.startswith(b"HTTP/1.1 200") else None


def summary(name: str, samples: list[float | None]) -> str:
    ok = sorted(s for s in samples if s is not None)
    if not ok:
        return f"{name}: 0/{len(samples)} answered within 1 s"
    p50, p99 = ok[len(ok) // 2], ok[min(len(ok) - 1, int(len(ok) * 0.99))]
    return f"{name}: {len(ok)}/{len(samples)} answered within 1 s, p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--trickle", type=float, default=5.0)
    parser.add_argument("--no-probe-port", action="store_true", help="measure the single listener only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jd-probe-") as tmp:
        work = Path(tmp)
        JitStore.init(work / ".jit")
        (work / "dispatch.toml").write_text('poll_interval_secs = 600\n[[agents]]\nid = "a"\ncommand = "true"\n')
        extra = [] if args.no_probe_port else ["--probe-listen", "127.0.0.1:0"]
        out = work / "pool.jsonl"
        env = {**scrubbed_env(), "JIT_DISPATCH_WEBHOOK_SECRET": "bench"}
        with out.open("w") as handle:
            proc = subprocess.Popen(
                [sys.executable, "-m", "jit_dispatch", "start", "--jit-dir", str(work / ".jit"),
                 "--config", str(work / "dispatch.toml"), "--listen", "127.0.0.1:0", "--log-format", "json", *extra],
                cwd=work, env=env, stdout=handle, stderr=subprocess.STDOUT,
            )  # fmt: skip
        stop = threading.Event()
        try:
            event = listening(out, proc)
            port = port_of(event["url"])
            probe_port = port_of(event["probe_url"]) if event.get("probe_url") else None
            clients = [threading.Thread(target=slow_client, args=(port, args.trickle, stop), daemon=True)
                       for _ in range(args.clients)]  # fmt: skip
            for client in clients:
                client.start()
            time.sleep(1.0)
            webhook_port: list[float | None] = []
            probe_side: list[float | None] = []
            for _ in range(args.rounds):
                webhook_port.append(probe(port))
                if probe_port is not None:
                    probe_side.append(probe(probe_port))
                time.sleep(0.2)
        finally:
            stop.set()
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
            if proc.poll() is None:
                proc.kill()
    print(f"{args.clients} slow clients (a header line every {args.trickle:g} s), {args.rounds} probe rounds")
    print(summary("/healthz on the webhook port", webhook_port))
    if probe_port is not None:
        print(summary("/healthz on the probe port", probe_side))


if __name__ == "__main__":
    main()
