"""Bad input through the real CLI: one clear line on stderr, a documented exit code, nothing lost
(docs/cli.md#exit-codes, docs/architecture.md#exit-codes)."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import CliRun, clean_env, read_issue, run_cli
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

StoreFactory = Callable[..., tuple[JitStore, list[str]]]


def assert_one_error_line(result: CliRun, code: int, *names: str, actions: bool = False) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {lines!r}"
    assert result.stdout == ""
    line = lines[0]
    assert "Traceback" not in line
    assert line.startswith("::error" if actions else "jit-dispatch: error: "), line
    for name in names:
        assert name in line, f"the error does not name {name!r}: {line}"
    return line


@pytest.fixture
def store(new_store: StoreFactory) -> Path:
    created, _ = new_store(NewIssue("an issue"))
    return created.root


# --------------------------------------------------------------------------- the store
def test_missing_store_directory_is_a_tracker_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / ".jit"
    result = run_cli("once", "--agent", "w1", "--command", "true", "--jit-dir", str(missing))
    assert_one_error_line(result, 3, str(missing))
    assert not missing.exists(), "nothing is created"


def test_default_store_location_is_named_when_missing(tmp_path: Path) -> None:
    result = run_cli("once", "--agent", "w1", "--command", "true", cwd=tmp_path)
    assert_one_error_line(result, 3, ".jit")
    from_env = run_cli("ready", cwd=tmp_path, env=clean_env(JIT_DATA_DIR=str(tmp_path / "elsewhere")))
    assert_one_error_line(from_env, 3, str(tmp_path / "elsewhere"))


def test_store_without_index_is_a_tracker_error(tmp_path: Path) -> None:
    root = tmp_path / ".jit"
    (root / "issues").mkdir(parents=True)
    result = run_cli("once", "--agent", "w1", "--command", "true", "--jit-dir", str(root))
    assert_one_error_line(result, 3, str(root / "index.json"))
    assert sorted(p.name for p in root.iterdir()) == ["issues"], "an uninitialised store is left alone"


@pytest.mark.parametrize("name", ["index.json", "gates.json"])
def test_corrupt_index_or_gate_registry_is_a_tracker_error(store: Path, name: str) -> None:
    (store / name).write_text('{"all_ids": [', encoding="utf-8")
    result = run_cli("once", "--agent", "w1", "--command", "true", "--jit-dir", str(store))
    assert_one_error_line(result, 3, str(store / name))


def test_lock_timeout_is_a_tracker_error_and_claims_nothing(new_store: StoreFactory) -> None:
    created, (issue_id,) = new_store(NewIssue("locked out"))
    before = (created.root / "issues" / f"{issue_id}.json").read_bytes()
    fd = os.open(created.root / ".index.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another jit process is in the middle of a save
        result = run_cli(
            "once", "--agent", "w1", "--command", "true", "--jit-dir", str(created.root),
            env=clean_env(JIT_LOCK_TIMEOUT="0.3"),
        )  # fmt: skip
    finally:
        os.close(fd)
    assert_one_error_line(result, 3, ".index.lock")
    assert (created.root / "issues" / f"{issue_id}.json").read_bytes() == before


# --------------------------------------------------------------------------- corrupt issue files
def _corrupt_files(root: Path, truncated_id: str, urgent_id: str) -> dict[Path, bytes]:
    truncated = root / "issues" / f"{truncated_id}.json"
    text = truncated.read_bytes()
    truncated.write_bytes(text[: len(text) // 2])
    urgent = root / "issues" / f"{urgent_id}.json"
    raw = json.loads(urgent.read_text(encoding="utf-8"))
    raw["priority"] = "urgent"
    urgent.write_text(json.dumps(raw, indent=2, ensure_ascii=False), encoding="utf-8")
    return {path: path.read_bytes() for path in (truncated, urgent)}


@pytest.mark.parametrize("actions", [False, True], ids=["terminal", "actions"])
def test_corrupt_issue_files_are_skipped_with_a_warning_and_never_rewritten(
    new_store: StoreFactory, tmp_path: Path, actions: bool
) -> None:
    created, ids = new_store(
        NewIssue("good one", priority="low"),
        NewIssue("truncated", priority="critical"),
        NewIssue("urgent", priority="critical"),
        NewIssue("good two", priority="high"),
    )
    root, (good_low, truncated_id, urgent_id, good_high) = created.root, ids
    corrupt = _corrupt_files(root, truncated_id, urgent_id)
    env = clean_env(GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md")) if actions else clean_env()

    listed = run_cli("ready", "--jit-dir", str(root), "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [i["issue_id"] for i in listed.json["dispatchable"]] == [good_high, good_low]
    assert_warned_once_each(listed.stderr, corrupt, actions)

    outcomes = []
    for _ in range(4):  # a full dispatch: until nothing is left
        result = run_cli("once", "--agent", "w1", "--command", "true", "--jit-dir", str(root), "--json", env=env)
        assert result.returncode == 0, result.stderr
        assert_warned_once_each(result.stderr, corrupt, actions)
        assert {Path(w.split(":")[0]) for w in result.json["warnings"]} == set(corrupt)
        outcomes.append((result.json["outcome"], result.json["issue_id"]))
        if result.json["outcome"] == "idle":
            break
    assert outcomes == [("done", good_high), ("done", good_low), ("idle", None)]
    assert corrupt, "the test needs corrupt files to watch"
    for path, data in corrupt.items():
        assert path.read_bytes() == data, f"{path.name} was rewritten"
    assert not list((root / "issues").glob("*.tmp"))
    assert read_issue(root, good_high)["state"] == read_issue(root, good_low)["state"] == "done"


def assert_warned_once_each(stderr: str, corrupt: dict[Path, bytes], actions: bool) -> None:
    lines = stderr.splitlines()
    for path in corrupt:
        naming = [line for line in lines if str(path) in line]
        assert len(naming) == 1, f"expected one warning naming {path.name}, got {naming!r}"
        assert naming[0].startswith("::warning" if actions else "jit-dispatch: warning: "), naming[0]
    urgent_line = next(line for line in lines if "urgent" in line)
    assert "priority" in urgent_line, "the warning says which field is wrong"


def test_a_done_dependency_truncated_after_a_nested_object_is_reported_and_blocks(new_store: StoreFactory) -> None:
    created, (dep_id,) = new_store(NewIssue("the dependency"))
    root = created.root
    dep = root / "issues" / f"{dep_id}.json"
    raw = json.loads(dep.read_text(encoding="utf-8"))
    raw["state"] = "done"
    dep.write_text(json.dumps(raw, indent=2, ensure_ascii=False), encoding="utf-8")
    (dependent_id,) = created.create_issues([NewIssue("the dependent", dependencies=(dep_id,))])
    assert read_issue(root, dependent_id)["state"] == "ready"
    text = dep.read_text(encoding="utf-8")
    cut = text.index('"gates_status": {}') + len('"gates_status": {}')
    dep.write_text(text[:cut], encoding="utf-8")  # ends in "}", but is not a whole JSON document
    corrupt = dep.read_bytes()

    listed = run_cli("ready", "--jit-dir", str(root), "--json")
    assert listed.returncode == 0, listed.stderr
    assert str(dep) in listed.stderr, "the unreadable file is reported"
    assert listed.json["dispatchable"] == [], "an unreadable dependency blocks, like a missing one"
    result = run_cli("once", "--agent", "w1", "--command", "true", "--jit-dir", str(root), "--json")
    assert (result.returncode, result.json["outcome"]) == (0, "idle")
    assert str(dep) in result.stderr
    assert "another runner" not in result.json["reason"]
    assert dep.read_bytes() == corrupt


# --------------------------------------------------------------------------- options
BAD_OPTIONS = [
    (["--min-priority", "urgent"], ["--min-priority", "urgent"]),
    (["--bogus"], ["--bogus"]),
    (["--timeout", "abc"], ["--timeout", "abc"]),
    (["--timeout", "0"], ["--timeout"]),
    (["--issue", "zz"], ["--issue", "zz"]),
    (["--issue", "ffffffff"], ["--issue", "ffffffff"]),
    (["--agent", "has space"], ["--agent", "has space"]),
    (["--max-attempts", "0"], ["--max-attempts"]),
    (["--label", "not a label"], ["--label"]),
    (["--command", "   "], ["--command"]),
]


@pytest.mark.parametrize("actions", [False, True], ids=["terminal", "actions"])
@pytest.mark.parametrize(("extra", "names"), BAD_OPTIONS, ids=[" ".join(case[0]) for case in BAD_OPTIONS])
def test_bad_options_are_usage_errors_on_one_line(
    store: Path, tmp_path: Path, extra: list[str], names: list[str], actions: bool
) -> None:
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    outputs = tmp_path / "outputs.txt"
    env = clean_env(GITHUB_ACTIONS="true", GITHUB_OUTPUT=str(outputs)) if actions else clean_env()
    args = ["once", "--agent", "w1", "--command", "true", "--jit-dir", str(store), *extra]
    result = run_cli(*args, env=env)
    assert_one_error_line(result, 2, *names, actions=actions)
    after = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    assert after == before, "a usage error changes nothing in the store"
    if actions:
        text = outputs.read_text(encoding="utf-8")
        assert "claimed<<" in text and "outcome<<" in text and "\nerror\n" in text


def test_bad_option_from_the_environment_names_the_variable(store: Path) -> None:
    env = clean_env(JIT_DISPATCH_TIMEOUT="abc")
    result = run_cli("once", "--agent", "w1", "--command", "true", "--jit-dir", str(store), env=env)
    assert_one_error_line(result, 2, "--timeout", "JIT_DISPATCH_TIMEOUT")


def test_missing_required_option_is_a_usage_error(store: Path) -> None:
    result = run_cli("once", "--agent", "w1", "--jit-dir", str(store))
    assert_one_error_line(result, 2, "--command")
