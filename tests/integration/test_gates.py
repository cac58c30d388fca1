"""jit's quality gates in the dispatch cycle, end to end: real stores, real checkers, the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gate_stores import ERAS, gate, gate_runs, gated_repo
from helpers import clean_env, git, parse_outputs, read_events, read_issue, run_cli
from jit_dispatch.trackers.jit.store import NewIssue
from processes import alive, peak_rss_kib, wait_for_file
from real_jit import BIN_VARIABLE, assert_real_jit_reads, jit_binary

RUN_FIELDS = [
    "schema_version", "run_id", "gate_key", "stage", "issue_id", "commit", "branch", "status", "started_at",
    "completed_at", "duration_ms", "exit_code", "stdout", "stderr", "command", "by", "message",
]  # fmt: skip


# The registry the test writes is one real jit refuses too: its `validate` is not the check there.
REJECTED_BY_JIT = pytest.mark.registry_jit_rejects


@pytest.fixture(autouse=True)
def real_jit_reads_every_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """After each scenario, the real jit of both eras validates the store and shows the gate runs
    (when JIT_DISPATCH_JIT_BIN names the binaries; see test_jit_interop.py)."""
    yield
    if request.node.get_closest_marker("registry_jit_rejects") or not os.environ.get(BIN_VARIABLE):
        return
    for root in sorted(tmp_path.glob("repo-*/.jit")):
        for era in ("seed", "newest"):
            assert_real_jit_reads(jit_binary(era), root)


def once(root: Path, command: str, *extra: str, env: dict[str, str] | None = None):
    repo = root.parent
    args = ["once", "--agent", "w1", "--command", command, "--jit-dir", str(root), "--json", *extra]
    return run_cli(*args, cwd=repo, env=env)


def gate_events(root: Path, issue_id: str) -> list[tuple[str, str | None]]:
    return [(e["type"], e.get("gate_key")) for e in read_events(root) if e["issue_id"] == issue_id]


# --------------------------------------------------------------------------- postchecks
@pytest.mark.parametrize("era", ERAS)
def test_auto_postchecks_pass_and_the_issue_is_done_recorded_as_jit_records_it(tmp_path: Path, era: str) -> None:
    probe = 'echo "$JIT_ISSUE_ID $JIT_GATE_KEY $JIT_STAGE $EXTRA ${JIT_CONTEXT_FILE:-none} $(basename "$PWD")"'
    gates = [
        gate(era, "tests", "postcheck", probe, env={"EXTRA": "from-env"}, working_dir="sub"),
        gate(era, "fmt", "postcheck", "true"),
    ]
    root, (issue_id,) = gated_repo(tmp_path, era, gates, NewIssue("work", gates_required=("tests", "fmt")))
    (root.parent / "sub").mkdir()
    head = git(root.parent, "rev-parse", "HEAD").strip()
    result = once(root, "true", env=clean_env(JIT_CONTEXT_FILE="/inherited/must/not/leak"))
    assert (result.returncode, result.json["outcome"]) == (0, "done"), result.stderr
    assert [(g["key"], g["stage"], g["result"], g["exit_code"]) for g in result.json["gates"]] == [
        ("tests", "postcheck", "passed", 0), ("fmt", "postcheck", "passed", 0),
    ]  # fmt: skip
    assert result.json["failed_gate"] is None
    raw = read_issue(root, issue_id)
    assert raw["state"] == "done"
    runs = gate_runs(root)
    assert [list(run) for run in runs] == [RUN_FIELDS, RUN_FIELDS]
    tests_run = next(r for r in runs if r["gate_key"] == "tests")
    assert tests_run["stdout"] == f"{issue_id} tests postcheck from-env none sub\n"
    assert (tests_run["status"], tests_run["exit_code"], tests_run["by"], tests_run["stage"]) == (
        "passed", 0, "auto:executor", "postcheck",
    )  # fmt: skip
    assert (tests_run["commit"], tests_run["branch"], tests_run["command"]) == (head, "main", probe)
    assert tests_run["run_id"] == next(g["run_id"] for g in result.json["gates"] if g["key"] == "tests")
    for key in ("tests", "fmt"):
        run = next(r for r in runs if r["gate_key"] == key)
        assert raw["gates_status"][key] == {
            "status": "passed",
            "updated_by": "auto:executor",
            "updated_at": run["started_at"],
        }
    assert gate_events(root, issue_id)[3:] == [
        ("gate_passed", "tests"), ("gate_passed", "fmt"),
        ("issue_state_changed", None), ("issue_completed", None),
    ]  # fmt: skip
    passed = [e for e in read_events(root) if e["type"] == "gate_passed"]
    assert [list(e) for e in passed] == [["type", "id", "issue_id", "timestamp", "gate_key", "updated_by"]] * 2


def test_a_failing_postcheck_releases_with_the_reason_and_counts_the_attempt(tmp_path: Path) -> None:
    gates = [
        gate("newest", "lint", "postcheck", "echo lint says no; exit 3"),
        gate("newest", "ok", "postcheck", "true"),
    ]
    root, (issue_id,) = gated_repo(tmp_path, "newest", gates, NewIssue("work", gates_required=("lint", "ok")))
    outputs = tmp_path / "outputs"
    summary = tmp_path / "summary.md"
    result = once(root, "true", env=clean_env(GITHUB_OUTPUT=str(outputs), GITHUB_STEP_SUMMARY=str(summary)))
    assert (result.returncode, result.json["outcome"]) == (1, "released"), result.stderr
    assert result.json["reason"] == "gate 'lint' failed (exit 3)"
    assert result.json["failed_gate"] == "lint"
    raw = read_issue(root, issue_id)
    assert (raw["state"], raw["assignee"]) == ("ready", None)
    assert raw["context"]["dispatch.last_reason"] == "gate 'lint' failed (exit 3)"
    assert raw["context"]["dispatch.attempts"] == "1"
    assert raw["gates_status"]["lint"]["status"] == "failed" and raw["gates_status"]["ok"]["status"] == "passed"
    assert ("gate_failed", "lint") in gate_events(root, issue_id)
    out = parse_outputs(outputs.read_text())
    assert out["failed-gate"] == "lint"
    assert [(g["key"], g["result"]) for g in json.loads(out["gates"])] == [("lint", "failed"), ("ok", "passed")]
    text = summary.read_text()
    assert "| Gate | Kind | Stage | Result | Duration | Exit code |" in text
    assert (
        "| `` lint `` | gate | postcheck | ❌ failed |" in text or "| ` lint ` | gate | postcheck | ❌ failed |" in text
    )
    assert "gate 'lint' output" in text and "lint says no" in text

    # The next attempt sees why; when the gate passes, the issue is done.
    (root / "gates.json").write_text((root / "gates.json").read_text().replace("echo lint says no; exit 3", "true"))
    again = once(root, "true")
    assert (again.json["outcome"], again.json["attempt"]) == ("done", 2), again.stderr
    assert read_issue(root, issue_id)["gates_status"]["lint"]["status"] == "passed"


def test_on_gate_failure_gated_keeps_jits_behaviour(tmp_path: Path) -> None:
    root, (issue_id,) = gated_repo(
        tmp_path, "seed", [gate("seed", "lint", "postcheck", "exit 1")], NewIssue("w", gates_required=("lint",))
    )
    result = once(root, "true", "--on-gate-failure", "gated")
    assert (result.returncode, result.json["outcome"]) == (0, "gated"), result.stderr
    assert result.json["reason"] == "gate 'lint' failed (exit 1)"
    raw = read_issue(root, issue_id)
    assert raw["state"] == "gated" and raw["gates_status"]["lint"]["status"] == "failed"
    assert "dispatch.attempts" not in raw["context"] or raw["context"]["dispatch.attempts"] == "0"


@pytest.mark.parametrize("era", ERAS)
def test_open_manual_gate_after_passing_auto_gates_is_gated(tmp_path: Path, era: str) -> None:
    gates = [gate(era, "tests", "postcheck", "true"), gate(era, "code-review", "postcheck")]
    root, (issue_id,) = gated_repo(tmp_path, era, gates, NewIssue("w", gates_required=("tests", "code-review")))
    result = once(root, "true")
    assert (result.returncode, result.json["outcome"], result.json["reason"]) == (0, "gated", None), result.stderr
    raw = read_issue(root, issue_id)
    assert raw["state"] == "gated" and raw["gates_status"] == {
        "tests": {"status": "passed", "updated_by": "auto:executor", "updated_at": gate_runs(root)[0]["started_at"]}
    }


def test_postchecks_run_every_time_whatever_an_older_status_says(tmp_path: Path) -> None:
    root, (issue_id,) = gated_repo(
        tmp_path, "newest", [gate("newest", "tests", "postcheck", "exit 9")], NewIssue("w", gates_required=("tests",))
    )
    path = root / "issues" / f"{issue_id}.json"
    raw = json.loads(path.read_text())
    raw["gates_status"] = {"tests": {"status": "passed", "updated_by": "human:bob", "updated_at": raw["created_at"]}}
    path.write_text(json.dumps(raw, indent=2))
    result = once(root, "true")
    assert result.json["reason"] == "gate 'tests' failed (exit 9)"
    assert read_issue(root, issue_id)["gates_status"]["tests"]["status"] == "failed"


# --------------------------------------------------------------------------- prechecks
def test_a_failing_precheck_releases_before_the_command_runs_and_parks_at_the_limit(tmp_path: Path) -> None:
    gates = [
        gate("newest", "second", "precheck", "echo second >> order", priority=200),
        gate("newest", "first", "precheck", "echo first >> order; exit 4", priority=10),
        gate("newest", "post", "postcheck", "echo post >> order"),
    ]
    root, (issue_id,) = gated_repo(tmp_path, "newest", gates, NewIssue("w", gates_required=("second", "first", "post")))
    result = once(root, "touch command-ran", "--max-attempts", "1")
    assert (result.returncode, result.json["outcome"]) == (1, "parked"), result.stderr
    assert result.json["reason"] == "precheck 'first' failed (exit 4); parked after 1 failed attempts"
    assert result.json["exit_code"] is None and result.json["failed_gate"] == "first"
    repo = root.parent
    assert not (repo / "command-ran").exists()
    assert (repo / "order").read_text() == "first\nsecond\n", "prechecks run by priority, all of them, as jit does"
    raw = read_issue(root, issue_id)
    assert raw["context"]["dispatch.last_reason"] == "precheck 'first' failed (exit 4)"
    assert "dispatch.parked_at" in raw["context"]
    assert [(r["gate_key"], r["stage"], r["status"]) for r in gate_runs(root)] == [
        ("first", "precheck", "failed"), ("second", "precheck", "passed"),
    ]  # fmt: skip


def test_passing_prechecks_are_recorded_when_the_command_fails(tmp_path: Path) -> None:
    root, (issue_id,) = gated_repo(
        tmp_path, "seed", [gate("seed", "pre", "precheck", "true")], NewIssue("w", gates_required=("pre",))
    )
    result = once(root, "exit 7")
    assert (result.json["outcome"], result.json["reason"]) == ("released", "exit code 7")
    assert read_issue(root, issue_id)["gates_status"]["pre"]["status"] == "passed"
    assert [r["gate_key"] for r in gate_runs(root)] == ["pre"]


# --------------------------------------------------------------------------- timeouts, context, checks
def test_a_checker_is_stopped_as_a_group_at_its_timeout(tmp_path: Path) -> None:
    slow = "sleep 300 & echo $! > bgpid; sleep 300"
    root, (_issue_id,) = gated_repo(
        tmp_path, "seed", [gate("seed", "slow", "postcheck", slow, timeout=1)], NewIssue("w", gates_required=("slow",))
    )
    started = time.monotonic()
    result = once(root, "true")
    assert time.monotonic() - started < 20
    assert result.json["reason"] == "gate 'slow' timed out after 1s", result.stderr
    (run,) = gate_runs(root)
    assert (run["status"], run["exit_code"], run["message"]) == ("error", None, None)  # jit's record: no message
    assert not alive(int((root.parent / "bgpid").read_text()))


def test_pass_context_gives_jits_context_file(tmp_path: Path) -> None:
    command = 'cp "$JIT_CONTEXT_FILE" context.json'
    gates = [gate("newest", "review", "postcheck", command, pass_context=True, prompt_file="prompt.md")]
    root, (issue_id,) = gated_repo(tmp_path, "newest", gates, NewIssue("w", gates_required=("review",)))
    (root.parent / "prompt.md").write_text("Review it.\n")
    first = once(root, "true")
    assert first.json["outcome"] == "done", first.stderr
    context = json.loads((root.parent / "context.json").read_text())
    assert list(context) == ["schema_version", "prompt", "issue", "gate", "run_history"]
    assert (context["prompt"], context["issue"]["id"], context["gate"]["key"]) == ("Review it.\n", issue_id, "review")
    assert context["run_history"] == []


def test_checks_run_for_any_tracker_after_a_successful_command(tmp_path: Path) -> None:
    root, (issue_id, _other) = gated_repo(tmp_path, "seed", [], NewIssue("a", "high"), NewIssue("b"))
    env = clean_env(JIT_DISPATCH_CHECK="echo checking {short_id}\ntest -f built")
    failed = once(root, "true", env=env)
    assert (failed.json["outcome"], failed.json["reason"]) == ("released", "check 'test -f built' failed (exit 1)")
    assert [(g["key"], g["kind"], g["result"]) for g in failed.json["gates"]] == [
        ("echo checking {short_id}", "check", "passed"), ("test -f built", "check", "failed"),
    ]  # fmt: skip
    assert not (root / "gate-runs").exists(), "checks are reported, not recorded as jit gates"
    passed = once(root, "touch built", env=env)
    assert passed.json["outcome"] == "done" and passed.json["issue_id"] == issue_id


def test_gates_skip_is_the_old_behaviour(tmp_path: Path) -> None:
    root, (_issue_id,) = gated_repo(
        tmp_path, "seed", [gate("seed", "t", "postcheck", "exit 1")], NewIssue("w", gates_required=("t",))
    )
    result = once(root, "true", "--gates", "skip")
    assert (result.json["outcome"], result.json["gates"]) == ("gated", [])
    assert not (root / "gate-runs").exists()


def test_dry_run_lists_the_gates_that_would_run(tmp_path: Path) -> None:
    gates = [gate("newest", "pre", "precheck", "true"), gate("newest", "tests", "postcheck", "true")]
    root, (_issue_id,) = gated_repo(tmp_path, "newest", gates, NewIssue("w", gates_required=("tests", "pre")))
    result = once(root, "true", "--dry-run", "--check", "make lint")
    assert result.json["outcome"] == "dry-run"
    assert result.json["reason"].endswith("; would run precheck 'pre', gate 'tests', check 'make lint'")
    assert [g["result"] for g in result.json["gates"]] == ["would run"] * 3


def test_ready_all_and_status_show_the_gates_an_issue_still_needs(tmp_path: Path) -> None:
    gates = [gate("seed", "tests", "postcheck", "true"), gate("seed", "review", "postcheck")]
    root, (_issue_id,) = gated_repo(tmp_path, "seed", gates, NewIssue("w", gates_required=("tests", "review")))
    ready = run_cli("ready", "--all", "--jit-dir", str(root))
    assert ready.stdout.strip().endswith("[gates: tests (auto); review (manual)]"), ready.stdout
    data = run_cli("ready", "--all", "--json", "--jit-dir", str(root)).json
    assert data["dispatchable"][0]["gates_needed"] == [
        {"key": "tests", "stage": "postcheck", "mode": "auto"},
        {"key": "review", "stage": "postcheck", "mode": "manual"},
    ]
    status = run_cli("status", "--jit-dir", str(root))
    assert "[gates: tests (auto); review (manual)]" in status.stdout


# --------------------------------------------------------------------------- bad registries
@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        pytest.param(
            None, "gate 'g' is required but not defined in the gate registry (gates.json)", marks=REJECTED_BY_JIT
        ),
        pytest.param(
            {"checker": {"type": "wasm", "command": "x"}},
            "gate 'g' has a checker of unknown type 'wasm'",
            marks=REJECTED_BY_JIT,
        ),
        pytest.param(
            {"timeout": "ten"},
            "gate 'g' has an invalid timeout_seconds 'ten' (whole seconds above 0)",
            marks=REJECTED_BY_JIT,
        ),
        ({"working_dir": "../elsewhere"}, "gate 'g' has a working_dir outside the repository: '../elsewhere'"),
        ({"working_dir": "/etc"}, "gate 'g' has a working_dir outside the repository: '/etc'"),
    ],
    ids=["undefined", "unknown-type", "timeout", "dotdot", "absolute"],
)
def test_a_broken_gate_holds_the_issue_with_one_line_naming_it(tmp_path: Path, entry: dict | None, reason: str) -> None:
    gates = []
    if entry is not None:
        entry = dict(entry)
        defined = gate(
            "newest", "g", "postcheck", "true", **{k: entry.pop(k) for k in ("timeout", "working_dir") if k in entry}
        )
        if "checker" in entry:
            defined["checker"] = entry["checker"]
        gates.append(defined)
    root, (issue_id,) = gated_repo(tmp_path, "newest", gates, NewIssue("w", gates_required=("g",)))
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    result = once(root, "true")
    assert (result.returncode, result.json["outcome"]) == (0, "idle"), result.stderr
    assert "Traceback" not in result.stderr
    held = run_cli("ready", "--all", "--json", "--jit-dir", str(root)).json["held"]
    assert [(h["issue_id"], h["reason"]) for h in held] == [(issue_id, reason)]
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")} == {
        p: b for p, b in before.items() if not p.name.endswith(".lock")
    }


def test_a_working_dir_escaping_through_a_symlink_releases_the_issue(tmp_path: Path) -> None:
    gates = [gate("seed", "g", "postcheck", "touch escaped", working_dir="link")]
    root, (issue_id,) = gated_repo(tmp_path, "seed", gates, NewIssue("w", gates_required=("g",)))
    outside = tmp_path / "outside"
    outside.mkdir()
    (root.parent / "link").symlink_to(outside)
    result = once(root, "true")
    assert result.json["reason"] == "gate 'g' failed (working_dir 'link' resolves outside the repository)"
    assert not (outside / "escaped").exists()
    assert gate_runs(root) == []  # it never ran: jit fails such a check without a run record
    assert read_issue(root, issue_id)["state"] == "ready"


# --------------------------------------------------------------------------- streaming and cancellation
def test_checker_output_streams_in_its_own_group_fenced_in_actions(tmp_path: Path) -> None:
    root, _ = gated_repo(
        tmp_path,
        "seed",
        [gate("seed", "tests", "postcheck", "echo '::error::forged'")],
        NewIssue("w", gates_required=("tests",)),
    )
    result = run_cli(
        "once", "--agent", "w1", "--command", "true", "--jit-dir", str(root),
        cwd=root.parent, env=clean_env(GITHUB_ACTIONS="true"),
    )  # fmt: skip
    lines = result.stdout.splitlines()
    start = lines.index("::group::gate tests")
    assert lines[start + 1].startswith("::stop-commands::")
    token = lines[start + 1].split("::")[2]
    assert lines[start + 2 : start + 5] == ["::error::forged", f"::{token}::", "::endgroup::"]


def test_sigterm_during_a_checker_stops_it_and_releases_the_issue(tmp_path: Path) -> None:
    command = "echo $$ > pgid; echo started > marker; sleep 300"
    root, (issue_id,) = gated_repo(
        tmp_path,
        "seed",
        [gate("seed", "slow", "postcheck", command, timeout=600)],
        NewIssue("w", gates_required=("slow",)),
    )
    repo = root.parent
    argv = [sys.executable, "-m", "jit_dispatch", "once", "--agent", "w1", "--command", "true", "--json"]
    proc = subprocess.Popen(
        [*argv, "--jit-dir", str(root)], cwd=repo, env=clean_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        wait_for_file(repo / "marker", proc)
        pgid = int((repo / "pgid").read_text())
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=15)
        assert time.monotonic() - sent < 7
        assert proc.returncode == 143
        assert (json.loads(stdout)["outcome"], json.loads(stdout)["reason"]) == ("released", "cancelled (SIGTERM)")
        assert not alive(pgid)
        raw = read_issue(root, issue_id)
        assert (raw["state"], raw["context"]["dispatch.last_reason"]) == ("ready", "cancelled (SIGTERM)")
        assert not (root / "gate-runs").exists(), "an interrupted checker gives no verdict"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_during_a_checker_in_actions_resumes_workflow_commands_and_closes_its_group(tmp_path: Path) -> None:
    root, _ = gated_repo(
        tmp_path, "newest", [gate("newest", "slow", "postcheck", "echo started > marker; sleep 300", timeout=600)],
        NewIssue("w", gates_required=("slow",)),
    )  # fmt: skip
    repo = root.parent
    argv = [sys.executable, "-m", "jit_dispatch", "once", "--agent", "w1", "--command", "true", "--jit-dir", str(root)]
    env = clean_env(GITHUB_ACTIONS="true")
    proc = subprocess.Popen(argv, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_file(repo / "marker", proc)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stopped: str | None = None  # the runner ignores every workflow command until `::TOKEN::`
    depth = 0
    for line in stdout.splitlines():
        if stopped is not None:
            stopped = None if line == f"::{stopped}::" else stopped
        elif line.startswith("::stop-commands::"):
            stopped = line.removeprefix("::stop-commands::")
        else:
            depth += (line.startswith("::group::")) - (line == "::endgroup::")
    assert stopped is None, "workflow commands are still stopped: the release annotation would be swallowed"
    assert depth == 0, "a log group was left open"
    assert "jit-dispatch: gate 'slow' cancelled (SIGTERM)" in stdout
    assert stderr.startswith("::warning title=jit-dispatch released::")


@pytest.mark.slow
def test_a_checker_printing_200_mb_leaves_memory_flat(tmp_path: Path) -> None:

    loud = 'yes "some line of output 0123456789" | head -c 200000000'
    gates = [gate("seed", "loud", "postcheck", loud, timeout=120), gate("seed", "quiet", "postcheck", "true")]
    root, (big, small) = gated_repo(
        tmp_path,
        "seed",
        gates,
        NewIssue("big", "high", gates_required=("loud",)),
        NewIssue("small", gates_required=("quiet",)),
    )
    code, big_kib = peak_rss_kib(root, "true", root.parent, clean_env())
    assert code == 0 and read_issue(root, big)["state"] == "done"
    code, small_kib = peak_rss_kib(root, "true", root.parent, clean_env())
    assert code == 0 and read_issue(root, small)["state"] == "done"
    assert big_kib - small_kib < 15 * 1024, f"peak RSS grew from {small_kib} to {big_kib} KiB"
    (record,) = [r for r in gate_runs(root) if r["gate_key"] == "loud"]
    assert 0 < len(record["stdout"]) <= 32 * 1024


# --------------------------------------------------------------------------- remote mode
def test_remote_mode_records_the_gate_runs_in_the_settle_commit(tmp_path: Path) -> None:
    root, (issue_id,) = gated_repo(
        tmp_path, "newest", [gate("newest", "tests", "postcheck", "true")], NewIssue("w", gates_required=("tests",))
    )
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(root.parent), str(bare)], check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(bare), str(clone)], check=True)
    env = clean_env(**{k: v for k, v in os.environ.items() if k.startswith("GIT_")})
    result = run_cli("once", "--agent", "w1", "--command", "true", "--json", "--sync", "git",
                     "--commit-author", "bot <bot@example.invalid>", cwd=clone, env=env)  # fmt: skip
    assert result.json["outcome"] == "done", result.stderr
    claim, settle = result.json["commits"]
    changed = git(bare, "diff-tree", "--no-commit-id", "--name-only", "-r", settle).split()
    (run_file,) = [p for p in changed if p.startswith(".jit/gate-runs/")]
    assert run_file.endswith("/result.json")
    assert ".jit/gate-runs" not in git(bare, "diff-tree", "--no-commit-id", "--name-only", "-r", claim)
    record = json.loads(git(bare, "show", f"{settle}:{run_file}"))
    assert (record["issue_id"], record["status"]) == (issue_id, "passed")
    issue = json.loads(git(bare, "show", f"{settle}:.jit/issues/{issue_id}.json"))
    assert issue["state"] == "done" and issue["gates_status"]["tests"]["status"] == "passed"
    assert git(clone, "status", "--porcelain") == ""


# --------------------------------------------------------------------------- the agent pool
def test_the_pool_runs_gates_and_config_checks_and_logs_them(tmp_path: Path) -> None:
    gates = [gate("newest", "tests", "postcheck", "echo gate output; exit 2")]
    root, (gated_id, plain_id) = gated_repo(
        tmp_path, "newest", gates, NewIssue("with gate", "high", gates_required=("tests",)), NewIssue("plain")
    )
    config = root.parent / "dispatch.toml"
    config.write_text(
        'checks = ["echo check output"]\n\n[[agents]]\nid = "solo"\nmax_concurrent = 2\ncommand = "true"\n'
    )
    logs = tmp_path / "logs"
    result = run_cli("start", "--once", "--jit-dir", str(root), "--log-dir", str(logs), cwd=root.parent)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"settle  {gated_id[:8]} released (agent:solo, exit 0)  gate 'tests' failed (exit 2)" in result.stdout
    assert read_issue(root, plain_id)["state"] == "done"
    log = (logs / f"{gated_id[:8]}-attempt1.log").read_text()
    assert "--- jit-dispatch: gate 'tests' (postcheck)\ngate output\n" in log
    assert "check output" in log


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('gates = "sometimes"\n', "dispatch.toml:1: gates: Input should be 'run' or 'skip'"),
        ('on_gate_failure = "ignore"\n', "dispatch.toml:1: on_gate_failure: Input should be 'release' or 'gated'"),
        ('checks = [""]\n', "dispatch.toml:1: checks[0]: String should have at least 1 character"),
        ('checks = "make test"\n', "dispatch.toml:1: checks: Input should be a valid list"),
    ],
)
def test_bad_gate_settings_are_one_line_naming_the_key(tmp_path: Path, config: str, message: str) -> None:
    root, _ = gated_repo(tmp_path, "seed", [], NewIssue("w"))
    (root.parent / "dispatch.toml").write_text(config + '\n[[agents]]\nid = "a"\ncommand = "true"\n')
    result = once(root, "true")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"jit-dispatch: error: {message}"


def test_bad_gate_options_are_usage_errors(tmp_path: Path) -> None:
    root, _ = gated_repo(tmp_path, "seed", [], NewIssue("w"))
    for args, word in ((("--gates", "maybe"), "--gates"), (("--check", " "), "--check")):
        result = once(root, "true", *args)
        assert result.returncode == 2 and word in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("era", ERAS)
def test_a_gate_runs_link_is_never_written_through(tmp_path: Path, era: str) -> None:
    """A `gate-runs` planted as a symlink out of the store: the run records are refused, nothing lands outside."""
    root, (issue_id,) = gated_repo(tmp_path, era, [gate(era, "fmt", "postcheck", "true")],
                                   NewIssue("work", gates_required=("fmt",)))  # fmt: skip
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "gate-runs").symlink_to(outside)
    result = once(root, "true")
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
    assert "gate-runs" in result.json["reason"] and "symbolic link" in result.json["reason"]
    assert list(outside.iterdir()) == []
    raw = read_issue(root, issue_id)
    assert raw["state"] == "ready" and raw["assignee"] is None, "the refused done was given back, not left claimed"
    (root / "gate-runs").unlink()  # the real-jit check after the test reads a store without the planted link


@pytest.mark.parametrize("where", [pytest.param("gates.json", marks=REJECTED_BY_JIT), "issue"])
def test_a_registry_or_issue_nested_too_deep_is_one_line_not_a_traceback(tmp_path: Path, where: str) -> None:
    gates = [gate("newest", "g", "postcheck", "true")]
    root, (issue_id,) = gated_repo(tmp_path, "newest", gates, NewIssue("w", gates_required=("g",)))
    deep = "[" * 100_000 + "]" * 100_000
    if where == "gates.json":
        (root / "gates.json").write_text('{"gates": {"g": ' + deep + "}}")
    else:
        path = root / "issues" / f"{issue_id}.json"
        path.write_text(path.read_text().rstrip().removesuffix("}") + ', "x_deep": ' + deep + "}")
    result = run_cli("once", "--agent", "w1", "--command", "true", "--jit-dir", str(root))
    assert "Traceback" not in result.stderr, result.stderr[-300:]
    if where == "gates.json":
        assert result.returncode == 3
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"jit-dispatch: error: {root / 'gates.json'}: cannot be read as JSON (nested")
    else:  # a corrupt issue file is skipped with a warning, as a truncated one is
        assert result.returncode == 0 and "x_deep" not in result.stderr
        assert f"{issue_id}.json" in result.stderr
