"""The composite Action, run step by step the way the runner runs it.

Each `run:` step is executed with bash (`--noprofile --norc -eo pipefail`, the runner's default
for `shell: bash`) with its `env:` expressions resolved, a fresh `$GITHUB_OUTPUT` file per step
and one `$GITHUB_STEP_SUMMARY`. `uses:` steps are stood in for by what they provide. The private
venv is really created and the package really pip-installed into it, once per test session.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import PROJECT_ROOT, clean_env, git, make_remote, parse_outputs, read_issue
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

ACTION = yaml.safe_load((PROJECT_ROOT / "action.yml").read_text())
EXPRESSION = re.compile(r"\$\{\{\s*([^}]+?)\s*\}\}")
STAND_INS = {"actions/setup-python", "actions/cache"}


class CompositeRun:
    def __init__(self, workspace: Path, runner_temp: Path, inputs: dict[str, str]) -> None:
        unknown = set(inputs) - set(ACTION["inputs"])
        assert not unknown, f"not inputs of action.yml: {unknown}"
        self.workspace = workspace
        self.runner_temp = runner_temp
        self.inputs = {name: str(spec.get("default", "")) for name, spec in ACTION["inputs"].items()}
        self.inputs.update(inputs)
        self.steps: dict[str, dict[str, str]] = {}
        self.summary = runner_temp / "step-summary.md"
        self.log = ""
        self.exit_code = 0
        self.job_index, self.job_total = "0", "1"

    def value(self, expression: str) -> str:
        context, _, rest = expression.partition(".")
        if context == "inputs":
            return self.inputs[rest]
        if context == "steps":
            step, _, output = rest.partition(".outputs.")
            return self.steps.get(step, {}).get(output, "")
        known = {
            "github.action_path": str(PROJECT_ROOT),
            "runner.temp": str(self.runner_temp),
            "runner.os": "Linux",
            "runner.arch": "X64",
            "strategy.job-index": self.job_index,
            "strategy.job-total": self.job_total,
        }
        return known[expression]

    def resolve(self, text: Any) -> str:
        return EXPRESSION.sub(lambda m: self.value(m.group(1)), str(text))

    def condition(self, expression: str) -> bool:
        """The `if:` expressions the action uses: always(), ==, !=, &&, || over inputs and step outputs."""
        failed = self.exit_code != 0
        python = re.sub(r"always\(\)", "True", expression)
        python = re.sub(r"success\(\)", repr(not failed), python)
        python = re.sub(r"(inputs|steps)\.[\w.-]+", lambda m: repr(self.value(m.group(0))), python)
        python = python.replace("&&", " and ").replace("||", " or ")
        return bool(eval(python, {"__builtins__": {}}, {"True": True, "False": False}))

    def run(self) -> dict[str, str]:
        for index, step in enumerate(ACTION["runs"]["steps"]):
            step_id = step.get("id", f"step{index}")
            if not self.condition(step.get("if", "success()")):
                continue
            if "uses" in step:
                self.steps[step_id] = self.stand_in(step)
                continue
            exit_code_before = self.exit_code
            self.steps[step_id] = self.run_script(step)
            self.exit_code = self.exit_code or exit_code_before  # a later step cannot undo a failure
        return {name: self.resolve(spec["value"]) for name, spec in ACTION["outputs"].items()}

    def stand_in(self, step: dict[str, Any]) -> dict[str, str]:
        name = step["uses"].split("@")[0]
        assert name in STAND_INS, f"{name} has no stand-in in this test"
        if name == "actions/setup-python":
            assert step["with"]["update-environment"] is False, "the caller's Python must stay untouched"
            return {"python-path": sys.executable, "python-version": f"{sys.version_info[0]}.{sys.version_info[1]}"}
        return {"cache-hit": "false"}

    def run_script(self, step: dict[str, Any]) -> dict[str, str]:
        assert step["shell"] == "bash"
        assert "${{" not in step["run"], "inputs reach scripts through env: only"
        output_file = self.runner_temp / f"output-{len(self.steps)}"
        output_file.write_text("")
        env = clean_env(
            GITHUB_ACTIONS="true",
            GITHUB_ACTION_PATH=str(PROJECT_ROOT),
            GITHUB_WORKSPACE=str(self.workspace),
            GITHUB_OUTPUT=str(output_file),
            GITHUB_STEP_SUMMARY=str(self.summary),
            GITHUB_RUN_ID="4242",
            GITHUB_REPOSITORY="octo/repo",
            GITHUB_SERVER_URL="https://github.com",
            RUNNER_TEMP=str(self.runner_temp),
        )
        env.update({key: self.resolve(value) for key, value in step.get("env", {}).items()})
        script = self.runner_temp / "step.sh"
        script.write_text(step["run"])
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=self.workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.log += proc.stdout + proc.stderr
        self.exit_code = proc.returncode
        return parse_outputs(output_file.read_text())


@pytest.fixture(scope="session")
def runner_temp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by the tests below, so the venv is built once (later runs see it like a cache hit)."""
    return tmp_path_factory.mktemp("runner-temp")


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, list[str]]:
    store = JitStore.init(tmp_path / ".jit")
    ids = store.create_issues(
        [
            NewIssue("Fix the `build` | pipeline </details>", "high", labels=("component:ci", "type:bug")),
            NewIssue("Write docs", "normal", labels=("type:docs",)),
        ]
    )
    return tmp_path, ids


@pytest.mark.slow
def test_action_dispatches_and_reports(workspace: tuple[Path, list[str]], runner_temp: Path) -> None:
    root, (first, _) = workspace
    run = CompositeRun(root, runner_temp, {"agent": "ci-1", "command": 'echo "working on {title}"', "sync": "none"})
    outputs = run.run()
    assert run.exit_code == 0, run.log
    assert outputs["claimed"] == "true" and outputs["outcome"] == "done"
    assert outputs["issue-id"] == first and outputs["short-id"] == first[:8]
    assert outputs["title"] == "Fix the `build` | pipeline </details>"
    assert outputs["exit-code"] == "0" and outputs["attempt"] == "1"
    assert float(outputs["duration-seconds"]) >= 0
    summary = run.summary.read_text()
    assert summary.startswith("### ✅ jit-dispatch · done")
    assert "working on Fix the `build` | pipeline </details>" in summary  # verbatim, inside the fence
    outside_fences = re.sub(r"^(`{3,})text\n.*?\n\1$", "", summary, flags=re.S | re.M)
    assert outside_fences.count("</details>") == 1, "only the dispatcher's own details block closes"
    assert "::group::jit-dispatch" in run.log and "::stop-commands::" in run.log
    assert (
        read_issue(root / ".jit", first)["context"]["dispatch.run"] == "https://github.com/octo/repo/actions/runs/4242"
    )
    assert (runner_temp / "jit-dispatch-venv" / "bin" / "jit-dispatch").exists()


@pytest.mark.slow
def test_action_inputs_filter_and_failure_policy(workspace: tuple[Path, list[str]], runner_temp: Path) -> None:
    root, (_, docs) = workspace
    inputs = {
        "agent": "ci-2",
        "command": "exit 4",
        "sync": "none",
        "labels": "type:docs,\n",
        "exclude-labels": "component:ci",
        "max-attempts": "1",
        "fail-on-command-failure": "false",
    }
    run = CompositeRun(root, runner_temp, inputs)
    outputs = run.run()
    assert run.exit_code == 0, run.log
    assert (outputs["issue-id"], outputs["outcome"]) == (docs, "parked")
    assert outputs["reason"] == "exit code 4; parked after 1 failed attempts"
    assert "dispatch.parked_at" in read_issue(root / ".jit", docs)["context"]

    again = CompositeRun(root, runner_temp, {"agent": "ci-2", "command": "exit 4", "sync": "none"})
    outputs = again.run()
    assert again.exit_code == 1, again.log
    assert outputs["outcome"] == "released"
    assert "::warning title=jit-dispatch released::" in again.log


@pytest.mark.slow
def test_action_dry_run_and_bad_input(workspace: tuple[Path, list[str]], runner_temp: Path) -> None:
    root, (first, _) = workspace
    dry = CompositeRun(root, runner_temp, {"agent": "ci-3", "command": "true", "dry-run": "true", "sync": "none"})
    outputs = dry.run()
    assert (dry.exit_code, outputs["outcome"], outputs["claimed"], outputs["issue-id"]) == (
        0,
        "dry-run",
        "false",
        first,
    )
    assert read_issue(root / ".jit", first)["state"] == "ready"

    bad = CompositeRun(
        root, runner_temp, {"agent": "ci-3", "command": "true", "min-priority": "urgent", "sync": "none"}
    )
    outputs = bad.run()
    assert bad.exit_code == 2
    assert "::error title=jit-dispatch::" in bad.log and "--min-priority" in bad.log
    assert outputs["outcome"] == "error"


def test_every_input_reaches_the_cli_through_env() -> None:
    dispatch = next(s for s in ACTION["runs"]["steps"] if s.get("id") == "dispatch")
    passed = {EXPRESSION.search(str(v)).group(1) for v in dispatch["env"].values()}  # type: ignore[union-attr]
    conditions = " ".join(str(step.get("if", "")) for step in ACTION["runs"]["steps"])
    expected = {f"inputs.{name}" for name in ACTION["inputs"] if name != "python-version"}
    assert {e for e in expected if e not in conditions} <= passed
    assert {"strategy.job-index", "strategy.job-total"} <= passed
    assert dispatch["run"].strip().splitlines()[-1].startswith("exec "), "signals must reach the CLI"
    for step in ACTION["runs"]["steps"]:
        assert "${{" not in step.get("run", "")


def test_every_input_and_output_is_documented_in_the_readme() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    for kind in ("inputs", "outputs"):
        for name in ACTION[kind]:
            assert f"| `{name}` |" in readme, f"README does not document {kind[:-1]} `{name}`"


def test_third_party_actions_are_pinned_to_commits() -> None:
    for path in [PROJECT_ROOT / "action.yml", *sorted((PROJECT_ROOT / ".github" / "workflows").glob("*.yml"))]:
        for ref in re.findall(r"uses:\s*([^\s#]+)", path.read_text()):
            if ref.startswith("./"):
                continue
            assert re.search(r"@[0-9a-f]{40}$", ref), f"{path.name}: {ref} is not pinned to a commit"


def test_no_step_changes_the_callers_environment() -> None:
    text = (PROJECT_ROOT / "action.yml").read_text()
    assert "GITHUB_PATH" not in text and "GITHUB_ENV" not in text
    assert "${{ runner.temp }}/jit-dispatch-venv" in text, "the action's Python lives in a private venv"


@pytest.mark.slow
def test_action_in_remote_mode_records_on_the_remote(tmp_path: Path, runner_temp: Path) -> None:
    """The action's default: the claim and the result land on the remote; the clone stays clean."""
    remote = make_remote(tmp_path, [NewIssue("remote work", "high"), NewIssue("more work", "high")])
    workspace = remote.clone(tmp_path / "workspace")
    head = git(workspace, "rev-parse", "HEAD")
    run = CompositeRun(workspace, runner_temp, {"agent": "ci-remote", "command": "echo {short_id}"})
    run.job_index, run.job_total = "1", "2"
    outputs = run.run()
    assert run.exit_code == 0, run.log
    assert outputs["outcome"] == "done" and outputs["sync-attempts"] == "1"
    assert outputs["issue-id"] == remote.ids[1], "job 1 of 2 starts on the second candidate of the top tier"
    commits = outputs["commits"].split()
    assert len(commits) == 2 and git(remote.bare, "rev-parse", "main").strip() == commits[-1]
    assert remote.issue(remote.ids[1])["state"] == "done"
    assert git(workspace, "status", "--porcelain") == "" and git(workspace, "rev-parse", "HEAD") == head
    assert remote.refs("refs/jit-dispatch/claims/") == [], "the lock is gone once settled"


@pytest.mark.slow
def test_action_reaps_stale_claims_first_and_writes_the_status_dashboard(
    workspace: tuple[Path, list[str]], runner_temp: Path
) -> None:
    root, (first, second) = workspace
    path = root / ".jit" / "issues" / f"{first}.json"
    raw = json.loads(path.read_text())
    raw.update(state="in_progress", assignee="agent:dead-runner")
    raw["context"] = {"dispatch.claimed_at": "2026-01-01T00:00:00Z", "dispatch.attempts": "0"}
    path.write_text(json.dumps(raw, indent=2))
    inputs = {"agent": "ci-4", "command": "true", "sync": "none", "reap-stale-after": "1h", "status-summary": "true"}
    run = CompositeRun(root, runner_temp, inputs)
    outputs = run.run()
    assert run.exit_code == 0, run.log
    assert outputs["issue-id"] == first, "the reaped claim is ready again, and first in line"
    reaped = read_issue(root / ".jit", first)
    assert reaped["context"]["dispatch.attempts"] == "1"
    assert reaped["context"]["dispatch.last_reason"].startswith("stale claim (claimed ")
    summary = run.summary.read_text()
    assert summary.index("jit-dispatch · done") < summary.index("jit-dispatch status")
    assert "```mermaid" in summary and '"done" : 1' in summary and '"ready" : 1' in summary
    assert read_issue(root / ".jit", second)["state"] == "ready"


def test_every_cli_option_reads_its_jit_dispatch_env_var() -> None:
    """Design: every option is also readable from `JIT_DISPATCH_<NAME>` (how the Action passes inputs)."""
    import click

    from jit_dispatch.cli.main import cli

    context = click.Context(cli)
    for name in ("once", "ready", "reap", "status", "start"):
        command = cli.get_command(context, name)
        assert command is not None
        for param in command.params:
            if not isinstance(param, click.Option) or param.name in ("help", "show_all", "single_cycle", "park"):
                continue
            long_name = next(o for o in param.opts if o.startswith("--")).lstrip("-")
            expected = "JIT_DISPATCH_" + long_name.upper().replace("-", "_")
            envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
            assert envvars[:1] == [expected], f"{name} {param.opts}: {param.envvar}"  # then e.g. GITHUB_TOKEN
