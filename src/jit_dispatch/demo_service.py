"""`make demo-service` (`python -m jit_dispatch.demo --service`): the agent pool as a service.

Starts `jit-dispatch start --listen` on a free loopback port over the demo store, asks its probes,
sends it a signed GitHub webhook, prints its metrics, and stops it with SIGTERM — all for real.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from jit_dispatch.service.webhooks import sign

CONFIG = """\
poll_interval_secs = 600   # long on purpose: store changes and webhooks wake the pool, not the poll
[[agents]]
id = "demo-pool"
max_concurrent = 2
command = 'echo "working on $JIT_ISSUE_SHORT_ID"; sleep 0.3'
"""


def _request(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_for_lines(out: Path, needle: str, proc: subprocess.Popen[bytes], count: int = 1, seconds: float = 30) -> str:
    """The first line holding `needle`, once `count` lines do (bounded: the demo never hangs)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        found = [line for line in out.read_text().splitlines() if needle in line]
        if len(found) >= count:
            return found[0]
        time.sleep(0.05)
    raise SystemExit(f"demo: the pool did not print {count}× {needle!r}:\n{out.read_text()}")


def run(repo: Path) -> int:
    """Run the pool over `repo` (which holds the demo store) and show what an operator would see."""
    (repo / "dispatch.toml").write_text(CONFIG)
    secret = secrets.token_hex(16)
    out = repo.parent / "pool.log"
    env = {**os.environ, "JIT_DISPATCH_WEBHOOK_SECRET": secret}
    print("$ JIT_DISPATCH_WEBHOOK_SECRET=… jit-dispatch start --listen 127.0.0.1:0   # 0: any free port")
    with out.open("w") as handle:
        argv = ["start", "--listen", "127.0.0.1:0", "--log-dir", str(repo.parent / "logs")]
        proc = subprocess.Popen(
            [sys.executable, "-m", "jit_dispatch", *argv], cwd=repo, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    try:
        url = _wait_for_lines(out, "listening on", proc).split("listening on ", 1)[1].split()[0]
        # Four issues are ready; the fifth is promoted when its dependency is done, and the pool,
        # watching the store, takes it at once (not 600 s later).
        _wait_for_lines(out, "settle  ", proc, count=5)
        for path in ("/healthz", "/readyz"):
            status, body = _request(url + path)
            print(f"$ curl {url}{path}\n{status} {body.strip()}")
        payload = json.dumps({"action": "labeled", "issue": {"number": 7}}).encode()
        headers = {"X-GitHub-Event": "issues", "X-GitHub-Delivery": "demo-1", "Content-Type": "application/json"}
        for label, signature in (("unsigned", None), ("signed", sign(secret.encode(), payload))):
            sent = {**headers, **({"X-Hub-Signature-256": signature} if signature else {})}
            status, body = _request(url + "/webhook/github", payload, sent)
            print(f"$ curl -X POST {url}/webhook/github   # issues/labeled, {label}\n{status} {body.strip()}")
        status, body = _request(url + "/metrics")
        print(f"$ curl {url}/metrics | grep '^jit_dispatch_' | grep -v _created   # excerpt")
        for line in body.splitlines():
            if line.startswith("jit_dispatch_") and "_created" not in line and "_bucket" not in line:
                print(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    print(f"\n--- the pool's own log (exit {code} after SIGTERM) ---")
    print(out.read_text(), end="")
    return 0 if code == 128 + signal.SIGTERM else 1
