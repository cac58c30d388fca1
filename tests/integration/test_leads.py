"""The hot path's leads (trackers/jit/leads.py): selection on a lead decides as on the full parse.

Every file the fast path cannot read exactly must fall back to the full parse; every file it
reads must give the fields the full parse gives. Checked on the stores real jit wrote and on
constructed odd files, then end to end: a corrupt candidate is skipped with a warning, untouched.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers import clean_env, run_cli
from jit_dispatch.domain.selection import Filters, plan
from jit_dispatch.trackers.jit.files import dumps_pretty
from jit_dispatch.trackers.jit.leads import Lead
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

StoreFactory = Callable[..., tuple[JitStore, list[str]]]
FIELDS = (
    "id",
    "state",
    "priority",
    "assignee",
    "dependencies",
    "labels",
    "gates_required",
    "gates_passed",
    "context",
    "created_at",
    "created_ns",
    "short_id",
    "parked",
    "failed_attempts",
)


def assert_same_selection(root: Path) -> list[Any]:
    """The snapshot with leads and the full one: same issues, fields and plan; the issues of the one with leads."""
    store = JitStore.open(root)
    full, lazy = store.snapshot(), store.snapshot(leads=True)
    by_id = {issue.id: issue for issue in full.issues}
    assert sorted(by_id) == sorted(issue.id for issue in lazy.issues)
    assert lazy.states == full.states
    for issue in lazy.issues:
        for name in FIELDS:
            assert getattr(issue, name) == getattr(by_id[issue.id], name), (issue.id, name)
        if isinstance(issue, Lead):
            assert issue.parse() == by_id[issue.id]
    for run_gates in (True, False):
        want = plan(full.issues, full.states, full.gates, Filters(), run_gates=run_gates)
        got = plan(lazy.issues, lazy.states, lazy.gates, Filters(), run_gates=run_gates)
        assert [i.id for i in got.dispatchable] == [i.id for i in want.dispatchable]
        assert [(h.issue.id, h.reason) for h in got.held] == [(h.issue.id, h.reason) for h in want.held]
    return lazy.issues


@pytest.mark.parametrize("name", ["seed_store", "latest_store"])
def test_on_the_stores_jit_wrote_every_ready_issue_is_a_lead_that_selects_like_the_full_parse(
    name: str, request: pytest.FixtureRequest
) -> None:
    root: Path = request.getfixturevalue(name)
    issues = assert_same_selection(root)
    assert issues and all(isinstance(issue, Lead) for issue in issues)


def _ready_store(new_store: StoreFactory) -> tuple[JitStore, str, str, dict[str, Any]]:
    """Two ready issues; the first's raw JSON to reshape."""
    store, (first, second) = new_store(
        NewIssue("first", priority="low", labels=("type:task",)), NewIssue("second", priority="normal")
    )
    raw = json.loads(store.issue_file(first).read_text())
    return store, first, second, raw


def _reordered(raw: dict[str, Any]) -> str:
    return dumps_pretty(dict(reversed(list(raw.items()))))


def _compact(raw: dict[str, Any]) -> str:
    return json.dumps(raw)


def _escaped_title(raw: dict[str, Any]) -> str:
    return dumps_pretty({**raw, "title": 'a "quoted" \\ title\twith é'}).replace("é", "\\u00e9")


def _escaped_priority(raw: dict[str, Any]) -> str:
    return dumps_pretty({**raw, "priority": "critical"}).replace('"critical"', '"cr\\u0069tical"')


def _nested_priority(raw: dict[str, Any]) -> str:
    return dumps_pretty({**raw, "context": {"priority": "critical", "state": "done"}})


def _hidden_duplicate(raw: dict[str, Any]) -> str:
    """A second `priority` member hidden in the documents' lines: JSON takes the last one."""
    text = dumps_pretty({**raw, "priority": "low", "documents": ["x"]})
    return text.replace('    "x"\n  ]', '    "x"],\n    "priority": "critical",\n    "zz": [\n  ]')


def _duplicate_before(raw: dict[str, Any]) -> str:
    """A `priority` member before the state line: the later one (the layout's) wins."""
    return dumps_pretty(raw).replace('\n  "title"', '\n  "priority": "critical",\n  "title"', 1)


def _context_with_escape(raw: dict[str, Any]) -> str:
    return dumps_pretty({**raw, "context": {"dispatch.parked_at": "x", "dispatch.last_reason": 'exit "1"'}})


def _parked(raw: dict[str, Any]) -> str:
    return dumps_pretty({**raw, "context": {"dispatch.parked_at": "2026-01-01T00:00:00Z", "dispatch.attempts": "3"}})


def _gates(raw: dict[str, Any]) -> str:
    status = {
        "tests": {"status": "passed", "updated_by": None, "updated_at": "2026-01-01T00:00:00Z"},
        "fmt": {"status": "failed", "updated_by": "auto:executor", "updated_at": "2026-01-01T00:00:00Z"},
    }
    return dumps_pretty({**raw, "gates_required": ["tests", "fmt"], "gates_status": status})


def _duplicate_gate(raw: dict[str, Any]) -> str:
    """`tests` passed, then `tests` failed: JSON keeps the last."""
    text = _gates(raw)
    return text.replace('"fmt": {', '"tests": {', 1)


def _assets(raw: dict[str, Any]) -> str:
    assets = [{"original_path": "a.png", "resolved_path": None, "is_shared": False, "size": 12}]
    doc = {"path": "d.md", "commit": None, "label": "L", "doc_type": None, "format": "markdown", "assets": assets}
    return dumps_pretty({**raw, "documents": [doc, {"path": "e.md", "commit": None}]})


def _assigned(raw: dict[str, Any]) -> str:
    return dumps_pretty({**raw, "assignee": "agent:other"})


def _unknown_field(raw: dict[str, Any]) -> str:
    return dumps_pretty({**raw, "extra": {"priority": "critical"}})


def _trailing_newline(raw: dict[str, Any]) -> str:
    return dumps_pretty({**raw, "priority": "critical"}) + "\n"


def _nanoseconds(raw: dict[str, Any]) -> str:
    return dumps_pretty({**raw, "created_at": "2020-01-01T00:00:00.000000001+00:00"})


def _bad_timestamp(raw: dict[str, Any]) -> str:
    return dumps_pretty({**raw, "created_at": "yesterday"})


def _unknown_priority(raw: dict[str, Any]) -> str:
    return dumps_pretty({**raw, "priority": "urgent"})


def _description_not_text(raw: dict[str, Any]) -> str:
    return dumps_pretty({**raw, "description": 5})


def _dependency_missing(raw: dict[str, Any]) -> str:
    return dumps_pretty({**raw, "dependencies": ["00000000-0000-4000-8000-000000000000"]})


SHAPES: dict[str, tuple[Callable[[dict[str, Any]], str], bool]] = {  # name: (reshape, read as a lead)
    "keys reordered": (_reordered, False),
    "compact JSON": (_compact, False),
    "escaped characters in the title": (_escaped_title, True),
    "escaped priority": (_escaped_priority, False),
    "nested priority and state in context": (_nested_priority, True),
    "duplicate member hidden in documents": (_hidden_duplicate, False),
    "duplicate member before the state line": (_duplicate_before, True),
    "escape in a context value": (_context_with_escape, False),
    "parked": (_parked, True),
    "gates passed and failed": (_gates, True),
    "a gate repeated": (_duplicate_gate, True),
    "documents with assets": (_assets, True),
    "assigned": (_assigned, True),
    "unknown field": (_unknown_field, False),
    "trailing newline": (_trailing_newline, True),
    "nanoseconds": (_nanoseconds, True),
    "not a timestamp": (_bad_timestamp, False),
    "unknown priority": (_unknown_priority, False),
    "description not text": (_description_not_text, True),
    "missing dependency": (_dependency_missing, True),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_an_odd_file_selects_as_the_full_parse_would(new_store: StoreFactory, shape: str) -> None:
    store, first, _, raw = _ready_store(new_store)
    reshape, as_lead = SHAPES[shape]
    store.issue_file(first).write_text(reshape(raw), encoding="utf-8")
    full = store.snapshot()
    lazy = store.snapshot(leads=True)
    kinds = {issue.id: isinstance(issue, Lead) for issue in lazy.issues}
    assert kinds.get(first, False) == as_lead
    if full.warnings:  # invalid: a full snapshot skips it; a lead of it is dropped when read in full
        assert not any(issue.id == first for issue in full.issues)
        if as_lead:
            lead = next(issue for issue in lazy.issues if issue.id == first)
            assert lazy.full(lead) is None
        assert lazy.warnings == full.warnings and first not in lazy.states
        assert [i.id for i in lazy.issues] == [i.id for i in full.issues]
    else:
        assert_same_selection(store.root)


def test_a_corrupt_candidate_is_skipped_with_a_warning_and_left_as_it_is(new_store: StoreFactory) -> None:
    store, first, second, raw = _ready_store(new_store)
    bad = store.issue_file(first)
    bad.write_text(dumps_pretty({**raw, "priority": "critical", "description": 5}), encoding="utf-8")
    before = bad.read_bytes()
    assert isinstance(next(i for i in store.snapshot(leads=True).issues if i.id == first), Lead)
    result = run_cli("once", "--agent", "w1", "--command", "true", "--jit-dir", str(store.root))
    assert result.returncode == 0, result.stderr
    assert f"done {second[:8]}" in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "description" in lines[0] and "Traceback" not in lines[0]
    assert bad.read_bytes() == before


def test_when_every_candidate_is_corrupt_once_is_idle_as_with_a_full_parse(new_store: StoreFactory) -> None:
    store, first, second, raw = _ready_store(new_store)
    for issue_id in (first, second):
        path = store.issue_file(issue_id)
        path.write_text(dumps_pretty({**raw, "id": issue_id, "title": 7}), encoding="utf-8")
    result = run_cli("once", "--agent", "w1", "--command", "true", "--jit-dir", str(store.root))
    assert result.returncode == 0, result.stderr
    assert "idle" in result.stdout and "no ready issue matches" in result.stdout
    assert len(result.stderr.strip().splitlines()) == 2
    one = run_cli("once", "--agent", "w1", "--command", "true", "--issue", first, "--jit-dir", str(store.root))
    assert "unreadable" in one.stdout


def test_status_and_ready_all_still_warn_about_a_corrupt_issue_once_never_reaches(new_store: StoreFactory) -> None:
    store, first, _, raw = _ready_store(new_store)
    store.issue_file(first).write_text(dumps_pretty({**raw, "description": 5}), encoding="utf-8")  # low priority
    for args in (("status",), ("ready", "--all")):
        result = run_cli(*args, "--jit-dir", str(store.root))
        assert result.returncode == 0, result.stderr
        assert str(store.issue_file(first)) in result.stderr, args


def test_a_lead_whose_file_went_away_is_dropped_with_a_warning(new_store: StoreFactory) -> None:
    store, first, second, _ = _ready_store(new_store)
    snapshot = store.snapshot(leads=True)
    lead = next(issue for issue in snapshot.issues if issue.id == first)
    store.issue_file(first).unlink()
    assert snapshot.full(lead) is None
    assert [i.id for i in snapshot.issues] == [second] and first not in snapshot.states
    assert len(snapshot.warnings) == 1 and "cannot be read" in snapshot.warnings[0]


def test_a_plain_once_imports_none_of_what_it_does_not_use(tmp_path: Path) -> None:
    """Start-up is most of a dispatch on a small store: the modules kept off the plain path stay off it."""
    store = JitStore.init(tmp_path / ".jit")
    store.create_issues([NewIssue("one")])
    off_path = [
        "tempfile",
        "shutil",
        "html",
        "jit_dispatch.engine.gates",
        "jit_dispatch.trackers.multi",
        "jit_dispatch.trackers.remote.git",
        "jit_dispatch.trackers.github.rules",
    ]
    script = (
        "import json, sys\n"
        "from jit_dispatch.cli import main\n"
        "try:\n"
        "    main(['once', '--agent', 'ci', '--command', 'true', '--gates', 'skip'])\n"
        "except SystemExit as exc:\n"
        f"    print(exc.code, json.dumps([m for m in {off_path!r} if m in sys.modules]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.splitlines()[-1] == "0 []", (proc.stdout, proc.stderr)


@pytest.mark.parametrize("name", ["seed_store", "latest_store"])
def test_once_claims_what_the_full_parse_ranks_first(name: str, request: pytest.FixtureRequest) -> None:
    root: Path = request.getfixturevalue(name)
    full = JitStore.open(root).snapshot()
    first = plan(full.issues, full.states, full.gates, Filters(), run_gates=False).dispatchable[0]
    result = run_cli(
        "once", "--agent", "w1", "--command", "true", "--gates", "skip", "--dry-run", "--jit-dir", str(root)
    )
    assert result.returncode == 0, result.stderr
    assert f"dry-run {first.short_id}" in result.stdout
