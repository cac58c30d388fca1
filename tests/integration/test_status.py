"""`jit-dispatch status`: its counts, order and reasons agree with an independent reading of the raw
files (the real seed store and a store built to hold every case), its JSON keys are stable, and
its step-summary dashboard charts the same counts."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from helpers import clean_env, run_cli
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

StoreFactory = Callable[..., tuple[JitStore, list[str]]]

STATES = ["backlog", "ready", "in_progress", "gated", "done", "rejected", "archived"]
RANK = {"critical": 0, "high": 1, "normal": 2, "low": 3}
TOP_KEYS = {"store", "counts", "dispatchable", "held", "blocked", "in_progress", "parked", "released", "gated",
            "warnings", "queue"}  # fmt: skip
WHY_KEYS = {"attempts", "reason", "when", "run", "failed_gates"}
ISSUE_KEYS = {"issue_id", "short_id", "title", "priority"}
ENTRY_KEYS = {
    "dispatchable": ISSUE_KEYS | {"gates_needed"},
    "held": ISSUE_KEYS | {"reason", "gates_needed"},
    "blocked": ISSUE_KEYS | {"state", "blocked_by"},
    "in_progress": ISSUE_KEYS | {"agent", "age_seconds", "silent_seconds", "stale"},
    "parked": ISSUE_KEYS | WHY_KEYS,
    "released": ISSUE_KEYS | WHY_KEYS,
    "gated": ISSUE_KEYS | WHY_KEYS | {"gates_needed"},
}
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


# --------------------------------------------------------------------------- the independent reading
def instant(text: str) -> tuple[int, int]:
    """An RFC 3339 time as (epoch seconds, nanoseconds): nanosecond-exact, unlike datetime."""
    match = _STAMP.match(text)
    assert match, f"not a timestamp: {text!r}"
    whole, fraction, zone = match.groups()
    seconds = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone)).timestamp()
    return int(seconds), int((fraction or "0").ljust(9, "0"))


def expected_status(root: Path, stale_after: float) -> dict[str, Any]:
    """What the dashboard must say, computed from index.json, gates.json and the issue files alone."""
    index = json.loads((root / "index.json").read_text())
    deleted = set(index.get("deleted_ids") or [])
    raws: dict[str, dict] = {}
    missing = []
    for issue_id in dict.fromkeys(index["all_ids"]):
        if issue_id in deleted:
            continue
        path = root / "issues" / f"{issue_id}.json"
        if path.exists():
            raws[issue_id] = json.loads(path.read_text())
        else:
            missing.append(issue_id)
    registry = json.loads((root / "gates.json").read_text())["gates"]
    states = {i: raw["state"] for i, raw in raws.items()}

    def order(raw: dict) -> tuple:
        return (RANK[raw["priority"]], instant(raw["created_at"]), raw["id"])

    def blockers(raw: dict) -> list[str]:
        return [dep for dep in raw["dependencies"] if states.get(dep) not in ("done", "rejected")]

    def head(raw: dict) -> dict:
        return {"issue_id": raw["id"], "short_id": raw["id"][:8], "title": raw["title"], "priority": raw["priority"]}

    def gates_needed(raw: dict) -> list[dict]:
        passed = {k for k, v in raw["gates_status"].items() if v.get("status") == "passed"}
        return [
            {"key": k, "stage": registry[k]["stage"], "mode": registry[k]["mode"]} if k in registry
            else {"key": k, "stage": "?", "mode": "undefined"}
            for k in raw["gates_required"] if k not in passed
        ]  # fmt: skip

    def broken_gate(raw: dict) -> str | None:
        for key in raw["gates_required"]:
            if key not in registry:
                return f"gate '{key}' is required but not defined in the gate registry (gates.json)"
            if registry[key]["mode"] == "auto" and "checker" not in registry[key]:
                return f"gate '{key}' is auto but has no checker"
        return None

    dispatchable, held = [], []
    for raw in sorted(raws.values(), key=order):
        if raw["state"] != "ready" or raw["assignee"] is not None or blockers(raw):
            continue
        passed = {k for k, v in raw["gates_status"].items() if v.get("status") == "passed"}
        manual = [
            key for key in raw["gates_required"]
            if registry.get(key, {}).get("stage") == "precheck" and registry.get(key, {}).get("mode") == "manual"
            and key not in passed
        ]  # fmt: skip
        if "dispatch:parked" in raw["labels"] or "dispatch.parked_at" in raw["context"]:
            reason = "parked: " + raw["context"].get("dispatch.last_reason", "no reason")
            held.append({**head(raw), "reason": reason, "gates_needed": gates_needed(raw)})
        elif manual:
            reason = "manual precheck not passed: " + ", ".join(manual)
            held.append({**head(raw), "reason": reason, "gates_needed": gates_needed(raw)})
        elif broken := broken_gate(raw):
            held.append({**head(raw), "reason": broken, "gates_needed": gates_needed(raw)})
        else:
            dispatchable.append({**head(raw), "gates_needed": gates_needed(raw)})

    now = datetime.now(UTC).timestamp()
    in_progress = {}
    for raw in raws.values():
        if raw["state"] != "in_progress":
            continue
        context = raw["context"]
        entry = {**head(raw), "agent": raw["assignee"] or "nobody"}
        if "dispatch.claimed_at" in context:
            claimed = instant(context["dispatch.claimed_at"])[0]
            alive = max(claimed, instant(context["dispatch.heartbeat_at"])[0]) if "dispatch.heartbeat_at" in context \
                else claimed  # fmt: skip
            entry.update(age_seconds=now - claimed, silent_seconds=now - alive, stale=now - alive > stale_after)
        else:
            entry.update(age_seconds=None, silent_seconds=None, stale=False)
        in_progress[raw["id"]] = entry

    created = [instant(raws[entry["issue_id"]]["created_at"])[0] for entry in dispatchable]
    oldest = now - min(created) if created else None
    return {
        "counts": {state: Counter(states.values())[state] for state in STATES},
        "dispatchable": dispatchable,
        "held": held,
        "blocked": [
            {**head(raw), "state": raw["state"], "blocked_by": blockers(raw)}
            for raw in sorted(raws.values(), key=order)
            if raw["state"] not in ("done", "rejected", "archived") and blockers(raw)
        ],
        "in_progress": in_progress,
        "parked": [
            {**head(raw), **why(raw, raw["context"].get("dispatch.parked_at"))}
            for raw in sorted(raws.values(), key=order)
            if parked(raw)
        ],
        "released": [
            {**head(raw), **why(raw, raw["updated_at"])}
            for raw in sorted(raws.values(), key=order)
            if raw["state"] == "ready" and not parked(raw) and attempts(raw) > 0
        ],
        "gated": [head(raw)["issue_id"] for raw in sorted(raws.values(), key=order) if raw["state"] == "gated"],
        "missing": missing,
        "queue": {"ready_issues": len(dispatchable), "oldest_ready_age_seconds": oldest, "running": len(in_progress)},
    }


def parked(raw: dict) -> bool:
    return "dispatch:parked" in raw["labels"] or "dispatch.parked_at" in raw["context"]


def attempts(raw: dict) -> int:
    text = raw["context"].get("dispatch.attempts", "0")
    return max(0, int(text)) if text.lstrip("-").isdigit() else 0


def why(raw: dict, when: str | None) -> dict:
    failed = [k for k, v in raw.get("gates_status", {}).items() if v.get("status") in ("failed", "error")]
    context = raw["context"]
    return {"attempts": attempts(raw), "reason": context.get("dispatch.last_reason"), "when": when,
            "run": context.get("dispatch.run"), "failed_gates": failed}  # fmt: skip


def status(root: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    result = run_cli("status", "--jit-dir", str(root), "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    return result.json


def assert_schema(data: dict) -> None:
    assert set(data) == TOP_KEYS
    assert list(data["counts"]) == STATES
    assert all(isinstance(n, int) for n in data["counts"].values())
    for key, keys in ENTRY_KEYS.items():
        for entry in data[key]:
            assert set(entry) == keys, f"{key}: {sorted(entry)}"
    assert isinstance(data["warnings"], list) and all(isinstance(w, str) for w in data["warnings"])


def assert_matches(data: dict, expected: dict) -> None:
    assert data["counts"] == expected["counts"]
    assert data["dispatchable"] == expected["dispatchable"]
    assert data["held"] == expected["held"]
    assert data["blocked"] == expected["blocked"]
    assert data["parked"] == expected["parked"]
    assert data["released"] == expected["released"]
    assert [g["issue_id"] for g in data["gated"]] == expected["gated"]
    assert set(data["queue"]) == {"ready_issues", "oldest_ready_age_seconds", "running"}
    for key, want in expected["queue"].items():
        assert data["queue"][key] == want if key != "oldest_ready_age_seconds" or want is None \
            else abs(data["queue"][key] - want) < 30, (key, data["queue"][key], want)  # fmt: skip
    got = {entry["issue_id"]: entry for entry in data["in_progress"]}
    assert set(got) == set(expected["in_progress"])
    for issue_id, want in expected["in_progress"].items():
        entry = got[issue_id]
        for key in ("issue_id", "short_id", "title", "priority", "agent", "stale"):
            assert entry[key] == want[key], (issue_id, key)
        for key in ("age_seconds", "silent_seconds"):
            if want[key] is None:
                assert entry[key] is None, (issue_id, key)
            else:
                assert abs(entry[key] - want[key]) < 30, (issue_id, key, entry[key], want[key])


# --------------------------------------------------------------------------- the seed store
def test_status_of_the_seed_store_matches_the_files(seed_store: Path) -> None:
    data = status(seed_store)
    assert_schema(data)
    expected = expected_status(seed_store, 7200)
    assert_matches(data, expected)
    assert data["warnings"] == [] and expected["missing"] == []
    assert data["store"] == str(seed_store)
    # The figures the fixture documents, as a cross-check of the independent reading itself.
    assert sum(data["counts"].values()) == 175
    assert len(data["dispatchable"]) == 5 and len(data["held"]) == 2
    assert {h["reason"] for h in data["held"]} == {"manual precheck not passed: tdd-reminder"}


def test_status_of_the_seed_store_agrees_with_ready(seed_store: Path) -> None:
    data = status(seed_store)
    listing = run_cli("ready", "--jit-dir", str(seed_store), "--all", "--json").json
    assert [e["issue_id"] for e in data["dispatchable"]] == [e["issue_id"] for e in listing["dispatchable"]]
    held = [(e["issue_id"], e["reason"]) for e in listing["held"]]
    assert [(e["issue_id"], e["reason"]) for e in data["held"]] == held


# --------------------------------------------------------------------------- a store with every case
def edit(root: Path, issue_id: str, context: dict[str, str] | None = None, **fields: Any) -> None:
    path = root / "issues" / f"{issue_id}.json"
    raw = json.loads(path.read_text())
    raw.update(fields)
    raw["context"].update(context or {})
    path.write_text(json.dumps(raw, indent=2) + "\n")


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


NAMES = [
    "crit", "high", "normal_old", "normal_new", "gated_pre", "gate_passed", "auto_and_post", "parked", "dep_done",
    "blocked", "ready_blocked", "assigned_ready", "stale", "beating", "fresh", "outside", "done", "rejected",
    "archived", "gated", "parked_backlog",
]  # fmt: skip
MISSING_ID = "ffffffff-0000-4000-8000-00000000dead"


@pytest.fixture
def every_case(new_store: StoreFactory) -> tuple[Path, dict[str, str]]:
    specs = {name: NewIssue(f"issue {name}") for name in NAMES}
    specs["crit"] = NewIssue("issue crit", "critical", created_at="2026-02-01T00:00:00.000000002Z")
    specs["high"] = NewIssue("issue high", "high", created_at="2026-01-01T00:00:00Z")
    # Two timestamp styles: the older is first, whatever their ids.
    specs["normal_old"] = NewIssue("issue normal_old", created_at="2026-01-05T10:00:00.123455999+00:00")
    specs["normal_new"] = NewIssue("issue normal_new", created_at="2026-01-05T10:00:00.123456789Z")
    specs["gated_pre"] = NewIssue("issue gated_pre", "high", gates_required=("review", "lint"))
    specs["gate_passed"] = NewIssue("issue gate_passed", "low", gates_required=("review",))
    specs["auto_and_post"] = NewIssue("issue auto_and_post", "low", gates_required=("lint", "qa"))
    specs["parked"] = NewIssue("issue parked", "critical", created_at="2025-12-01T00:00:00+00:00")
    store, ids = new_store(*specs.values())
    named = dict(zip(specs, ids, strict=True))
    root = store.root
    (root / "gates.json").write_text(json.dumps({"gates": {
        "review": {"key": "review", "stage": "precheck", "mode": "manual"},
        "lint": {"key": "lint", "stage": "precheck", "mode": "auto", "checker": {
            "type": "exec", "command": "true", "timeout_seconds": 30, "working_dir": None, "env": {}}},
        "qa": {"key": "qa", "stage": "postcheck", "mode": "manual"},
    }}, indent=2))  # fmt: skip
    edit(root, named["gate_passed"], gates_status={"review": {"status": "passed"}})
    edit(root, named["parked"], {"dispatch.attempts": "3", "dispatch.last_reason": "exit code 7"},
         labels=["dispatch:parked", "component:db"])  # fmt: skip
    edit(root, named["parked_backlog"], {"dispatch.last_reason": "too big"}, labels=["dispatch:parked"],
         state="backlog", dependencies=[named["crit"]])  # fmt: skip
    edit(root, named["dep_done"], dependencies=[named["done"], named["rejected"]])
    edit(root, named["blocked"], state="backlog", dependencies=[named["crit"], MISSING_ID, named["done"]],
         priority="high")  # fmt: skip
    edit(root, named["ready_blocked"], dependencies=[named["gated"]])
    edit(root, named["assigned_ready"], assignee="human:carol")
    edit(root, named["stale"], {"dispatch.claimed_at": ago(hours=5), "dispatch.attempts": "1"},
         state="in_progress", assignee="agent:dead-1")  # fmt: skip
    edit(root, named["beating"], {"dispatch.claimed_at": ago(hours=5), "dispatch.heartbeat_at": ago(minutes=3)},
         state="in_progress", assignee="agent:slow-1")  # fmt: skip
    edit(root, named["fresh"], {"dispatch.claimed_at": ago(minutes=20)}, state="in_progress", assignee="agent:w2")
    edit(root, named["outside"], state="in_progress", assignee="human:alice", dependencies=[named["normal_new"]])
    for state in ("done", "rejected", "archived", "gated"):
        edit(root, named[state], state=state)
    # An id listed in the index whose file is gone, and a deleted one: a warning, and not counted.
    index = json.loads((root / "index.json").read_text())
    index["all_ids"].append(MISSING_ID)
    index["deleted_ids"] = [named["archived"]]
    (root / "index.json").write_text(json.dumps(index, indent=2))
    return root, named


def test_status_of_every_case_matches_the_files(every_case: tuple[Path, dict[str, str]]) -> None:
    root, ids = every_case
    data = status(root, "--stale-after", "1h")
    assert_schema(data)
    expected = expected_status(root, 3600)
    assert_matches(data, expected)

    # And spelled out, so a shared mistake in the independent reading cannot hide a wrong answer.
    short = {issue_id: name for name, issue_id in ids.items()}
    names = lambda entries: [short[e["issue_id"]] for e in entries]  # noqa: E731
    assert data["counts"] == {"backlog": 2, "ready": 11, "in_progress": 4, "gated": 1, "done": 1, "rejected": 1,
                              "archived": 0}  # fmt: skip
    assert names(data["dispatchable"]) == [
        "crit", "high", "normal_old", "normal_new", "dep_done", "gate_passed", "auto_and_post",
    ]  # fmt: skip
    assert [(short[h["issue_id"]], h["reason"]) for h in data["held"]] == [
        ("parked", "parked: exit code 7"),
        ("gated_pre", "manual precheck not passed: review"),
    ]
    assert [(short[b["issue_id"]], b["state"], b["blocked_by"]) for b in data["blocked"]] == [
        ("blocked", "backlog", [ids["crit"], MISSING_ID]),
        ("ready_blocked", "ready", [ids["gated"]]),
        ("outside", "in_progress", [ids["normal_new"]]),
        ("parked_backlog", "backlog", [ids["crit"]]),
    ]
    claims = {short[c["issue_id"]]: c for c in data["in_progress"]}
    assert {name: (c["agent"], c["stale"]) for name, c in claims.items()} == {
        "stale": ("agent:dead-1", True), "beating": ("agent:slow-1", False), "fresh": ("agent:w2", False),
        "outside": ("human:alice", False),
    }  # fmt: skip
    assert claims["outside"]["age_seconds"] is None
    assert 5 * 3600 - 5 <= claims["stale"]["age_seconds"] <= 5 * 3600 + 60
    assert 180 - 5 <= claims["beating"]["silent_seconds"] <= 180 + 60 <= claims["beating"]["age_seconds"]
    assert [(short[p["issue_id"]], p["reason"]) for p in data["parked"]] == [
        ("parked", "exit code 7"), ("parked_backlog", "too big"),
    ]  # fmt: skip
    assert len(data["warnings"]) == 1 and MISSING_ID in data["warnings"][0]

    # --stale-after moves the flag, nothing else.
    relaxed = status(root, "--stale-after", "6h")
    assert [c["stale"] for c in relaxed["in_progress"]] == [False] * 4
    strict = status(root, "--stale-after", "60s")
    assert {short[c["issue_id"]] for c in strict["in_progress"] if c["stale"]} == {"stale", "beating", "fresh"}
    assert_matches(strict, expected_status(root, 60))


def test_dispatch_order_compares_created_at_to_the_nanosecond(new_store: StoreFactory) -> None:
    """jit writes 9 fraction digits; two issues a few nanoseconds apart go oldest first, not by id.

    The ids are random, so the older time goes to the larger id: an order that drops the last
    three digits (datetime keeps microseconds) then falls back to the id and gets it backwards.
    """
    store, ids = new_store(NewIssue("one"), NewIssue("two"))
    root = store.root
    low_id, high_id = sorted(ids)
    edit(root, high_id, created_at="2026-01-05T10:00:00.123456781Z", title="older")
    edit(root, low_id, created_at="2026-01-05T10:00:00.123456789Z", title="newer")
    assert [e["title"] for e in expected_status(root, 7200)["dispatchable"]] == ["older", "newer"]
    assert [e["title"] for e in status(root)["dispatchable"]] == ["older", "newer"]


def test_status_text_dashboard(every_case: tuple[Path, dict[str, str]]) -> None:
    root, ids = every_case
    result = run_cli("status", "--jit-dir", str(root), "--stale-after", "1h")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.splitlines()[0] == (
        f"jit-dispatch status of {root}: backlog 2 · ready 11 · in_progress 4 · gated 1 · done 1 · rejected 1"
    )
    for heading in ("Dispatchable, in order (7):", "Ready but held back (2):", "Blocked (4):", "In progress (4):",
                    "Parked (2):"):  # fmt: skip
        assert heading in text.splitlines(), heading
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    assert lines[ids["stale"][:8]].endswith("claimed 5h ago  STALE  issue stale")
    assert "STALE" not in lines[ids["beating"][:8]] and "claimed 5h ago" in lines[ids["beating"][:8]]
    assert "(claimed outside the dispatcher)" in lines[ids["outside"][:8]]
    assert lines[ids["blocked"][:8]].endswith(f"[by {ids['crit'][:8]}, {MISSING_ID[:8]}]")
    assert MISSING_ID in result.stderr, "the unreadable issue is warned about"


def test_status_of_an_empty_store(new_store: StoreFactory) -> None:
    store, _ = new_store()
    data = status(store.root)
    assert_schema(data)
    assert data == {"store": str(store.root), "counts": dict.fromkeys(STATES, 0), "dispatchable": [], "held": [],
                    "blocked": [], "in_progress": [], "parked": [], "released": [], "gated": [], "warnings": [],
                    "queue": {"ready_issues": 0, "oldest_ready_age_seconds": None, "running": 0}}  # fmt: skip
    text = run_cli("status", "--jit-dir", str(store.root))
    assert text.stdout.strip() == f"jit-dispatch status of {store.root}: no issues"


# --------------------------------------------------------------------------- the step summary
def pie(markdown: str) -> dict[str, int]:
    block = re.search(r"```mermaid\n(.*?)\n```", markdown, re.S)
    assert block, markdown
    lines = block.group(1).splitlines()
    assert lines[0].startswith("pie ")
    values = {}
    for line in lines[1:]:
        match = re.fullmatch(r'\s*"([a-z_]+)"\s*:\s*(\d+)', line)
        assert match, line
        values[match.group(1)] = int(match.group(2))
    return values


@pytest.mark.parametrize("case", ["seed", "every_case"])
def test_summary_writes_a_markdown_dashboard_with_a_pie_of_the_counts(
    case: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    root = request.getfixturevalue("seed_store") if case == "seed" else request.getfixturevalue("every_case")[0]
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    data = status(root, "--summary", env=clean_env(GITHUB_STEP_SUMMARY=str(summary)))
    markdown = summary.read_text()
    assert markdown.startswith("earlier step\n"), "appended, not overwritten"
    assert "### 📋 jit-dispatch status" in markdown
    assert pie(markdown) == {state: n for state, n in data["counts"].items() if n}
    assert pie(markdown) == {s: n for s, n in expected_status(root, 7200)["counts"].items() if n}
    assert f"#### Dispatchable, in order ({len(data['dispatchable'])})" in markdown
    assert data["dispatchable"], "the store must have dispatchable issues for the rows to be checked"
    for entry in data["dispatchable"]:
        assert f"| `{entry['short_id']}` | {entry['priority']} |" in markdown
    if data["held"]:
        assert f"#### Ready but held back ({len(data['held'])})" in markdown
    if case == "every_case":
        assert "⚠️ stale" in markdown and "outside the dispatcher" in markdown
        assert "#### Parked (2)" in markdown


def test_summary_is_written_only_when_asked_or_in_actions(new_store: StoreFactory, tmp_path: Path) -> None:
    store, _ = new_store(NewIssue("one"))
    summary = tmp_path / "summary.md"
    status(store.root, env=clean_env(GITHUB_STEP_SUMMARY=str(summary)))
    assert not summary.exists(), "outside Actions, only with --summary"
    status(store.root, "--no-summary", env=clean_env(GITHUB_STEP_SUMMARY=str(summary), GITHUB_ACTIONS="true"))
    assert not summary.exists()
    status(store.root, env=clean_env(GITHUB_STEP_SUMMARY=str(summary), GITHUB_ACTIONS="true"))
    assert pie(summary.read_text()) == {"ready": 1}


# --------------------------------------------------------------------------- trend of settles
def test_the_dashboard_shows_settles_per_hour_from_the_event_log(tmp_path: Path) -> None:
    store = JitStore.init(tmp_path / "repo" / ".jit")
    good, bad = store.create_issues([NewIssue("works", "high"), NewIssue("breaks")])
    assert run_cli("once", "--agent", "a", "--command", "true", "--jit-dir", str(store.root)).returncode == 0
    assert run_cli("once", "--agent", "a", "--command", "exit 5", "--jit-dir", str(store.root)).returncode == 1
    now = datetime.now(UTC)
    earlier = (now - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%S.123456789Z")
    too_old = (now - timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with (store.root / "events.jsonl").open("a") as handle:
        for stamp, kind in ((earlier, "issue_completed"), (earlier, "issue_completed"), (too_old, "issue_released")):
            handle.write(json.dumps({"type": kind, "id": f"e-{kind}", "issue_id": good, "timestamp": stamp}) + "\n")
        handle.write('{"type": "issue_completed", "timestamp": "yesterday"}\n')
    summary = tmp_path / "summary.md"
    env = clean_env(GITHUB_STEP_SUMMARY=str(summary))
    result = run_cli("status", "--jit-dir", str(store.root), "--summary", env=env)
    assert result.returncode == 0, result.stderr
    markdown = summary.read_text()
    assert "#### Settles per hour" in markdown
    settled = next(e for e in read_store_events(store.root) if e["type"] == "issue_completed")["timestamp"]
    assert f"| {settled[5:13].replace('T', ' ')}:00 | 1 | 1 |" in markdown, markdown
    assert f"| {now - timedelta(hours=3):%m-%d %H}:00 | 2 | 0 |" in markdown
    assert re.search(r"done `[▁-█]{12}` 3 · released `[▁-█]{12}` 1", markdown)
    trend_rows = markdown.split("| Hour (UTC) | done | released |\n|---|---|---|\n", 1)[1].split("\n\n", 1)[0]
    assert len(trend_rows.splitlines()) == 2, "only hours that had settles, the 30-hour-old one left out"
    assert bad  # released, still ready


def read_store_events(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "events.jsonl").read_text().splitlines() if line.strip()]


def test_no_trend_without_settles() -> None:
    from jit_dispatch.report.status import _trend_markdown, settle_trend

    now = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    assert _trend_markdown(settle_trend([], now)) == []
    trend = settle_trend([{"type": "issue_released", "timestamp": "2026-03-01T01:00:00Z"}], now)
    assert [hour.hour for hour, _, _ in trend] == list(range(1, 13)) and trend[0][1:] == (0, 1)
