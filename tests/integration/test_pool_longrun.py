"""The pool as a service that runs for months (issue 19): each finding reproduced with a real pool
process on a real store, the real jit binary where jit is involved, and real signals sent at
chosen moments.

Commands append `START <issue> <time>`, then `END …` (finished) or `STOP …` (stopped by a
signal) to a shared log, so a test can replay which runs of one issue overlapped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers import clean_env, read_issue
from jit_dispatch.domain import transitions
from jit_dispatch.process import runlock
from jit_dispatch.trackers.jit.files import atomic_write, dumps_event
from jit_dispatch.trackers.jit.store import JitStore, NewIssue
from real_jit import jit_binary

WAIT = 30.0  # seconds any single wait may take on a loaded machine


def traced(log: Path, seconds: float) -> str:
    """A command that logs its start, its end, and a stop by signal (its group gets the signal)."""
    return (
        f'echo "START {{issue_id}} $EPOCHREALTIME" >> {log}; '
        f"trap 'echo \"STOP {{issue_id}} $EPOCHREALTIME\" >> {log}; exit 143' TERM; "
        f'sleep {seconds} & wait $!; echo "END {{issue_id}} $EPOCHREALTIME" >> {log}'
    )


def config(path: Path, command: str, *, capacity: int = 2, poll: float = 600, extra: str = "") -> Path:
    path.write_text(textwrap.dedent(f"""\
        poll_interval_secs = {poll}
        max_attempts = 3
        {extra}
        [[agents]]
        id = "w"
        max_concurrent = {capacity}
        command = {json.dumps(command)}
        """))  # fmt: skip
    return path


def spawn(cwd: Path, root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    out = cwd / f"pool-{time.monotonic_ns()}.jsonl"
    with out.open("w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jit_dispatch", "start", "--log-format", "json", "--jit-dir", str(root), *args],
            cwd=cwd, env=env or clean_env(), stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return proc, out


def events_of(out: Path, kind: str) -> list[dict]:
    lines = out.read_text().splitlines()
    return [e for line in lines if line.startswith("{") and (e := json.loads(line))["event"] == kind]


def wait_for(predicate: Callable[[], object], what: str, proc: subprocess.Popen | None = None) -> object:
    deadline = time.monotonic() + WAIT
    while not (value := predicate()):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the pool exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def lines(log: Path, kind: str) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith(kind)] if log.exists() else []


def overlaps(log: Path) -> list[str]:
    """Runs of one issue that were alive at the same time (a run ends at its END or STOP line)."""
    per_issue: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for line in log.read_text().splitlines():
        kind, issue, at = line.split()
        per_issue[issue].append((float(at.replace(",", ".")), kind))
    found = []
    for issue, marks in per_issue.items():
        alive = 0
        for _, kind in sorted(marks, key=lambda m: (m[0], m[1] == "START")):
            alive += 1 if kind == "START" else -1
            if alive > 1:
                found.append(issue)
    return found


def write_stale_copy(root: Path, issue_id: str, before: bytes) -> None:
    """What jit's `issue update` does when it read the issue before our claim: the old file back, and its event."""
    atomic_write(root / "issues" / f"{issue_id}.json", before.decode())
    event = transitions.make_event("issue_updated", issue_id, transitions.format_timestamp(), fields=["labels"])
    with (root / "events.jsonl").open("ab") as handle:
        handle.write((dumps_event(event) + "\n").encode())


# --------------------------------------------------------------------------- 1. one issue, one run
def test_a_stale_copy_written_back_never_makes_the_pool_run_the_issue_twice(new_store, tmp_path: Path) -> None:
    store, (issue_id,) = new_store(NewIssue("long one"))
    root = store.root
    log = tmp_path / "runs.log"
    before = (root / "issues" / f"{issue_id}.json").read_bytes()
    proc, out = spawn(tmp_path, root, "--config", str(config(tmp_path / "dispatch.toml", traced(log, 3))))
    try:
        wait_for(lambda: lines(log, "START"), "the command to start", proc)
        write_stale_copy(root, issue_id, before)
        wait_for(lambda: read_issue(root, issue_id)["state"] == "done", "the issue to be done", proc)
    finally:
        stop(proc)
    assert overlaps(log) == [], log.read_text()
    assert len(lines(log, "START")) == 2, log.read_text()  # stopped, then claimed afresh once it had ended
    lost = events_of(out, "claim_lost")
    assert len(lost) == 1 and "took it back" in lost[0]["reason"], lost
    settles = [(e["outcome"], e["reason"]) for e in events_of(out, "settle")]
    assert settles[0][0] == "lost" and settles[0][1].endswith("command stopped"), settles
    assert settles[1][0] == "done", settles


def test_a_real_jit_label_edit_that_read_before_the_claim_never_runs_the_issue_twice(new_store, tmp_path: Path) -> None:
    """jit reads the issue, then waits for `.index.lock` (held here); it is stopped while the pool
    claims and starts the command, then continued: it writes back its copy from before the claim."""
    binary = jit_binary("newest")
    store, (issue_id,) = new_store(NewIssue("long one"))
    root = store.root
    log = tmp_path / "runs.log"
    with (root / ".index.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("JIT_")}, "JIT_LOCK_TIMEOUT": "120"}
        editor = subprocess.Popen(
            [str(binary), "issue", "update", issue_id, "--label", "component:db"],
            cwd=root.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        time.sleep(1.0)  # it has read the issue and is retrying the lock
        editor.send_signal(signal.SIGSTOP)
    proc, _ = spawn(tmp_path, root, "--config", str(config(tmp_path / "dispatch.toml", traced(log, 3))))
    try:
        try:
            wait_for(lambda: lines(log, "START"), "the command to start", proc)
        finally:
            editor.send_signal(signal.SIGCONT)
        output, _ = editor.communicate(timeout=60)
        assert editor.returncode == 0, output
        wait_for(lambda: read_issue(root, issue_id)["state"] == "done", "the issue to be done", proc)
    finally:
        stop(proc)
    assert overlaps(log) == [], log.read_text()
    assert len(lines(log, "START")) == 2, log.read_text()
    assert "component:db" in read_issue(root, issue_id)["labels"], "the person's edit is kept"
    validate = subprocess.run([str(binary), "validate"], cwd=root.parent, env=env, capture_output=True, text=True)
    assert validate.returncode == 0, validate.stdout + validate.stderr


def test_a_settle_compares_the_run_token_not_only_the_assignee(new_store) -> None:
    """Two runs of one agent share the assignee: the first one's settle must not complete the second's claim."""
    store, (issue_id,) = new_store(NewIssue("one"))
    from jit_dispatch.domain.selection import Filters

    first = JitStore.open(store.root)
    assert first.claim(issue_id, "agent:w", "host:1#a", Filters()) is not None
    before_claim = json.loads((store.root / "issues" / f"{issue_id}.json").read_text())
    before_claim.update(state="ready", assignee=None)
    atomic_write(store.root / "issues" / f"{issue_id}.json", json.dumps(before_claim, indent=2))
    second = JitStore.open(store.root)
    assert second.claim(issue_id, "agent:w", "host:2#b", Filters()) is not None
    assert first.heartbeat(issue_id, "agent:w") is False
    assert first.complete(issue_id, "agent:w").outcome == "lost"
    assert read_issue(store.root, issue_id)["state"] == "in_progress"
    assert second.complete(issue_id, "agent:w").outcome == "done"


# --------------------------------------------------------------------------- 2. a finished command's outcome is final
def test_a_signal_after_the_commands_exited_does_not_turn_them_into_cancellations(new_store, tmp_path: Path) -> None:
    """Each command exits 0 but leaves a background child holding its output: the signal lands in the drain."""
    store, ids = new_store(*(NewIssue(f"quick {n}") for n in range(4)))
    root = store.root
    log = tmp_path / "runs.log"
    command = (  # END is written by the child 0.3 s after the leader exited 0, while the drain waits
        f'echo "START {{issue_id}} $EPOCHREALTIME" >> {log}; sleep 0.5; '
        f'(sleep 0.3; echo "END {{issue_id}} $EPOCHREALTIME" >> {log}; sleep 8) & exit 0'
    )
    proc, out = spawn(tmp_path, root, "--config", str(config(tmp_path / "dispatch.toml", command, capacity=4)))
    try:
        wait_for(lambda: len(lines(log, "END")) == 4, "the four commands to exit", proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    finally:
        stop(proc)
    settles = {e["issue_id"]: (e["outcome"], e["reason"]) for e in events_of(out, "settle")}
    assert settles == {issue_id: ("done", None) for issue_id in ids}, settles
    assert [read_issue(root, i)["state"] for i in ids] == ["done"] * 4


# --------------------------------------------------------------------------- 6. flat memory
def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.slow
def test_the_pool_keeps_flat_memory_over_hundreds_of_runs_with_large_outputs(new_store, tmp_path: Path) -> None:
    """Every run prints 40 KB (its 32 KiB tail used to be kept for ever): RSS after warm-up stays flat."""
    total, warm = 500, 100
    store, _ = new_store(*(NewIssue(f"chatty {n}") for n in range(total)))
    root = store.root
    command = 'head -c 40000 /dev/zero | tr "\\0" x'
    proc, out = spawn(tmp_path, root, "--config", str(config(tmp_path / "dispatch.toml", command, capacity=4)))
    try:

        def settled(n: int) -> bool:
            return out.read_text().count('"event": "settle"') >= n

        wait_for(lambda: settled(warm), f"{warm} runs", proc)
        after_warm_up = rss_kib(proc.pid)
        deadline = time.monotonic() + 300
        while not settled(total) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert settled(total), "the pool did not get through the runs"
        at_end = rss_kib(proc.pid)
    finally:
        stop(proc)
    assert at_end - after_warm_up < 10 * 1024, f"RSS grew from {after_warm_up} to {at_end} KiB"


SECRET = "s3cr3t-for-tests"


def listening(cwd: Path, root: Path, command: str = "true", *args: str) -> tuple[subprocess.Popen, Path, int]:
    """A pool serving on a loopback port (webhooks on); returns it, its log and the port."""
    path = config(cwd / "dispatch.toml", command)
    env = clean_env(JIT_DISPATCH_WEBHOOK_SECRET=SECRET)
    proc, out = spawn(cwd, root, "--config", str(path), "--listen", "127.0.0.1:0", *args, env=env)
    try:
        url = wait_for(lambda: events_of(out, "listen"), "the server to listen", proc)[0]["url"]  # type: ignore[index]
    except BaseException:
        stop(proc)
        raise
    return proc, out, int(url.rsplit(":", 1)[1])


def test_unsigned_webhook_bodies_are_never_buffered(new_store, tmp_path: Path) -> None:
    """A request without a signature is refused before its body is read; 5 MiB bodies with a wrong
    signature from 32 clients at once do not raise the pool's memory by their size."""
    store, _ = new_store()
    proc, _, port = listening(tmp_path, store.root)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"POST /webhook/jit HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 401"), "answered before any of the body was sent"
        before = rss_kib(proc.pid)
        body = b"x" * (5 * 1024 * 1024 - 1)
        head = (
            b"POST /webhook/github HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256=00\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )

        def post() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
                sock.sendall(head)
                sock.sendall(body[: len(body) - 1])
                time.sleep(1.0)  # every body is in the pool at once, but for its last byte
                sock.sendall(body[-1:])
                return sock.recv(100)

        with ThreadPoolExecutor(32) as workers:
            answers = list(workers.map(lambda _: post(), range(32)))
        grown = rss_kib(proc.pid) - before
    finally:
        stop(proc)
    assert all(a.startswith(b"HTTP/1.1 401") for a in answers), answers[:3]
    assert grown < 32 * 1024, f"RSS grew by {grown} KiB for 32 wrongly signed 5 MiB bodies"


# --------------------------------------------------------------------------- 4. the registry, read per cycle
def test_gate_changes_apply_to_the_next_claim_without_a_restart(tmp_path: Path) -> None:
    """A gate defined after start releases the issue it held; a gate turned into a manual precheck holds
    the next issue that requires it (each was decided by the registry read at start)."""
    from gate_stores import gate, gated_repo

    root, (waiting,) = gated_repo(
        tmp_path,
        "newest",
        [gate("newest", "lint", "postcheck", "true")],
        NewIssue("needs review", gates_required=("review",)),
    )
    proc, out = spawn(tmp_path, root, "--config", str(config(tmp_path / "dispatch.toml", "true")))
    try:
        wait_for(lambda: events_of(out, "cycle"), "the first cycle", proc)
        registry = {"review": gate("newest", "review", "precheck", "true"), "lint": gate("newest", "lint", "precheck")}
        atomic_write(root / "gates.json", json.dumps({"gates": registry}, indent=2))
        wait_for(lambda: read_issue(root, waiting)["state"] == "done", "the issue a new gate let through", proc)
        (manual,) = JitStore.open(root).create_issues([NewIssue("needs lint", gates_required=("lint",))])
        wait_for(lambda: len(events_of(out, "cycle")) >= 4, "cycles after the new issue", proc)
        time.sleep(1.0)
    finally:
        stop(proc)
    assert read_issue(root, manual)["state"] == "ready", "held by its manual precheck, not run"
    assert manual not in {e["issue_id"] for e in events_of(out, "claim")}


# --------------------------------------------------------------------------- 5. promotion that never misses
def test_two_dependencies_finishing_together_always_promote_their_dependent(new_store, tmp_path: Path) -> None:
    """On a 3,000-issue store, the pool runs two dependencies at once; when both finish together, their
    dependent must become ready (it used to stay backlog: each settle trusted the other's append)."""
    store, (held,) = new_store(NewIssue("held elsewhere"))
    root = store.root
    from jit_dispatch.domain.selection import Filters

    assert store.claim(held, "agent:elsewhere", "elsewhere", Filters()) is not None
    store.create_issues(NewIssue(f"filler {n}", dependencies=(held,)) for n in range(3000))  # all backlog
    proc, out = spawn(tmp_path, root, "--config", str(config(tmp_path / "dispatch.toml", "sleep 0.3")))
    try:
        for round_ in range(3):
            first, second = JitStore.open(root).create_issues([NewIssue(f"dep a{round_}"), NewIssue(f"dep b{round_}")])
            (dependent,) = JitStore.open(root).create_issues(
                [NewIssue(f"after {round_}", dependencies=(first, second))]
            )
            assert read_issue(root, dependent)["state"] == "backlog"

            def done(dependent: str = dependent) -> bool:
                return read_issue(root, dependent)["state"] == "done"

            wait_for(done, f"round {round_}'s dependent done", proc)
    finally:
        stop(proc)
    assert [e for e in events_of(out, "settle") if e["outcome"] != "done"] == []


# --------------------------------------------------------------------------- 7. settles that fail are retried
def http_get(port: int, path: str) -> tuple[int, str]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_a_settle_that_fails_is_retried_until_it_lands_and_readyz_says_so(new_store, tmp_path: Path) -> None:
    """jit's index lock is held for 6 s while two commands finish (lock timeout 1 s): both settles fail,
    are retried with backoff, and land once the lock is free; meanwhile /readyz is 503 and the failures
    are counted in jit_dispatch_cycle_errors_total."""
    store, ids = new_store(NewIssue("one"), NewIssue("two"))
    root = store.root
    log = tmp_path / "runs.log"
    path = config(tmp_path / "dispatch.toml", traced(log, 1))
    env = clean_env(JIT_DISPATCH_WEBHOOK_SECRET=SECRET, JIT_LOCK_TIMEOUT="1")
    proc, out = spawn(tmp_path, root, "--config", str(path), "--listen", "127.0.0.1:0", env=env)
    try:
        url = wait_for(lambda: events_of(out, "listen"), "the server to listen", proc)[0]["url"]  # type: ignore[index]
        port = int(url.rsplit(":", 1)[1])
        wait_for(lambda: len(lines(log, "START")) == 2, "both commands to start", proc)
        with (root / ".index.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            wait_for(lambda: len(events_of(out, "settle_retry")) >= 2, "the settles to fail", proc)
            status, body = http_get(port, "/readyz")
            assert status == 503 and "settle" in body, body
            time.sleep(3)
        wait_for(lambda: all(read_issue(root, i)["state"] == "done" for i in ids), "both issues done", proc)
        wait_for(lambda: http_get(port, "/readyz")[0] == 200, "ready again", proc)
        metrics = http_get(port, "/metrics")[1]
    finally:
        stop(proc)
    errors = [line for line in metrics.splitlines() if line.startswith("jit_dispatch_cycle_errors_total")]
    assert errors and float(errors[0].split()[-1]) >= 2, errors
    assert {e["outcome"] for e in events_of(out, "settle")} == {"done"}


# --------------------------------------------------------------------------- 3. no command outlives its dispatcher
ORPHAN_COMMAND = 'sleep 30 & echo "$$ $!" >> {pids}; wait'  # the shell (the leader) and its child


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def read_pids(path: Path) -> list[tuple[int, int]]:
    return (
        [(int(a), int(b)) for a, b in (line.split() for line in path.read_text().splitlines())] if path.exists() else []
    )


def until_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + 5
    while (left := [p for p in pids if pid_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def reap_rows(root: Path, env: dict[str, str]) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-m", "jit_dispatch", "reap", "--jit-dir", str(root), "--older-than", "1s", "--json"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["reaped"]


def kill_all(pairs: list[tuple[int, int]]) -> None:
    for pid in {p for pair in pairs for p in pair}:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def test_a_sigkilled_pool_takes_its_commands_with_it_and_reap_spares_the_living(new_store, tmp_path: Path) -> None:
    """SIGKILL the pool while two commands (timeout 5 s) run: each command's leader dies with it
    (PR_SET_PDEATHSIG); a child the leader left holds the run lock, so `reap` does not release its
    issue; the next pool sweeps those children, and only then does `reap` release the issues."""
    store, ids = new_store(NewIssue("one"), NewIssue("two"))
    root = store.root
    pids = tmp_path / "pids"
    env = clean_env(JIT_DISPATCH_RUN_DIR=str(tmp_path / "runs"))
    path = config(tmp_path / "dispatch.toml", ORPHAN_COMMAND.format(pids=pids), extra='timeout = "5s"')
    proc, _ = spawn(tmp_path, root, "--config", str(path), env=env)
    pairs: list[tuple[int, int]] = []
    try:
        wait_for(lambda: len(read_pids(pids)) == 2, "both commands to run", proc)
        pairs = read_pids(pids)
        proc.kill()
        proc.wait()
        assert until_gone([leader for leader, _ in pairs]) == [], "a command's leader outlived the pool"
        time.sleep(1.2)  # the claims are now older than reap's 1 s
        rows = reap_rows(root, env)
        assert [row["outcome"] for row in rows] == ["skipped (alive: its command still runs on this machine)"] * 2
        assert [read_issue(root, i)["state"] for i in ids] == ["in_progress"] * 2
        again, out = spawn(tmp_path, root, "--config", str(path), "--once", env=env)
        again.wait(timeout=60)
        assert until_gone([child for _, child in pairs]) == [], "the next pool did not sweep the orphans"
        assert sorted(e["issue_id"] for e in events_of(out, "sweep")) == sorted(ids)
        assert {row["outcome"] for row in reap_rows(root, env)} == {"released"}
    finally:
        stop(proc)
        kill_all(pairs)


def test_a_sigkilled_once_takes_its_command_with_it(new_store, tmp_path: Path, monkeypatch) -> None:
    store, (issue_id,) = new_store(NewIssue("one"))
    root = store.root
    pids = tmp_path / "pids"
    env = clean_env(JIT_DISPATCH_RUN_DIR=str(tmp_path / "runs"))
    argv = [sys.executable, "-m", "jit_dispatch", "once", "--jit-dir", str(root), "--agent", "w",
            "--timeout", "5s", "--command", ORPHAN_COMMAND.format(pids=pids)]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pairs: list[tuple[int, int]] = []
    try:
        wait_for(lambda: read_pids(pids), "the command to run", proc)
        pairs = read_pids(pids)
        proc.kill()
        proc.wait()
        assert until_gone([pairs[0][0]]) == [], "the command's leader outlived `once`"
        time.sleep(1.2)
        assert [row["outcome"] for row in reap_rows(root, env)] == [
            "skipped (alive: its command still runs on this machine)"
        ]
        assert read_issue(root, issue_id)["state"] == "in_progress"
        monkeypatch.setenv("JIT_DISPATCH_RUN_DIR", str(tmp_path / "runs"))
        assert runlock.sweep() == [(issue_id, [pairs[0][1]])], "the orphan found by its lock and killed"
        assert until_gone([pairs[0][1]]) == []
    finally:
        stop(proc)
        kill_all(pairs)


# --------------------------------------------------------------------------- 8. probes that cannot be starved
def test_probes_on_the_probe_listener_are_answered_while_slow_clients_hold_the_webhook_port(
    new_store, tmp_path: Path
) -> None:
    """100 clients that never finish their headers hold the webhook port; every probe on the
    `--probe-listen` port is answered, and that port takes no webhook. (Figures: bench/probe_starvation.py.)"""
    store, _ = new_store()
    proc, out, port = listening(tmp_path, store.root, "true", "--probe-listen", "127.0.0.1:0")
    slow: list[socket.socket] = []
    try:
        probe_port = int(events_of(out, "listen")[0]["probe_url"].rsplit(":", 1)[1])
        for _ in range(100):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"POST /webhook/github HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            slow.append(sock)
        for path in ("/healthz", "/readyz", "/metrics") * 5:
            status, _ = http_get(probe_port, path)
            assert status == 200, path
        status, _ = http_get(probe_port, "/webhook/github")
        assert status == 404, "the probe listener serves no webhook"
    finally:
        for sock in slow:
            sock.close()
        stop(proc)


def test_a_connection_that_does_not_finish_its_headers_is_cut_at_the_header_deadline(monkeypatch) -> None:
    from jit_dispatch.service import http as service_http
    from jit_dispatch.service.metrics import PoolMetrics
    from jit_dispatch.service.webhooks import Receiver

    monkeypatch.setattr(service_http, "HEADER_DEADLINE", 0.5)
    monkeypatch.setattr(service_http, "REQUEST_DEADLINE", 60.0)

    class Idle:
        def alive(self) -> tuple[bool, str]:
            return True, "ok"

        ready = alive

        def wake(self, reason: str) -> None:
            pass

        def emit(self, event: str, **fields: object) -> None:
            pass

    app = service_http.App(Idle(), PoolMetrics(), Receiver(SECRET.encode(), None))
    server = service_http.Server(("127.0.0.1", 0), app).start()
    try:
        with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=20) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            with contextlib.suppress(OSError):
                while sock.recv(100):
                    pass
            waited = time.monotonic() - started
    finally:
        server.close()
    assert waited < 30, f"the connection stayed open {waited:.1f}s (the request deadline is 60 s)"


# --------------------------------------------------------------------------- 9. smaller findings
def test_a_corrupt_issue_file_is_warned_about_once_in_the_pool_log(new_store, tmp_path: Path) -> None:
    store, (broken, _) = new_store(NewIssue("broken"), NewIssue("fine"))
    root = store.root
    (root / "issues" / f"{broken}.json").write_text("{ not json")
    proc, out, _ = listening(tmp_path, root, "true")
    try:
        for n in range(4):  # more cycles: the store changes
            JitStore.open(root).create_issues([NewIssue(f"more {n}")])
            wait_for(lambda n=n: len(events_of(out, "settle")) >= n + 2, f"run {n}", proc)
    finally:
        stop(proc)
    warnings = [e for e in events_of(out, "warning") if broken in e["warning"]]
    assert len(warnings) == 1, warnings
    assert warnings[0]["level"] == "warning" and warnings[0]["message"].startswith("warning ")


def signed_jit_hook(port: int, n: int) -> int:
    import http.client

    from jit_dispatch.service.webhooks import sign

    body = json.dumps({"type": "issue_completed", "id": f"burst-{n}"}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/webhook/jit", body, {"X-Hub-Signature-256": sign(SECRET.encode(), body)})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_a_burst_of_webhooks_costs_a_few_cycles_not_one_each(new_store, tmp_path: Path) -> None:
    store, _ = new_store()
    proc, out, port = listening(tmp_path, store.root, "true")
    try:
        wait_for(lambda: events_of(out, "cycle"), "the first cycle", proc)
        with ThreadPoolExecutor(4) as workers:
            statuses = list(workers.map(lambda n: signed_jit_hook(port, n), range(300)))
        time.sleep(1.5)  # the last coalesced cycle
    finally:
        stop(proc)
    assert statuses == [200] * 300
    woken = [c for c in events_of(out, "cycle") if c["trigger"] == "webhook"]
    assert 1 <= len(woken) <= 30, f"{len(woken)} cycles for 300 webhooks"
