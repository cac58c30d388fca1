"""The composite Action, run step by step the way the runner runs it.

Each `run:` step is executed with bash (`--noprofile --norc -eo pipefail`, the runner's default
for `shell: bash`) with its `env:` expressions resolved, a fresh `$GITHUB_OUTPUT` file per step
and one `$GITHUB_STEP_SUMMARY`. `uses:` steps are stood in for by what they provide: setup-python
by this Python, setup-uv by the uv of the test environment, actions/cache by a record of the keys
saved so far (a restore hits when its key was saved). The private venv is really created and the
locked packages really uv-installed into it, once per runner temp directory.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers import PROJECT_ROOT, clean_env, git, make_remote, parse_outputs, read_issue
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

ACTION = yaml.safe_load((PROJECT_ROOT / "action.yml").read_text())
EXPRESSION = re.compile(r"\$\{\{\s*([^}]+?)\s*\}\}")
STAND_INS = {"actions/setup-python", "actions/cache/restore", "actions/cache/save", "astral-sh/setup-uv"}
UV = Path(sys.executable).with_name("uv")  # the test extra installs uv
SAVED_CACHE_KEYS: set[str] = set()  # a key holds RUNNER_TEMP's hash: each runner temp has its own


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
        self.used: list[str] = []  # the `uses:` steps that ran
        self.action_path = PROJECT_ROOT

    def value(self, expression: str) -> str:
        context, _, rest = expression.partition(".")
        if context == "inputs":
            return self.inputs[rest]
        if context == "steps":
            step, _, output = rest.partition(".outputs.")
            return self.steps.get(step, {}).get(output, "")
        known = {
            "github.action_path": str(self.action_path),
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
        python = re.sub(r"cancelled\(\)", "False", python)
        python = re.sub(r"!(?!=)", " not ", python)
        python = re.sub(r"success\(\)", repr(not failed), python)
        python = re.sub(r"(inputs|steps)\.[\w.-]+", lambda m: repr(self.value(m.group(0))), python)
        python = python.replace("&&", " and ").replace("||", " or ")
        return bool(eval(python, {"__builtins__": {}}, {"True": True, "False": False}))

    def run(self, until: str = "") -> dict[str, str]:
        """Run the steps (up to and including the one with id `until`); the action's outputs."""
        for index, step in enumerate(ACTION["runs"]["steps"]):
            step_id = step.get("id", f"step{index}")
            if not self.condition(step.get("if", "success()")):
                continue
            if "uses" in step:
                self.used.append(step["uses"].split("@")[0])
                self.steps[step_id] = self.stand_in(step)
            else:
                exit_code_before = self.exit_code
                self.steps[step_id] = self.run_script(step)
                self.exit_code = self.exit_code or exit_code_before  # a later step cannot undo a failure
            if step_id == until:
                break
        return {name: self.resolve(spec["value"]) for name, spec in ACTION["outputs"].items()}

    def stand_in(self, step: dict[str, Any]) -> dict[str, str]:
        name = step["uses"].split("@")[0]
        assert name in STAND_INS, f"{name} has no stand-in in this test"
        if name == "actions/setup-python":
            assert step["with"]["update-environment"] is False, "the caller's Python must stay untouched"
            return {"python-path": sys.executable, "python-version": f"{sys.version_info[0]}.{sys.version_info[1]}"}
        if name == "astral-sh/setup-uv":
            assert re.fullmatch(r"\d+\.\d+\.\d+", step["with"]["version"]), "uv's version is pinned"
            assert step["with"]["enable-cache"] is False and step["with"]["add-problem-matchers"] is False
            assert step["env"]["UV_NO_MODIFY_PATH"], "the caller's PATH must stay untouched"
            installed_uv = subprocess.run([str(UV), "--version"], capture_output=True, text=True).stdout
            assert installed_uv.split()[1] == step["with"]["version"], "tests run the uv the Action pins"
            return {"uv-path": str(UV), "uv-version": step["with"]["version"]}
        key = self.resolve(step["with"]["key"])
        assert self.resolve(step["with"]["path"]) == str(self.runner_temp / "jit-dispatch-venv")
        if name == "actions/cache/save":
            SAVED_CACHE_KEYS.add(key)
            return {}
        return {"cache-hit": str(key in SAVED_CACHE_KEYS).lower(), "cache-primary-key": key}

    def run_script(self, step: dict[str, Any]) -> dict[str, str]:
        assert step["shell"] == "bash"
        assert "${{" not in step["run"], "inputs reach scripts through env: only"
        output_file = self.runner_temp / f"output-{len(self.steps)}"
        output_file.write_text("")
        env = clean_env(
            GITHUB_ACTIONS="true",
            GITHUB_ACTION_PATH=str(self.action_path),
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


def test_every_input_and_output_is_documented() -> None:
    reference = (PROJECT_ROOT / "docs" / "action.md").read_text()
    for kind in ("inputs", "outputs"):
        for name in ACTION[kind]:
            assert f"| `{name}` |" in reference, f"docs/action.md does not document {kind[:-1]} `{name}`"


def test_third_party_actions_are_pinned_to_commits() -> None:
    checked = 0
    for path in [PROJECT_ROOT / "action.yml", *sorted((PROJECT_ROOT / ".github" / "workflows").glob("*.yml"))]:
        for ref in re.findall(r"uses:\s*([^\s#]+)", path.read_text()):
            if ref.startswith("./"):
                continue
            checked += 1
            assert re.search(r"@[0-9a-f]{40}$", ref), f"{path.name}: {ref} is not pinned to a commit"
    assert checked, "no third-party `uses:` found: the pattern no longer matches"


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


def test_every_step_has_a_name() -> None:
    for step in ACTION["runs"]["steps"]:
        assert step.get("name"), f"step {step.get('id')} has no name"


def lock_pins(path: Path) -> dict[str, str]:
    """name -> version of a `uv pip compile --generate-hashes` file; every pin carries a hash."""
    pins: dict[str, str] = {}
    for entry in re.split(r"\n(?=\S)", path.read_text()):
        if entry.startswith("#") or not entry.strip():
            continue
        match = re.match(r"([A-Za-z0-9._-]+)==([^\s;]+)", entry)
        assert match, f"{path.name}: not an exact pin: {entry.splitlines()[0]}"
        assert "--hash=sha256:" in entry, f"{path.name}: {match.group(1)} has no hash"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def test_the_locks_pin_what_pyproject_asks_for() -> None:
    """`make lock` output is current: each declared requirement is pinned to a version it allows."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    locks = PROJECT_ROOT / "requirements"
    base, github, build = (lock_pins(locks / name) for name in ("action.lock", "action-github.lock", "build.lock"))
    wanted = [
        (base, project["project"]["dependencies"]),
        (github, project["project"]["dependencies"] + project["project"]["optional-dependencies"]["github"]),
        (build, project["build-system"]["requires"]),
    ]
    for pins, requirements in wanted:
        for requirement in map(Requirement, requirements):
            name = canonicalize_name(requirement.name)
            assert name in pins, f"{name} is not locked: run make lock"
            assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement}"
    assert {name: github[name] for name in base} == base, "the two runtime locks agree on shared pins"
    build_in = [line for line in (locks / "build.in").read_text().splitlines() if not line.startswith("#")]
    assert build_in == project["build-system"]["requires"], "requirements/build.in follows [build-system]"


def installed(venv: Path) -> dict[str, str]:
    freeze = subprocess.run(
        [str(UV), "pip", "freeze", "--python", str(venv / "bin" / "python")], capture_output=True, text=True, check=True
    ).stdout
    return {canonicalize_name(n): v for n, v in re.findall(r"^([^=@\s]+)(?:==| @ )(\S+)$", freeze, flags=re.M)}


def copy_action(target: Path) -> Path:
    """The files the Action's install step reads, copied to `target` (a checkout of the action)."""
    target.mkdir(parents=True)
    for name in ("action.yml", "pyproject.toml", "README.md"):
        shutil.copy(PROJECT_ROOT / name, target / name)
    for name in ("src", "requirements"):
        shutil.copytree(PROJECT_ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.mark.slow
def test_a_cache_miss_installs_exactly_the_lock_and_a_hit_installs_nothing(
    workspace: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, (first, second) = workspace
    action = copy_action(tmp_path / "the action")  # spaces in both paths
    temp = tmp_path / "runner temp"
    temp.mkdir()
    venv = temp / "jit-dispatch-venv"
    miss = CompositeRun(root, temp, {"agent": "ci-5", "command": "true", "sync": "none"})
    miss.action_path = action
    outputs = miss.run()
    assert miss.exit_code == 0, miss.log
    assert (outputs["issue-id"], outputs["outcome"]) == (first, "done")
    assert "astral-sh/setup-uv" in miss.used and "actions/cache/save" in miss.used
    pins = lock_pins(PROJECT_ROOT / "requirements" / "action.lock")
    assert installed(venv) == {**pins, "jit-dispatch": action.as_uri()}, "the lock, the package, no more"
    assert not (venv / "bin" / "pip").exists(), "built by uv"
    (venv / "restored-from-cache").touch()

    hit = CompositeRun(root, temp, {"agent": "ci-5", "command": "true", "sync": "none"})
    hit.action_path = action
    outputs = hit.run()
    assert hit.exit_code == 0, hit.log
    assert (outputs["issue-id"], outputs["outcome"]) == (second, "done")
    assert "astral-sh/setup-uv" not in hit.used and "actions/cache/save" not in hit.used
    assert (venv / "restored-from-cache").exists(), "a hit runs the restored environment as it is"

    other_tracker = CompositeRun(root, temp, {"agent": "ci-5", "command": "true", "tracker": "github"})
    other_tracker.action_path = action
    other_tracker.run(until="install")
    assert other_tracker.exit_code == 0, other_tracker.log
    assert "astral-sh/setup-uv" in other_tracker.used, "the tracker is part of the key"
    assert not (venv / "restored-from-cache").exists(), "the other tracker's environment is replaced, not reused"
    github_pins = lock_pins(PROJECT_ROOT / "requirements" / "action-github.lock")
    assert installed(venv) == {**github_pins, "jit-dispatch": action.as_uri()}
    subprocess.run([str(venv / "bin" / "python"), "-c", "import github"], check=True)


@pytest.mark.slow
def test_a_lock_that_does_not_match_its_hashes_stops_the_run(workspace: tuple[Path, list[str]], tmp_path: Path) -> None:
    root, (first, _) = workspace
    action = copy_action(tmp_path / "action")
    lock = action / "requirements" / "action.lock"
    head, click, tail = re.split(r"(?m)^(click==[^\n]*\n(?:\s+--hash=[^\n]*\n)+)", lock.read_text())
    lock.write_text(head + re.sub(r"sha256:[0-9a-f]{8}", "sha256:00000000", click) + tail)  # wheel and sdist
    temp = tmp_path / "runner-temp"
    temp.mkdir()
    run = CompositeRun(root, temp, {"agent": "ci-6", "command": "touch ran", "sync": "none"})
    run.action_path = action
    outputs = run.run()
    assert run.exit_code != 0
    assert "hash mismatch" in run.log.lower() and "click" in run.log
    assert outputs["outcome"] == "" and not (root / "ran").exists(), "nothing is dispatched"
    assert "actions/cache/save" not in run.used, "a failed install is not cached"
    assert read_issue(root / ".jit", first)["state"] == "ready"


@pytest.mark.slow
def test_a_hit_without_its_environment_stops_with_one_clear_line(
    workspace: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, ids = workspace
    temp = tmp_path / "runner-temp"
    temp.mkdir()
    first = CompositeRun(root, temp, {"agent": "ci-7", "command": "true", "dry-run": "true", "sync": "none"})
    first.run()
    assert first.exit_code == 0 and "actions/cache/save" in first.used, first.log
    venv = temp / "jit-dispatch-venv"
    shutil.rmtree(venv)  # a saved key whose restore brought nothing usable
    run = CompositeRun(root, temp, {"agent": "ci-7", "command": "touch ran", "sync": "none"})
    outputs = run.run()
    assert run.exit_code == 1 and "astral-sh/setup-uv" not in run.used
    errors = [line for line in run.log.splitlines() if line.startswith("::error")]
    assert errors == [
        f"::error title=jit-dispatch::the restored environment has no {venv}/bin/jit-dispatch; delete its cache entry"
    ]
    assert outputs["outcome"] == "" and not (root / "ran").exists()
    assert [read_issue(root / ".jit", i)["state"] for i in ids] == ["ready", "ready"]
