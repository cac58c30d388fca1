"""Several stores as one (`--jit-dir` repeated): one order across all of them, each claim written in
its own store only. Real stores, the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import read_events, read_issue, run_cli
from jit_dispatch.trackers.jit.store import JitStore, NewIssue


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def two_stores(tmp_path: Path) -> tuple[Path, Path, list[str], list[str]]:
    """a: a high issue (older) and a normal one; b: a low one and a critical one (newer than a's)."""
    a = JitStore.init(tmp_path / "a" / ".jit")
    b = JitStore.init(tmp_path / "b" / ".jit")
    a_ids = a.create_issues([
        NewIssue("a high", "high", created_at="2026-01-01T00:00:00Z"),
        NewIssue("a normal", "normal", created_at="2026-01-03T00:00:00Z"),
    ])  # fmt: skip
    b_ids = b.create_issues([
        NewIssue("b low", "low", created_at="2025-06-01T00:00:00Z"),
        NewIssue("b critical", "critical", created_at="2026-02-01T00:00:00Z"),
        NewIssue("b normal", "normal", created_at="2026-01-02T00:00:00Z"),
    ])  # fmt: skip
    return a.root, b.root, a_ids, b_ids


def test_the_critical_issue_in_the_second_store_wins(two_stores, tmp_path: Path) -> None:
    a, b, a_ids, b_ids = two_stores
    a_before = files(a)
    b_events = len(read_events(b))
    result = run_cli(
        "once", "--agent", "multi-1", "--command", "echo $JIT_ISSUE_ID > ran", "--jit-dir", str(a), "--jit-dir", str(b),
        "--json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = result.json
    assert (data["issue_id"], data["title"], data["outcome"]) == (b_ids[1], "b critical", "done")
    assert data["store"] == str(b), "the summary names the store the issue lives in"
    assert (tmp_path / "ran").read_text().strip() == b_ids[1]
    # Written in its own store only.
    assert files(a) == a_before, "nothing in the other store changed"
    assert read_issue(b, b_ids[1])["state"] == "done"
    assert {e["issue_id"] for e in read_events(b)[b_events:]} == {b_ids[1]}
    assert not (a / "issues" / f"{b_ids[1]}.json").exists()

    # Next in line is a's high issue: claimed in a, b untouched.
    b_before = files(b)
    result = run_cli("once", "--agent", "multi-1", "--command", "true", "--jit-dir", str(a), "--jit-dir", str(b),
                     "--json", cwd=tmp_path)  # fmt: skip
    assert (result.json["issue_id"], result.json["store"]) == (a_ids[0], str(a))
    assert read_issue(a, a_ids[0])["state"] == "done"
    assert files(b) == b_before


def test_the_order_of_the_jit_dirs_does_not_matter(two_stores, tmp_path: Path) -> None:
    a, b, _, b_ids = two_stores
    result = run_cli("once", "--agent", "m", "--command", "true", "--jit-dir", str(b), "--jit-dir", str(a),
                     "--dry-run", "--json", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (result.json["outcome"], result.json["issue_id"], result.json["store"]) == ("dry-run", b_ids[1], str(b))


def test_a_failure_is_released_in_its_own_store(two_stores, tmp_path: Path) -> None:
    a, b, _, b_ids = two_stores
    a_before = files(a)
    result = run_cli("once", "--agent", "m", "--command", "exit 3", "--jit-dir", str(a), "--jit-dir", str(b),
                     "--json", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert (result.json["issue_id"], result.json["outcome"]) == (b_ids[1], "released")
    raw = read_issue(b, b_ids[1])
    assert raw["state"] == "ready" and raw["context"]["dispatch.attempts"] == "1"
    assert files(a) == a_before


def test_ready_lists_both_stores_in_one_order(two_stores) -> None:
    a, b, a_ids, b_ids = two_stores
    result = run_cli("ready", "--jit-dir", str(a), "--jit-dir", str(b), "--json")
    assert result.returncode == 0, result.stderr
    listed = [(e["issue_id"], e["title"]) for e in result.json["dispatchable"]]
    # critical, high, then the normals oldest first (b's before a's), then low.
    assert listed == [
        (b_ids[1], "b critical"), (a_ids[0], "a high"), (b_ids[2], "b normal"), (a_ids[1], "a normal"),
        (b_ids[0], "b low"),
    ]  # fmt: skip
    text = run_cli("ready", "--jit-dir", str(a), "--jit-dir", str(b))
    assert [line.split()[0] for line in text.stdout.splitlines()] == [i[:8] for i, _ in listed]


def test_status_and_the_config_repos_key_span_the_stores(two_stores, tmp_path: Path) -> None:
    a, b, a_ids, b_ids = two_stores
    data = run_cli("status", "--jit-dir", str(a), "--jit-dir", str(b), "--json").json
    assert data["counts"]["ready"] == 5
    assert data["store"] == f"{a}, {b}"
    assert [e["issue_id"] for e in data["dispatchable"]][:2] == [b_ids[1], a_ids[0]]
    # `repos = [...]` in dispatch.toml stands for the --jit-dir list.
    (tmp_path / "dispatch.toml").write_text(
        f'repos = [{json.dumps(str(a))}, {json.dumps(str(b))}]\n[[agents]]\nid = "cfg"\ncommand = "true"\n'
    )
    result = run_cli("once", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (result.json["issue_id"], result.json["store"], result.json["agent"]) == (b_ids[1], str(b), "agent:cfg")
