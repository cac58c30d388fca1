"""The webhook rules without a server: signatures, what wakes the pool, redeliveries; and the store
watcher's reading of appended events (real files)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import pytest

from jit_dispatch.service.watch import EventTail, StoreWatcher
from jit_dispatch.service.webhooks import Deliveries, Receiver, sign, signature_ok

SECRET = b"It's a Secret to Everybody"


def test_signature_matches_githubs_documented_example() -> None:
    # docs.github.com, "Validating webhook deliveries": this secret and body give this signature.
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign(SECRET, b"Hello, World!") == expected
    assert signature_ok(SECRET, b"Hello, World!", expected)


@pytest.mark.parametrize(
    "header",
    [None, "", "sha256=", "sha1=757107ea0eb2509fc211221cce984b8a37570b6d", "sha256=" + "0" * 64, "sha256=ünïcödé"],
)
def test_missing_or_wrong_signatures_are_refused(header: str | None) -> None:
    assert not signature_ok(SECRET, b"Hello, World!", header)


def test_a_signature_of_another_body_or_secret_is_refused() -> None:
    assert not signature_ok(SECRET, b"Hello, World?", sign(SECRET, b"Hello, World!"))
    assert not signature_ok(SECRET, b"Hello, World!", sign(b"other", b"Hello, World!"))


def github(receiver: Receiver, kind: str, payload: dict, delivery: str | None = None, **extra: str):
    body = json.dumps(payload).encode()
    headers = {"X-Hub-Signature-256": sign(SECRET, body), "X-GitHub-Event": kind, **extra}
    if delivery:
        headers["X-GitHub-Delivery"] = delivery
    return receiver.github(headers, body)


@pytest.mark.parametrize(
    ("kind", "payload", "status", "wake"),
    [
        ("ping", {"zen": "Keep it logically awesome."}, 200, False),
        ("push", {"ref": "refs/heads/main"}, 200, True),
        ("push", {"ref": "refs/heads/feature"}, 202, False),
        ("push", {"ref": "refs/tags/main"}, 202, False),
        ("issues", {"action": "opened"}, 200, True),
        ("issues", {"action": "labeled"}, 200, True),
        ("issues", {"action": "unlabeled"}, 200, True),
        ("issues", {"action": "reopened"}, 200, True),
        ("issues", {"action": "closed"}, 200, True),
        ("issues", {"action": "edited"}, 202, False),
        ("issues", {"action": "assigned"}, 202, False),
        ("issue_comment", {"action": "created"}, 200, True),
        ("workflow_run", {"action": "completed"}, 202, False),
        ("star", {"action": "created"}, 202, False),
    ],
)
def test_which_github_events_wake_the_pool(kind: str, payload: dict, status: int, wake: bool) -> None:
    reply = github(Receiver(SECRET, "main"), kind, payload)
    assert (reply.status, reply.wake) == (status, wake)


def test_without_a_known_state_branch_every_push_wakes() -> None:
    assert github(Receiver(SECRET, None), "push", {"ref": "refs/heads/anything"}).wake


def test_a_form_encoded_delivery_is_read_like_json() -> None:
    body = urlencode({"payload": json.dumps({"action": "labeled"})}).encode()
    headers = {
        "X-Hub-Signature-256": sign(SECRET, body),
        "X-GitHub-Event": "issues",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    assert Receiver(SECRET, "main").github(headers, body).wake


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b"\xff\xfe", b'"a string"'])
def test_a_signed_body_that_is_no_json_object_is_a_bad_request(body: bytes) -> None:
    headers = {"X-Hub-Signature-256": sign(SECRET, body), "X-GitHub-Event": "issues"}
    reply = Receiver(SECRET, "main").github(headers, body)
    assert (reply.status, reply.wake) == (400, False)


def test_an_unsigned_request_is_refused_before_its_body_is_read() -> None:
    receiver = Receiver(SECRET, "main")
    body = json.dumps({"action": "opened"}).encode()
    reply = receiver.github({"X-GitHub-Event": "issues", "X-GitHub-Delivery": "d-1"}, body)
    assert (reply.status, reply.wake, reply.kind, reply.delivery) == (401, False, None, None)
    # The refused request did not burn its delivery id: the genuine one still counts.
    assert github(receiver, "issues", {"action": "opened"}, delivery="d-1").wake


def test_a_redelivered_webhook_is_acknowledged_but_does_nothing() -> None:
    receiver = Receiver(SECRET, "main")
    first = github(receiver, "issues", {"action": "opened"}, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    again = github(receiver, "issues", {"action": "opened"}, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    other = github(receiver, "issues", {"action": "opened"}, delivery="another")
    assert (first.status, first.wake) == (200, True)
    assert (again.status, again.wake, again.message) == (200, False, "duplicate delivery ignored")
    assert other.wake


def test_the_delivery_memory_is_bounded() -> None:
    deliveries = Deliveries(size=3)
    assert all(deliveries.first_time(d) for d in "abcd")
    assert not deliveries.first_time("d")
    assert deliveries.first_time("a"), "the oldest id was forgotten"


def test_the_delivery_memory_is_bounded_in_bytes_too() -> None:
    """The delivery header is not signed: one captured body replayed under huge ids must not pile up."""
    import tracemalloc

    deliveries = Deliveries(size=64)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(64):
            assert deliveries.first_time(f"{n:05d}" + "x" * 60_000)  # http.server takes header lines to 64 KiB
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 200_000, f"{kept} bytes kept for 64 ids"
    assert not deliveries.first_time("00063" + "x" * 60_000)


def jit(receiver: Receiver, event: dict, delivery: str | None = None):
    body = json.dumps(event).encode()
    headers = {"X-Hub-Signature-256": sign(SECRET, body)}
    if delivery:
        headers["X-GitHub-Delivery"] = delivery
    return receiver.jit(headers, body)


def jit_event(kind: str, n: int = 0, **fields: object) -> dict:
    return {
        "type": kind,
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "issue_id": "d41c6a08-81ce-491f-8bf9-6aab78febcbf",
        "timestamp": "2026-01-03T20:35:13.548665535Z",
        **fields,
    }


@pytest.mark.parametrize(
    ("event", "wake"),
    [
        (jit_event("issue_state_changed", **{"from": "backlog", "to": "ready"}), True),
        (jit_event("issue_state_changed", **{"from": "in_progress", "to": "done"}), True),
        (jit_event("issue_state_changed", **{"from": "ready", "to": "in_progress"}), False),
        (jit_event("issue_completed"), True),
        (jit_event("issue_created", title="t", priority="high"), True),
        (jit_event("issue_released", assignee="agent:a", reason="timeout"), True),
        (jit_event("gate_passed", gate_key="fmt", updated_by=None), True),
        (jit_event("issue_claimed", assignee="agent:a"), False),
        (jit_event("gate_failed", gate_key="fmt", updated_by=None), False),
    ],
)
def test_which_jit_events_wake_the_pool(event: dict, wake: bool) -> None:
    reply = jit(Receiver(SECRET, None), event)
    assert (reply.status, reply.wake) == ((200, True) if wake else (202, False))


def test_a_jit_event_is_deduplicated_by_its_own_id() -> None:
    receiver = Receiver(SECRET, None)
    assert jit(receiver, jit_event("issue_completed", 1)).wake
    assert not jit(receiver, jit_event("issue_completed", 1)).wake
    assert jit(receiver, jit_event("issue_completed", 2)).wake


@pytest.mark.parametrize("body", [b"{}", b'{"type": 3}', b"[]", b"nope"])
def test_a_signed_body_that_is_no_jit_event_is_a_bad_request(body: bytes) -> None:
    reply = Receiver(SECRET, None).jit({"X-Hub-Signature-256": sign(SECRET, body)}, body)
    assert (reply.status, reply.wake) == (400, False)


# --------------------------------------------------------------------------- the store watcher
def test_the_event_tail_reads_only_complete_appended_lines(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    log.write_text(json.dumps(jit_event("issue_created", 1)) + "\n")
    tail = EventTail(log)
    assert tail.new_events() == [], "history is not replayed"
    with log.open("a") as handle:
        handle.write(json.dumps(jit_event("gate_failed", 2, gate_key="fmt")) + "\n" + '{"type": "gate_fa')
    assert [e["id"][-1] for e in tail.new_events()] == ["2"]
    with log.open("a") as handle:
        handle.write('iled", "gate_key": "clippy"}\nnot json\n')
    assert tail.new_events() == [{"type": "gate_failed", "gate_key": "clippy"}], "the half line, once whole"
    log.write_text("")  # rewritten (e.g. a checkout): nothing to report, and no error
    assert tail.new_events() == []


def test_the_watcher_reports_a_change_to_either_file(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_text("")
    (tmp_path / "index.json").write_text("{}")
    seen: list[list[dict]] = []
    watcher = StoreWatcher([tmp_path], seen.append)
    assert not watcher.check()
    with (tmp_path / "events.jsonl").open("a") as handle:
        handle.write(json.dumps(jit_event("issue_completed", 7)) + "\n")
    assert watcher.check() and seen[-1][0]["type"] == "issue_completed"
    assert not watcher.check(), "one change, one call"
    replacement = tmp_path / "index.json.tmp"
    replacement.write_text('{"schema_version": 2}')
    replacement.replace(tmp_path / "index.json")  # jit's atomic write: a new inode
    assert watcher.check() and seen[-1] == []


def test_a_signed_but_absurdly_nested_body_is_a_bad_request_not_a_crash() -> None:
    body = b"[" * 200_000
    headers = {"X-Hub-Signature-256": sign(SECRET, body), "X-GitHub-Event": "issues"}
    assert Receiver(SECRET, "main").github(headers, body).status == 400
    assert Receiver(SECRET, "main").jit(headers, body).status == 400


# --------------------------------------------------------------------------- the text log
def test_text_log_lines_carry_no_control_characters() -> None:
    import io

    from jit_dispatch.service.logs import EventLog

    out = io.StringIO()
    log = EventLog(out)
    log.emit("webhook", {"source": "github", "kind": "issues\x1b[2J", "action": "la\rbeled", "delivery": "d",
                         "status": 200, "wake": True, "reply": "issue changed"})  # fmt: skip
    log.emit("cycle", {"trigger": "store", "error": "TrackerError: bad\nline", "claimed": 0})
    log.emit("cycle", {"trigger": "poll", "error": None, "claimed": 0})  # a good cycle: nothing in text
    assert out.getvalue() == (
        "webhook github issues labeled 200 issue changed → wake\nerror   cycle failed (store): TrackerError: bad line\n"
    )


@pytest.mark.parametrize("to", [["ready"], {"state": "ready"}, 3, None])
def test_a_signed_state_change_with_an_odd_to_is_ignored_not_a_crash(to: object) -> None:
    reply = jit(Receiver(SECRET, None), jit_event("issue_state_changed", **{"from": "backlog", "to": to}))
    assert (reply.status, reply.wake, reply.action) == (202, False, None)


def test_an_event_line_nested_too_deep_is_skipped_and_the_watcher_goes_on(tmp_path: Path) -> None:
    import threading
    import time

    from jit_dispatch.trackers.jit.files import read_events

    log = tmp_path / "events.jsonl"
    log.write_text("")
    (tmp_path / "index.json").write_text("{}")
    seen: list[dict] = []
    got = threading.Event()

    def changed(events: list[dict]) -> None:
        seen.extend(events)
        if any(e.get("gate_key") == "after" for e in events):
            got.set()

    watcher = StoreWatcher([tmp_path], changed, interval=0.01).start()
    try:
        with log.open("a") as handle:  # e.g. written by a gate that edits .jit/
            handle.write('{"type": "gate_failed", "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
        deadline = time.monotonic() + 30
        while watcher._thread.is_alive() and not watcher.tails[0].offset and time.monotonic() < deadline:
            time.sleep(0.01)
        with log.open("a") as handle:
            handle.write(json.dumps(jit_event("gate_failed", 1, gate_key="after")) + "\n")
        assert got.wait(30), "the watcher stopped at the deep line"
    finally:
        watcher.stop()
    assert [e.get("gate_key") for e in seen] == ["after"]
    assert [e["gate_key"] for e in read_events(log, ["gate_failed"])] == ["after"]


# ---------------------------------------------------------------------------- delivered work

HOOKS = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"


@pytest.mark.parametrize(
    ("fixture", "wake", "message"),
    [
        ("pull_request.closed.merged.json", True, "pull request merged"),
        ("pull_request.closed.unmerged.json", True, "pull request closed without merging"),
        ("pull_request.synchronize.json", False, "pull request action ignored"),
        ("pull_request_review.submitted.changes_requested.json", True, "changes requested"),
        ("pull_request_review.submitted.approved.json", False, "review ignored"),
        ("pull_request_review.submitted.commented.json", False, "review ignored"),
        ("push.main.merged_by_hand.json", True, "push of delivered work (a Jit-Issue trailer)"),
        ("push.main.plain.json", False, "push to another branch ignored"),
    ],
)
def test_delivered_work_reaching_github_wakes_the_pool(fixture: str, wake: bool, message: str) -> None:
    kind = fixture.split(".")[0]
    reply = github(Receiver(SECRET, "jit-state"), kind, json.loads((HOOKS / fixture).read_text()))
    assert (reply.status, reply.wake, reply.message) == (200 if wake else 202, wake, message)


@pytest.mark.parametrize(
    "payload",
    [
        {"action": "submitted", "review": "changes_requested"},
        {"action": "submitted", "review": {"state": ["changes_requested"]}},
        {"action": "closed", "pull_request": None},
        {"action": "closed", "pull_request": ["merged"]},
        {"commits": "Jit-Issue: x"},
        {"commits": [{"message": 7}, None]},
    ],
)
def test_odd_delivery_payloads_never_raise(payload: dict) -> None:
    for kind in ("pull_request_review", "pull_request", "push"):
        assert github(Receiver(SECRET, "jit-state"), kind, payload).status in (200, 202)
