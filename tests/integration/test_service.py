"""`jit-dispatch start --listen` as a real process on a real loopback port: probes, metrics read back
with prometheus_client's own parser, signed webhooks and store changes that wake the pool long
before its poll interval, JSON logs. Every wait is bounded in time and in rounds.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import clean_env, git, read_issue, run_cli
from jit_dispatch.service.http import MAX_BODY
from jit_dispatch.service.webhooks import sign
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

SECRET = "s3cr3t-for-tests"
LONG_POLL = 600  # seconds: anything that happens in a test happened because the pool was woken
WAIT = 30.0  # seconds any single wait may take on a loaded machine
ROUNDS = 2000  # and at most this many rounds


def wait_for(predicate: Callable[[], Any], what: str, proc: subprocess.Popen | None = None, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    for _ in range(ROUNDS):
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the pool exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Client:
    """Plain HTTP/1.1 requests to the pool's endpoint."""

    host: str
    port: int

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read(), dict(response.getheaders())
        finally:
            conn.close()

    def get(self, path: str) -> tuple[int, bytes]:
        status, body, _ = self.request("GET", path)
        return status, body

    def hook(self, route: str, payload: dict, *, kind: str = "", delivery: str = "", signature: str | None = None):
        """POST `payload`, signed with the secret (`signature`: that header instead; "" for none)."""
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        signature = sign(SECRET.encode(), body) if signature is None else signature
        if signature:
            headers["X-Hub-Signature-256"] = signature
        if kind:
            headers["X-GitHub-Event"] = kind
        if delivery:
            headers["X-GitHub-Delivery"] = delivery
        status, data, _ = self.request("POST", f"/webhook/{route}", body, headers)
        return status, json.loads(data) if data.startswith(b"{") else data

    def metrics(self) -> dict[tuple[str, tuple], float]:
        status, body = self.get("/metrics")
        assert status == 200
        values = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return values


@dataclass
class Running(Client):
    proc: subprocess.Popen | None = None
    out: Path | None = None

    def events(self) -> list[dict]:
        """The JSON log so far; every complete line must be one JSON object."""
        assert self.out is not None
        text = self.out.read_text()
        lines = text.splitlines()[: None if text.endswith("\n") else -1]
        return [json.loads(line) for line in lines]

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events() if e["event"] == kind]


def pool_config(path: Path, command: str, *, capacity: int = 1, extra: str = "") -> Path:
    path.write_text(textwrap.dedent(f"""\
        poll_interval_secs = {LONG_POLL}
        max_attempts = 1
        {extra}
        [[agents]]
        id = "w"
        max_concurrent = {capacity}
        exclude_labels = ["needs:human"]
        command = '{command}'
        """))  # fmt: skip
    return path


def spawn(cwd: Path, *args: str, secret: str | None = SECRET) -> Running:
    out = cwd / "pool.jsonl"
    env = clean_env(**({"JIT_DISPATCH_WEBHOOK_SECRET": secret} if secret else {}))
    with out.open("w") as handle, (cwd / "pool.err").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jit_dispatch", "start", "--listen", "127.0.0.1:0", "--log-format", "json", *args],
            cwd=cwd, env=env, stdout=handle, stderr=err,
        )  # fmt: skip
    running = Running("", 0, proc, out)
    try:
        listen = wait_for(lambda: running.of("listen"), "the server to listen", proc)[0]
    except BaseException:
        stop(running)
        raise
    host, port = listen["url"].removeprefix("http://").rsplit(":", 1)
    running.host, running.port = host, int(port)
    return running


def stop(running: Running) -> int:
    assert running.proc is not None
    if running.proc.poll() is None:
        running.proc.send_signal(signal.SIGTERM)
        try:
            running.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            running.proc.kill()
            running.proc.wait()
    return running.proc.returncode


@pytest.fixture
def pools():
    started: list[Running] = []

    def start(cwd: Path, *args: str, **kw: Any) -> Running:
        started.append(spawn(cwd, *args, **kw))
        return started[-1]

    yield start
    for running in started:
        stop(running)


def make_ready_later(root: Path) -> str:
    """A new ready issue, written the way jit writes one (issue file, index.json, events.jsonl)."""
    (issue_id,) = JitStore.open(root).create_issues([NewIssue("arrived later", "high")])
    return issue_id


# --------------------------------------------------------------------------- routes and rules
def test_every_route_and_the_signature_rules(tmp_path: Path, new_store, pools) -> None:
    store, _ = new_store(NewIssue("for a person", labels=("needs:human",), created_at="2026-01-01T00:00:00Z"))
    pool_config(tmp_path / "dispatch.toml", "true")
    pool = pools(tmp_path, "--jit-dir", str(store.root))
    assert pool.host == "127.0.0.1", "loopback unless told otherwise"
    wait_for(lambda: pool.of("cycle"), "the first cycle", pool.proc)
    assert pool.get("/healthz") == (200, b"ok\n")
    assert pool.get("/readyz") == (200, b"ok\n")
    assert pool.get("/nothing-here")[0] == 404
    assert pool.get("/webhook/github")[0] == 405
    assert pool.request("POST", "/metrics", b"")[0] == 405
    _, _, headers = pool.request("GET", "/metrics")
    assert headers["Content-Type"].startswith("text/plain; version=")

    woken = lambda: [c for c in pool.of("cycle") if c["trigger"] == "webhook"]  # noqa: E731
    ping = {"zen": "Design for failure.", "hook_id": 1}
    assert pool.hook("github", ping, kind="ping", signature="") == (401, {"status": "missing or wrong signature",
                                                                         "wake": False})  # fmt: skip
    assert pool.hook("github", {"action": "labeled"}, kind="issues", signature="sha256=" + "ab" * 32)[0] == 401
    assert pool.hook("jit", {"type": "issue_completed"}, signature="")[0] == 401
    assert pool.hook("github", ping, kind="ping", delivery="d-0") == (200, {"status": "pong", "wake": False})
    assert pool.hook("github", {"action": "created"}, kind="star", delivery="d-1")[0] == 202
    assert pool.hook("jit", {"type": "issue_claimed", "id": "e-1", "assignee": "agent:x"})[0] == 202
    assert woken() == [], "refused and ignored requests wake nothing"

    labeled = pool.hook("github", {"action": "labeled"}, kind="issues", delivery="d-2")
    assert labeled == (200, {"status": "issue changed", "wake": True})
    wait_for(woken, "a cycle started by the webhook", pool.proc)
    assert pool.hook("github", {"action": "labeled"}, kind="issues", delivery="d-2")[1]["wake"] is False, "replayed"
    assert pool.hook("jit", {"type": "issue_state_changed", "id": "e-2", "from": "backlog", "to": "ready"})[0] == 200
    wait_for(lambda: len(woken()) == 2, "a cycle started by the jit event", pool.proc)

    hooks = pool.of("webhook")
    assert [(h["source"], h["status"], h["wake"]) for h in hooks] == [
        ("github", 401, False), ("github", 401, False), ("jit", 401, False), ("github", 200, False),
        ("github", 202, False), ("jit", 202, False), ("github", 200, True), ("github", 200, False), ("jit", 200, True),
    ]  # fmt: skip
    assert stop(pool) == 128 + signal.SIGTERM
    assert_stable_log_keys(pool.events())


LOG_KEYS = {
    "logs": {"log_dir"},
    "watch": {"paths"},
    "listen": {"url", "webhooks", "probe_url"},
    "sweep": {"issue_id", "short_id", "killed"},
    "start": {"store", "agents", "poll_interval_secs"},
    "cycle": {"trigger", "claimed", "ready_issues", "oldest_ready_age_seconds", "duration_seconds", "error"},
    "status": {"agents", "settled"},
    "claim": {"agent", "assignee", "issue_id", "short_id", "priority", "attempt", "busy", "capacity"},
    "webhook": {"source", "kind", "action", "delivery", "status", "wake", "reply"},
    "warning": {"warning"},
}
LOG_KEYS["settle"] = LOG_KEYS["claim"] | {"outcome", "exit_code", "duration_seconds", "reason"}
LOG_KEYS["claim_lost"] = LOG_KEYS["claim"] | {"reason"}
LOG_KEYS["settle_retry"] = LOG_KEYS["claim"] | {"error", "retry_in_seconds"}


def assert_stable_log_keys(events: list[dict]) -> None:
    for event in events:
        assert set(event) == {"ts", "level", "message", "event"} | LOG_KEYS[event["event"]], event
        assert event["level"] in ("info", "warning", "error") and isinstance(event["message"], str)
        assert event["ts"].endswith("Z")


def test_the_body_size_and_length_rules(tmp_path: Path, new_store, pools) -> None:
    store, _ = new_store()
    pool_config(tmp_path / "dispatch.toml", "true")
    pool = pools(tmp_path, "--jit-dir", str(store.root))
    for length, expected in ((1 << 30, 413), (MAX_BODY + 1, 413)):
        conn = http.client.HTTPConnection(pool.host, pool.port, timeout=10)
        try:  # a declared length over the cap is refused before anything is read
            conn.putrequest("POST", "/webhook/github")
            conn.putheader("Content-Length", str(length))
            conn.endheaders()
            assert conn.getresponse().status == expected
        finally:
            conn.close()
    conn = http.client.HTTPConnection(pool.host, pool.port, timeout=10)
    try:
        conn.putrequest("POST", "/webhook/jit")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        conn.send(b"0\r\n\r\n")
        assert conn.getresponse().status == 411
    finally:
        conn.close()
    largest = b"{" + b" " * (MAX_BODY - 2) + b"}"  # exactly at the cap: read and handled
    headers = {"X-Hub-Signature-256": sign(SECRET.encode(), largest), "X-GitHub-Event": "gollum"}
    assert pool.request("POST", "/webhook/github", largest, headers)[0] == 202
    assert pool.get("/healthz")[0] == 200, "still serving"


def test_without_a_secret_the_webhooks_are_off(tmp_path: Path, new_store, pools) -> None:
    store, _ = new_store()
    pool_config(tmp_path / "dispatch.toml", "true")
    pool = pools(tmp_path, "--jit-dir", str(store.root), secret=None)
    assert pool.of("listen")[0]["webhooks"] is False
    assert pool.hook("github", {"zen": "x"}, kind="ping")[0] == 404
    assert pool.get("/healthz")[0] == 200


def test_the_commands_never_see_the_webhook_secret(tmp_path: Path, new_store, pools) -> None:
    store, (issue,) = new_store(NewIssue("print the environment"))
    dump = tmp_path / "env.txt"
    pool_config(tmp_path / "dispatch.toml", f"env > {dump}")
    pool = pools(tmp_path, "--jit-dir", str(store.root))
    wait_for(lambda: pool.of("settle"), "the run", pool.proc)
    assert "JIT_ISSUE_ID=" + issue in dump.read_text()
    assert SECRET not in dump.read_text()


# --------------------------------------------------------------------------- wake-ups
def test_a_change_to_the_store_wakes_the_pool_long_before_the_poll(tmp_path: Path, new_store, pools) -> None:
    store, _ = new_store()
    ran = tmp_path / "ran.txt"
    pool_config(tmp_path / "dispatch.toml", f"echo $JIT_ISSUE_ID >> {ran}")
    pool = pools(tmp_path, "--jit-dir", str(store.root))
    wait_for(lambda: pool.of("cycle"), "the first (empty) cycle", pool.proc)
    issue_id = make_ready_later(store.root)
    written = time.monotonic()
    wait_for(lambda: ran.exists() and issue_id in ran.read_text(), "the new issue to run", pool.proc)
    assert time.monotonic() - written < LONG_POLL / 10
    assert pool.of("claim")[0]["issue_id"] == issue_id
    triggers = [c["trigger"] for c in pool.of("cycle")]
    assert triggers[0] == "start" and "store" in triggers and "poll" not in triggers
    wait_for(lambda: read_issue(store.root, issue_id)["state"] == "done", "the settle", pool.proc)


def test_a_signed_push_wakes_a_remote_pool_which_fetches_first(tmp_path: Path, remote_factory, pools) -> None:
    remote = remote_factory([NewIssue("for a person", labels=("needs:human",))])
    work = remote.clone(tmp_path / "work")
    ran = tmp_path / "ran.txt"
    pool_config(work / "dispatch.toml", f"echo $JIT_ISSUE_ID >> {ran}")
    pool = pools(work, "--sync", "git")
    assert pool.of("watch") == [], "remote mode watches nothing on disk"
    wait_for(lambda: pool.of("cycle"), "the first (empty) cycle", pool.proc)
    # Another machine adds an issue and pushes it; the pool's checkout knows nothing of it.
    other = remote.clone(tmp_path / "other")
    issue_id = make_ready_later(other / ".jit")
    git(other, "add", "-A")
    git(other, "commit", "-q", "-m", "a new issue")
    git(other, "push", "-q", "origin", "main")
    assert pool.hook("github", {"ref": "refs/heads/other"}, kind="push", delivery="p-0")[0] == 202
    status, reply = pool.hook("github", {"ref": "refs/heads/main"}, kind="push", delivery="p-1")
    assert (status, reply["wake"]) == (200, True)
    sent = time.monotonic()
    wait_for(lambda: ran.exists() and issue_id in ran.read_text(), "the pushed issue to run", pool.proc)
    assert time.monotonic() - sent < LONG_POLL / 10
    wait_for(lambda: remote.issue(issue_id)["state"] == "done", "the result pushed", pool.proc)
    assert [c["trigger"] for c in pool.of("cycle")][:2] == ["start", "webhook"]


def test_a_merged_pull_request_webhook_finishes_the_waiting_delivery_at_once(
    tmp_path: Path, remote_factory, pools
) -> None:
    """docs/delivery.md#webhooks: the pool delivers, the work is merged; the signed `pull_request`
    `closed` delivery wakes the pool long before its poll interval, and its cycle finds the merge."""
    from delivery_runs import merge

    remote = remote_factory([NewIssue("first")])
    work = remote.clone(tmp_path / "work", shallow=False)
    pool_config(work / "dispatch.toml", "echo A > a.txt", extra='deliver = "branch"')
    pool = pools(work)
    (issue_id,) = remote.ids
    wait_for(lambda: read_issue(work / ".jit", issue_id)["state"] == "gated", "the delivery", pool.proc)
    branch = read_issue(work / ".jit", issue_id)["context"]["dispatch.branch"]

    def quiet() -> bool:  # the cycles its own writes woke are over: nothing else wakes it before the poll
        cycles = len(pool.of("cycle"))
        time.sleep(1.0)
        return len(pool.of("cycle")) == cycles

    wait_for(quiet, "the pool to go quiet after its own writes", pool.proc)
    merge(remote, tmp_path, branch, "squash")
    time.sleep(2.0)  # nothing but the webhook would wake the pool now
    assert read_issue(work / ".jit", issue_id)["state"] == "gated"
    payload = json.loads((Path(__file__).parents[1] / "fixtures/webhooks/pull_request.closed.merged.json").read_text())
    status, reply = pool.hook("github", payload, kind="pull_request", delivery="m-1")
    assert (status, reply) == (200, {"status": "pull request merged", "wake": True})
    sent = time.monotonic()
    wait_for(lambda: read_issue(work / ".jit", issue_id)["state"] == "done", "the merge noticed", pool.proc)
    assert time.monotonic() - sent < LONG_POLL / 10
    assert "webhook" in [c["trigger"] for c in pool.of("cycle")]  # the store watcher may wake one more cycle


# --------------------------------------------------------------------------- metrics
def test_metrics_after_known_runs(tmp_path: Path, new_store, pools) -> None:
    specs = [
        NewIssue("passes", "critical"),
        NewIssue("passes too", "high"),
        NewIssue("fails", "normal", labels=("kind:broken",)),
        NewIssue("for a person", "low", labels=("needs:human",), created_at="2026-01-01T00:00:00Z"),
    ]
    store, ids = new_store(*specs)
    pool_config(tmp_path / "dispatch.toml", 'case "$JIT_ISSUE_LABELS" in *kind:broken*) exit 3;; esac', capacity=3)
    pool = pools(tmp_path, "--jit-dir", str(store.root))
    wait_for(lambda: len(pool.of("settle")) == 3, "three runs settled", pool.proc)
    wait_for(lambda: pool.metrics().get(("jit_dispatch_ready_issues", ())) == 1, "the queue after the runs", pool.proc)
    m = pool.metrics()
    agent = (("agent", "w"),)
    assert m[("jit_dispatch_claims_total", agent)] == 3
    assert m[("jit_dispatch_settled_total", (("agent", "w"), ("outcome", "done")))] == 2
    assert m[("jit_dispatch_settled_total", (("agent", "w"), ("outcome", "parked")))] == 1  # max_attempts = 1
    assert m[("jit_dispatch_running", agent)] == 0
    assert m[("jit_dispatch_capacity", agent)] == 3
    assert m[("jit_dispatch_command_duration_seconds_count", (("agent", "w"), ("outcome", "done")))] == 2
    inf = (("agent", "w"), ("le", "+Inf"), ("outcome", "parked"))
    assert m[("jit_dispatch_command_duration_seconds_bucket", inf)] == 1
    assert m[("jit_dispatch_cycle_errors_total", ())] == 0
    # The one issue left is for a person: dispatchable (no agent filter), waiting since 2026-01-01.
    age = m[("jit_dispatch_oldest_ready_age_seconds", ())]
    created = time.mktime((2026, 1, 1, 0, 0, 0, 0, 0, 0)) - time.timezone
    assert abs(age - (time.time() - created)) < 120, age
    assert "dispatch.parked_at" in read_issue(store.root, ids[2])["context"]

    # jit (or the dispatcher's gate runner) records a failed gate: the watcher counts it.
    with (store.root / "events.jsonl").open("a") as handle:
        handle.write(json.dumps({"type": "gate_failed", "id": "0513524d-223e-4850-87d0-2a386ac9cfbb",
                                 "issue_id": ids[0], "timestamp": "2026-01-07T19:27:55.406186429Z",
                                 "gate_key": "clippy", "updated_by": None}) + "\n")  # fmt: skip
    gate = ("jit_dispatch_gate_failures_total", (("gate", "clippy"),))
    wait_for(lambda: pool.metrics().get(gate) == 1, "the gate failure counted", pool.proc)

    # A store that cannot be read: the cycle fails, is counted, readiness drops; the pool lives on.
    index = store.root / "index.json"
    good = index.read_bytes()
    index.write_text("{ not json")
    wait_for(lambda: pool.metrics()[("jit_dispatch_cycle_errors_total", ())] >= 1, "a failed cycle", pool.proc)
    status, body = pool.get("/readyz")
    assert status == 503 and b"last cycle failed" in body
    assert pool.get("/healthz")[0] == 200, "alive though not ready"
    index.write_bytes(good)
    wait_for(lambda: pool.get("/readyz")[0] == 200, "ready again once the store is readable", pool.proc)
    assert stop(pool) == 128 + signal.SIGTERM
    events = pool.events()
    assert_stable_log_keys(events)
    assert {e["event"] for e in events} >= {"start", "claim", "settle", "cycle", "watch", "listen"}
    failed = [e for e in events if e["event"] == "cycle" and e["error"]]
    assert failed and failed[0]["trigger"] == "store" and "index.json" in failed[0]["error"]


# --------------------------------------------------------------------------- health of the loop, in-process
def test_healthz_fails_when_the_loop_stalls_or_stops(tmp_path: Path, new_store) -> None:
    from jit_dispatch.engine.dispatch import Request
    from jit_dispatch.engine.pool import Pool, Slot
    from jit_dispatch.process.child import CancelToken
    from jit_dispatch.service.http import App, Server
    from jit_dispatch.service.metrics import PoolMetrics

    store, _ = new_store()
    pool = Pool(store, [Slot("w", 1, Request("agent:w", "true"))], cancel=CancelToken(), poll_interval=1,
                log_dir=tmp_path, base_env=os.environ, sinks=[])  # fmt: skip
    server = Server(("127.0.0.1", 0), App(pool, PoolMetrics(), None)).start()
    try:
        running = Client("127.0.0.1", server.server_address[1])
        assert running.get("/readyz") == (503, b"no cycle yet\n")
        pool.run(once=True)
        pool._stopped = False  # as if the loop were still going, but silent for too long
        pool._tick -= pool.stall_after + 1
        status, body = running.get("/healthz")
        assert status == 503 and b"has not come round" in body
        pool._stopped = True
        assert running.get("/healthz") == (503, b"the pool has stopped\n")
    finally:
        server.close()


# --------------------------------------------------------------------------- bad input
def test_listen_mistakes_are_one_clear_line(tmp_path: Path, new_store) -> None:
    store, _ = new_store()
    pool_config(tmp_path / "dispatch.toml", "true")
    base = [sys.executable, "-m", "jit_dispatch", "start", "--jit-dir", str(store.root)]
    run = lambda *a, **kw: subprocess.run([*base, *a], cwd=tmp_path, capture_output=True, text=True, timeout=30, **kw)  # noqa: E731
    for value in ("nonsense", "host:99999", "::1:9180"):
        result = run("--listen", value)
        assert result.returncode == 2 and "--listen" in result.stderr and "Traceback" not in result.stderr, value
    pool_config(tmp_path / "dispatch.toml", "true", extra='listen = "localhost:http"')
    result = run()
    assert result.returncode == 2
    assert "dispatch.toml:3: listen:" in result.stderr and result.stderr.count("\n") == 1
    pool_config(tmp_path / "dispatch.toml", "true", extra='listen = "127.0.0.1:0"')  # the key, when valid, is used
    result = run("--once")
    assert result.returncode == 0 and "jit-dispatch: listening on http://127.0.0.1:" in result.stdout, result.stderr
    pool_config(tmp_path / "dispatch.toml", "true")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run("--listen", f"127.0.0.1:{taken.getsockname()[1]}", env=clean_env())
    assert result.returncode == 2 and "--listen: cannot listen on 127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- no cost when unused
PROBE = """\
import json, sys
from jit_dispatch.cli.main import main
try:
    main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
watched = ("jit_dispatch.service", "prometheus_client", "http.server", "socketserver")
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "loaded": sorted(m for m in sys.modules if m.startswith(watched))}, out)
"""


def probe(cwd: Path, *argv: str) -> dict:
    report = cwd / "probe.json"
    proc = subprocess.run([sys.executable, "-c", PROBE, str(report), *argv], cwd=cwd, env=clean_env(),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert report.exists(), proc.stderr
    return json.loads(report.read_text())


def test_once_never_imports_the_service_code(tmp_path: Path, new_store) -> None:
    store, (first, second) = new_store(NewIssue("one", "high"), NewIssue("two"))
    pool_config(tmp_path / "dispatch.toml", "true")  # a config present: `once` reads it, still no service
    assert probe(tmp_path, "once", "--agent", "w", "--jit-dir", str(store.root)) == {"code": 0, "loaded": []}
    assert read_issue(store.root, first)["state"] == "done", "the probe really dispatched"
    # The control: the same probe sees them loaded by `start --listen`.
    started = probe(tmp_path, "start", "--once", "--listen", "127.0.0.1:0", "--jit-dir", str(store.root))
    assert started["code"] == 0
    assert {"jit_dispatch.service.http", "jit_dispatch.service.metrics", "prometheus_client", "http.server"} <= set(
        started["loaded"]
    )
    assert read_issue(store.root, second)["state"] == "done"


# --------------------------------------------------------------------------- Kubernetes Indexed Job fan-out
def test_an_indexed_jobs_completion_index_counts_as_the_spread_index(tmp_path: Path, new_store) -> None:
    store, _ = new_store(*(NewIssue(f"same priority {n}", created_at=f"2026-01-01T00:00:0{n}Z") for n in range(4)))
    copies = {name: tmp_path / name / ".jit" for name in ("job", "flags", "first")}
    for copy in copies.values():
        shutil.copytree(store.root, copy)
    once = ["once", "--agent", "k8s", "--command", "true", "--json"]

    def claimed(root: Path, *args: str, **env: str) -> str:
        result = run_cli(*once, "--jit-dir", str(root), *args, env=clean_env(**env))
        assert result.returncode == 0, result.stderr
        return result.json["issue_id"]

    by_job = claimed(copies["job"], JOB_COMPLETION_INDEX="1", JIT_DISPATCH_SPREAD_TOTAL="2")
    assert by_job == claimed(copies["flags"], "--spread-index", "1", "--spread-total", "2")
    assert by_job != claimed(copies["first"], JOB_COMPLETION_INDEX="0", JIT_DISPATCH_SPREAD_TOTAL="2")
    # The Action's variable and the flag still win over the pod's index.
    result = run_cli(*once, "--jit-dir", str(store.root), "--dry-run",
                     env=clean_env(JOB_COMPLETION_INDEX="3", JIT_DISPATCH_SPREAD_INDEX="0"))  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_a_completion_index_without_the_total_is_one_clear_line(tmp_path: Path, new_store) -> None:
    store, _ = new_store(NewIssue("x"))
    result = run_cli("once", "--agent", "k8s", "--command", "true", "--jit-dir", str(store.root),
                     env=clean_env(JOB_COMPLETION_INDEX="2"))  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "jit-dispatch: error: --spread-index: 2 (from JOB_COMPLETION_INDEX) must be smaller than --spread-total (1); "
        "set JIT_DISPATCH_SPREAD_TOTAL to the Indexed Job's completions\n"
    )
    assert read_issue(store.root, store.issue_ids()[0])["state"] == "ready", "nothing claimed"


def test_the_service_demo_runs(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "jit_dispatch.demo", "--service"], cwd=tmp_path, env=clean_env(),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.count("200 ok") == 2 and "401 {" in out and '200 {"status": "issue changed", "wake": true}' in out
    assert 'jit_dispatch_settled_total{agent="demo-pool",outcome="done"} 5.0' in out
    assert "(exit 143 after SIGTERM)" in out


# --------------------------------------------------------------------------- slow and many clients
class IdlePool:
    """The PoolView of a pool that is alive and ready and ignores wake-ups."""

    def alive(self) -> tuple[bool, str]:
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        return True, "ok"

    def wake(self, reason: str) -> None:
        pass

    def emit(self, event: str, **fields: Any) -> None:
        pass


@pytest.fixture
def server(monkeypatch):
    from jit_dispatch.service import http as service_http
    from jit_dispatch.service.metrics import PoolMetrics
    from jit_dispatch.service.webhooks import Receiver

    monkeypatch.setattr(service_http, "REQUEST_DEADLINE", 1.0, raising=False)
    monkeypatch.setattr(service_http, "MAX_CONNECTIONS", 4, raising=False)
    app = service_http.App(IdlePool(), PoolMetrics(), Receiver(SECRET.encode(), "main"))
    running = service_http.Server(("127.0.0.1", 0), app).start()
    yield running
    running.close()


def slow_post(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"POST /webhook/jit HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nX-Hub-Signature-256: sha256=0\r\n\r\n"
    )  # a signature (wrong, but only known at the end): an unsigned body is refused before it is read
    return sock


def test_a_client_trickling_its_body_is_cut_off_at_the_request_deadline(server) -> None:
    sock = slow_post(server.server_address[1])
    try:
        deadline = time.monotonic() + 8 * 1.0  # eight deadlines of trickling, a byte every 0.1 s
        answer: bytes | None = None  # what the server sent: b"" once it closed the connection
        for _ in range(ROUNDS):
            if time.monotonic() > deadline:
                break
            try:
                sock.sendall(b" ")
                sock.settimeout(0.1)
                answer = sock.recv(4096)
                break  # the server answered or closed the connection
            except TimeoutError:
                continue
            except OSError:
                answer = b"reset"
                break
        assert answer is not None, "the connection was still held open"
    finally:
        sock.close()


def test_connections_beyond_the_cap_wait_for_a_free_slot(server, monkeypatch) -> None:
    from jit_dispatch.service import http as service_http

    monkeypatch.setattr(service_http, "REQUEST_DEADLINE", 60.0, raising=False)  # held until they close
    port = server.server_address[1]
    held = [slow_post(port) for _ in range(4)]
    try:
        waiting = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
        waiting.request("GET", "/healthz")
        with pytest.raises(TimeoutError):  # four connections hold every slot: no thread for a fifth
            waiting.getresponse()
        held.pop().close()  # a slot frees: the waiting request is served on its own connection
        waiting.sock.settimeout(WAIT)
        response = waiting.getresponse()
        assert (response.status, response.read()) == (200, b"ok\n")
        waiting.close()
    finally:
        for sock in held:
            sock.close()


def test_a_burst_of_signed_webhooks_is_answered_in_full(server) -> None:
    import threading

    port, statuses = server.server_address[1], []

    def post(n: int) -> None:
        body = json.dumps({"type": "issue_completed", "id": f"burst-{n}"}).encode()
        try:
            status, _, _ = Client("127.0.0.1", port).request(
                "POST", "/webhook/jit", body, {"X-Hub-Signature-256": sign(SECRET.encode(), body)}
            )
        except OSError as exc:  # a reset: the burst overflowed the listen backlog
            status = type(exc).__name__
        statuses.append(status)

    threads = [threading.Thread(target=post, args=(n,)) for n in range(150)]  # 150 at once, 4 slots
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT)
    assert sorted(statuses, key=str) == [200] * 150


def test_the_queue_figures_leave_out_the_issues_claimed_in_the_cycle(tmp_path: Path, new_store) -> None:
    from jit_dispatch.engine.dispatch import Request
    from jit_dispatch.engine.pool import Pool, Slot
    from jit_dispatch.process.child import CancelToken

    store, _ = new_store(
        NewIssue("waiting since January", "critical", created_at="2026-01-01T00:00:00Z"),
        NewIssue("just arrived", "low"),
    )
    pool = Pool(store, [Slot("w", 1, Request("agent:w", "true"))], cancel=CancelToken(), poll_interval=1,
                log_dir=tmp_path, base_env=clean_env(), sinks=[])  # fmt: skip
    claimed, queue = pool.fill()
    pool._wait_for_runs()
    assert claimed == 1 and queue["ready_issues"] == 1
    assert queue["oldest_ready_age_seconds"] < 3600, "the January issue was claimed: the one left just arrived"
