"""`dispatch.toml`: the seed's format loads, every mistake is one clear line (exit 2), and `once`
merges the file under its flags. Real files, the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import clean_env, read_issue, run_cli
from jit_dispatch.cli.config import DispatchConfig, load_config
from jit_dispatch.cli.main import main
from jit_dispatch.errors import UsageError
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

StoreFactory = Callable[..., tuple[JitStore, list[str]]]

# The example of the original jit-dispatch README, verbatim in substance.
SEED_CONFIG = """\
poll_interval_secs = 5

[[agents]]
id = "copilot-1"
type = "copilot"
max_concurrent = 2
command = "gh copilot work {issue_id}"

[[agents]]
id = "ci-runner"
type = "ci"
max_concurrent = 5
command = "run-ci-job {issue_id}"
"""

BUILTIN = {
    "labels": [],
    "exclude_labels": [],
    "min_priority": None,
    "timeout": None,
    "max_attempts": 3,
    "shell": "bash",
    "workdir": None,
    "gates": "run",
    "on_gate_failure": "release",
    "checks": [],
    "deliver": "none",
    "branch_template": "jit/{short_id}-{slug}",
    "base": None,
    "allow_empty_delivery": False,
    "done_on": None,
    "max_review_rounds": 3,
    "draft": False,
    "pr_labels": [],
    "reviewers": [],
}


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- loading
def test_the_seed_example_config_loads(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path / "dispatch.toml", SEED_CONFIG))
    assert isinstance(loaded, DispatchConfig)
    assert loaded.poll_interval_secs == 5
    assert loaded.repos == []
    assert [(a.id, a.type, a.max_concurrent, a.command) for a in loaded.agents] == [
        ("copilot-1", "copilot", 2, "gh copilot work {issue_id}"),
        ("ci-runner", "ci", 5, "run-ci-job {issue_id}"),
    ]
    assert loaded.agent("ci-runner") is loaded.agents[1]
    assert loaded.agent("nobody") is None
    for agent in loaded.agents:
        effective = loaded.effective(agent)
        assert {k: effective[k] for k in BUILTIN} == BUILTIN, "nothing set: the built-in defaults"


def test_config_check_prints_the_effective_config_with_defaults(tmp_path: Path) -> None:
    write(tmp_path / "dispatch.toml", SEED_CONFIG)
    result = run_cli("config", "check", cwd=tmp_path)  # ./dispatch.toml, no --config
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "poll_interval_secs": 5.0,
        "listen": None,
        "repos": [],
        "store": {},
        "agents": [
            {**BUILTIN, "id": "copilot-1", "type": "copilot", "max_concurrent": 2,
             "command": "gh copilot work {issue_id}"},
            {**BUILTIN, "id": "ci-runner", "type": "ci", "max_concurrent": 5, "command": "run-ci-job {issue_id}"},
        ],
    }  # fmt: skip


def test_config_check_merges_agent_table_over_top_level_over_builtin(tmp_path: Path) -> None:
    path = write(
        tmp_path / "fleet.toml",
        """\
        max_attempts = 5
        timeout = "45m"
        exclude_labels = ["needs:human"]
        repos = [".jit", "../docs/.jit"]

        [[agents]]
        id = "db-expert"
        command = "./db.sh {issue_id}"
        labels = ["component:db"]
        max_attempts = 2
        timeout = 90
        min_priority = "high"
        workdir = "/srv/work"

        [[agents]]
        id = "generalist"
        command = "./any.sh"
        shell = "bash -eo pipefail"
        """,
    )
    result = run_cli("config", "check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["poll_interval_secs"] == 30.0, "built-in poll interval"
    assert data["repos"] == [".jit", "../docs/.jit"]
    db, generalist = data["agents"]
    assert db == {
        **BUILTIN, "labels": ["component:db"], "exclude_labels": ["needs:human"], "min_priority": "high",
        "timeout": 90.0, "max_attempts": 2, "workdir": "/srv/work",
        "id": "db-expert", "type": "agent", "max_concurrent": 1, "command": "./db.sh {issue_id}",
    }  # fmt: skip
    assert generalist == {
        **BUILTIN, "exclude_labels": ["needs:human"], "timeout": 2700.0, "max_attempts": 5,
        "shell": "bash -eo pipefail", "id": "generalist", "type": "agent", "max_concurrent": 1, "command": "./any.sh",
    }  # fmt: skip


# --------------------------------------------------------------------------- mistakes
AGENT = '[[agents]]\nid = "a1"\ncommand = "true"\n'

MISTAKES = {
    "unknown-key-top-level": ("polling_interval = 5\n" + AGENT, "polling_interval", "unknown key"),
    "unknown-key-in-agent": (AGENT + 'flavour = "vanilla"\n', "agents[0] (id 'a1').flavour", "unknown key"),
    "wrong-type-top-level": ('poll_interval_secs = "fast"\n' + AGENT, "poll_interval_secs", "valid number"),
    "wrong-type-in-agent": (AGENT + 'max_concurrent = "two"\n', "agents[0] (id 'a1').max_concurrent", "integer"),
    "wrong-type-labels": (AGENT + 'labels = "component:db"\n', "agents[0] (id 'a1').labels", "valid list"),
    "max-concurrent-zero": (AGENT + "max_concurrent = 0\n", "agents[0] (id 'a1').max_concurrent",
                            "greater than or equal to 1"),
    "max-attempts-zero": ("max_attempts = 0\n" + AGENT, "max_attempts", "greater than or equal to 1"),
    "poll-interval-zero": ("poll_interval_secs = 0\n" + AGENT, "poll_interval_secs", "greater than 0"),
    "bad-duration": (AGENT + 'timeout = "5 parsecs"\n', "agents[0] (id 'a1').timeout", "is not a duration"),
    "zero-duration": ('timeout = "0s"\n' + AGENT, "timeout", "greater than zero"),
    "boolean-duration": ("timeout = true\n" + AGENT, "timeout", "duration"),
    "bad-priority": (AGENT + 'min_priority = "urgent"\n', "agents[0] (id 'a1').min_priority", "critical, high"),
    "bad-label": (AGENT + 'labels = ["Component DB"]\n', "agents[0] (id 'a1').labels", "is not a jit label"),
    "bad-exclude-label": ('exclude_labels = ["nocolon"]\n' + AGENT, "exclude_labels", "is not a jit label"),
    "bad-agent-id": ('[[agents]]\nid = "two words"\ncommand = "true"\n', "id 'two words').id", "not a valid agent id"),
    "empty-agent-id": ('[[agents]]\nid = ""\ncommand = "true"\n', "agents[0] (id '').id", "at least 1"),
    "duplicate-agent-id": (AGENT + AGENT, "agents", "agent id 'a1' appears twice"),
    "missing-command": ('[[agents]]\nid = "a1"\n', "agents[0] (id 'a1').command", "Field required"),
    "empty-command": ('[[agents]]\nid = "a1"\ncommand = ""\n', "agents[0] (id 'a1').command", "at least 1"),
    "second-agent": (AGENT + '[[agents]]\nid = "a2"\ncommand = "true"\nmax_concurrent = -1\n',
                     "agents[1] (id 'a2').max_concurrent", "greater than or equal to 1"),
    "invalid-toml": (AGENT + "max_concurrent = \n", "mine.toml:4: not valid TOML", "column"),
}  # fmt: skip


def assert_one_error_line(stderr: str, *needles: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got: {stderr!r}"
    line = lines[0]
    assert line.startswith("jit-dispatch: error: "), line
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


@pytest.fixture(autouse=True)
def no_actions_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs see this process's environment: drop what Actions (or a user) set, as clean_env does."""
    for name in list(os.environ):
        if name.startswith(("GITHUB_", "JIT_", "RUNNER_")):
            monkeypatch.delenv(name)


def config_check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`jit-dispatch config check` in this process (no signal handlers, no store): exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as exited:
        main(["config", "check", *args])
    out, err = capsys.readouterr()
    return exited.value.code, out, err


@pytest.mark.parametrize("text,key,reason", MISTAKES.values(), ids=MISTAKES.keys())
def test_each_mistake_exits_2_with_one_line_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str, reason: str
) -> None:
    path = tmp_path / "conf" / "mine.toml"
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    code, out, err = config_check(capsys, "--config", str(path))
    assert (code, out) == (2, "")
    line = assert_one_error_line(err, key, reason)
    assert re.match(rf"jit-dispatch: error: {re.escape(str(path))}(:\d+)?: ", line), line
    with pytest.raises(UsageError) as caught:  # the same through the loader, for `start` and `once`
        load_config(path)
    assert caught.value.exit_code == 2 and line == f"jit-dispatch: error: {caught.value}"


def test_start_refuses_a_bad_config_before_touching_the_store(tmp_path: Path, new_store: StoreFactory) -> None:
    store, (issue,) = new_store(NewIssue("work"))
    path = write(tmp_path / "mine.toml", MISTAKES["unknown-key-in-agent"][0])
    result = run_cli("start", "--once", "--config", str(path), "--jit-dir", str(store.root), cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert_one_error_line(result.stderr, str(path), "agents[0] (id 'a1').flavour", "unknown key")
    assert read_issue(store.root, issue)["state"] == "ready"
    # A valid file without agents: nothing to run.
    path = write(tmp_path / "empty.toml", "poll_interval_secs = 1\n")
    result = run_cli("start", "--once", "--config", str(path), "--jit-dir", str(store.root), cwd=tmp_path)
    assert result.returncode == 2
    assert_one_error_line(result.stderr, str(path), "agents")


def test_missing_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere.toml"
    code, out, err = config_check(capsys, "--config", str(missing))
    assert (code, out) == (2, "")
    assert_one_error_line(err, str(missing), "not found")
    # Without --config, `config check` looks for ./dispatch.toml and says so.
    monkeypatch.chdir(tmp_path)
    code, out, err = config_check(capsys)
    assert (code, out) == (2, "")
    assert_one_error_line(err, "dispatch.toml: config file not found")
    # `once --config` with a missing file is an error too, before anything is claimed.
    result = run_cli("once", "--agent", "a", "--command", "true", "--config", str(missing), cwd=tmp_path)
    assert result.returncode == 2
    assert_one_error_line(result.stderr, str(missing), "not found")


def test_a_mistake_in_dispatch_toml_stops_once_before_claiming(tmp_path: Path, new_store: StoreFactory) -> None:
    store, (issue,) = new_store(NewIssue("work"))
    write(tmp_path / "dispatch.toml", AGENT + "max_concurrent = 0\n")
    result = run_cli("once", "--agent", "a1", "--command", "true", "--jit-dir", str(store.root), cwd=tmp_path)
    assert result.returncode == 2
    assert_one_error_line(result.stderr, "dispatch.toml", "max_concurrent")
    assert read_issue(store.root, issue)["state"] == "ready"


# --------------------------------------------------------------------------- once + config precedence
@pytest.fixture
def labelled(new_store: StoreFactory) -> tuple[Path, dict[str, str]]:
    """Three ready issues, one per component, so the label filter in effect is visible."""
    store, ids = new_store(
        NewIssue("db work", "high", labels=("component:db",)),
        NewIssue("ui work", "normal", labels=("component:ui",)),
        NewIssue("api work", "low", labels=("component:api",)),
    )
    return store.root, dict(zip(("db", "ui", "api"), ids, strict=True))


def once_json(root: Path, *args: str, cwd: Path) -> dict:
    result = run_cli("once", "--jit-dir", str(root), "--json", *args, cwd=cwd)
    assert result.returncode in (0, 1), result.stderr
    return result.json


PRECEDENCE_TOML = """\
max_attempts = 1
labels = ["component:api"]

[[agents]]
id = "tabled"
command = "echo tabled > ran-by; exit 7"
max_attempts = 2
labels = ["component:ui"]

[[agents]]
id = "bare"
command = "echo bare > ran-by; exit 7"
"""


def test_once_takes_the_agents_table_over_the_top_level(tmp_path: Path, labelled) -> None:
    root, ids = labelled
    config = write(tmp_path / "fleet.toml", PRECEDENCE_TOML)
    data = once_json(root, "--config", str(config), "--agent", "tabled", cwd=tmp_path)
    assert data["agent"] == "agent:tabled"
    assert data["issue_id"] == ids["ui"], "the agent's labels, not the top level's"
    assert (tmp_path / "ran-by").read_text() == "tabled\n", "the agent's command"
    assert data["outcome"] == "released", "the agent's max_attempts = 2, not the top level's 1"
    assert read_issue(root, ids["ui"])["context"]["dispatch.attempts"] == "1"


def test_once_falls_back_to_the_top_level_then_the_builtin(tmp_path: Path, labelled) -> None:
    root, ids = labelled
    config = write(tmp_path / "fleet.toml", PRECEDENCE_TOML)
    data = once_json(root, "--config", str(config), "--agent", "bare", cwd=tmp_path)
    assert data["issue_id"] == ids["api"], "the top-level labels"
    assert (tmp_path / "ran-by").read_text() == "bare\n"
    assert data["outcome"] == "parked", "the top-level max_attempts = 1 (built-in is 3)"
    # Without any max_attempts in the file, the built-in 3 applies: one failure only releases.
    plain = write(tmp_path / "plain.toml", '[[agents]]\nid = "p"\ncommand = "exit 7"\n')
    data = once_json(root, "--config", str(plain), cwd=tmp_path)  # the only agent: no --agent needed
    assert (data["agent"], data["issue_id"], data["outcome"]) == ("agent:p", ids["db"], "released")


def test_once_flags_beat_the_agents_table(tmp_path: Path, labelled) -> None:
    root, ids = labelled
    config = write(tmp_path / "fleet.toml", PRECEDENCE_TOML)
    data = once_json(
        root, "--config", str(config), "--agent", "tabled", "--max-attempts", "1", "--label", "component:db",
        "--command", "echo flag > ran-by; exit 5", cwd=tmp_path,
    )  # fmt: skip
    assert data["issue_id"] == ids["db"], "--label beats the agent's labels"
    assert (tmp_path / "ran-by").read_text() == "flag\n", "--command beats the agent's command"
    assert data["reason"].startswith("exit code 5")
    assert data["outcome"] == "parked", "--max-attempts 1 beats the agent's 2"


def test_once_flags_from_the_environment_beat_the_file_too(tmp_path: Path, labelled) -> None:
    root, ids = labelled
    config = write(tmp_path / "fleet.toml", PRECEDENCE_TOML)
    env = clean_env(JIT_DISPATCH_MAX_ATTEMPTS="1", JIT_DISPATCH_AGENT="tabled")
    result = run_cli("once", "--jit-dir", str(root), "--json", "--config", str(config), cwd=tmp_path, env=env)
    assert result.returncode == 1, result.stderr
    assert (result.json["agent"], result.json["issue_id"], result.json["outcome"]) == (
        "agent:tabled", ids["ui"], "parked",
    )  # fmt: skip


def test_once_picks_up_dispatch_toml_from_the_working_directory(tmp_path: Path, labelled) -> None:
    root, ids = labelled
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    write(workdir / "dispatch.toml", '[[agents]]\nid = "local"\ncommand = "echo $JIT_AGENT_ID > ran-by"\n'
          'min_priority = "normal"\nexclude_labels = ["component:ui"]\n')  # fmt: skip
    data = once_json(root, "--issue", ids["ui"], cwd=workdir)
    assert data["outcome"] == "idle", "the file's exclude_labels applies"
    data = once_json(root, cwd=workdir)
    assert (data["agent"], data["issue_id"], data["outcome"]) == ("agent:local", ids["db"], "done")
    assert (workdir / "ran-by").read_text() == "agent:local\n"
    data = once_json(root, cwd=workdir)
    assert data["outcome"] == "idle", "min_priority = normal and ui excluded: the low api issue stays"


def test_once_with_several_agents_and_no_agent_flag_is_a_usage_error(tmp_path: Path, labelled) -> None:
    root, _ = labelled
    write(tmp_path / "dispatch.toml", SEED_CONFIG)
    result = run_cli("once", "--jit-dir", str(root), cwd=tmp_path)
    assert result.returncode == 2
    assert_one_error_line(result.stderr, "--agent")


def test_once_with_an_agent_missing_from_the_file_needs_a_command(tmp_path: Path, labelled) -> None:
    root, ids = labelled
    write(tmp_path / "dispatch.toml", "max_attempts = 1\n" + SEED_CONFIG)
    result = run_cli("once", "--jit-dir", str(root), "--agent", "stranger", cwd=tmp_path)
    assert result.returncode == 2
    assert_one_error_line(result.stderr, "--command")
    # With a command it runs, and the top-level defaults still apply.
    data = once_json(root, "--agent", "stranger", "--command", "exit 3", cwd=tmp_path)
    assert (data["issue_id"], data["outcome"]) == (ids["db"], "parked")


# --------------------------------------------------------------------------- start-up cost
PROBE = """\
import json, sys
from jit_dispatch.cli.main import main
try:
    main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
else:
    code = "main returned"
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "pydantic": "pydantic" in sys.modules}, out)
"""


def probe_once(root: Path, cwd: Path) -> dict:
    report = cwd / "probe.json"
    argv = ["once", "--agent", "w", "--command", "true", "--jit-dir", str(root), "--json"]
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(report), *argv], cwd=cwd, env=clean_env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(report.read_text())


def test_once_without_a_config_does_not_import_pydantic(tmp_path: Path, new_store: StoreFactory) -> None:
    store, (first, second) = new_store(NewIssue("one", "high"), NewIssue("two"))
    bare = tmp_path / "bare"
    bare.mkdir()
    assert probe_once(store.root, bare) == {"code": 0, "pydantic": False}
    assert read_issue(store.root, first)["state"] == "done", "the probe really dispatched"
    # The control: with a dispatch.toml present, the same probe sees pydantic loaded.
    configured = tmp_path / "configured"
    configured.mkdir()
    write(configured / "dispatch.toml", "max_attempts = 2\n")
    assert probe_once(store.root, configured) == {"code": 0, "pydantic": True}
    assert read_issue(store.root, second)["state"] == "done"


# --------------------------------------------------------------------------- priorities, any case
@pytest.mark.parametrize("spelling", ["high", "HIGH", "High"])
def test_min_priority_flag_accepts_the_documented_names_in_any_case(tmp_path: Path, labelled, spelling) -> None:
    root, ids = labelled
    data = once_json(root, "--agent", "w", "--command", "true", "--min-priority", spelling, cwd=tmp_path)
    assert (data["issue_id"], data["outcome"]) == (ids["db"], "done")
    data = once_json(root, "--agent", "w", "--command", "true", "--min-priority", spelling, cwd=tmp_path)
    assert data["outcome"] == "idle", "only the high issue was in scope"


@pytest.mark.parametrize("spelling", ["critical", "CRITICAL"])
def test_min_priority_from_the_environment_as_the_action_passes_it(tmp_path: Path, labelled, spelling) -> None:
    root, _ = labelled
    env = clean_env(JIT_DISPATCH_MIN_PRIORITY=spelling)
    result = run_cli("once", "--jit-dir", str(root), "--json", "--agent", "w", "--command", "true",
                     cwd=tmp_path, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.json["outcome"] == "idle", "no critical issue: nothing is taken"
    env = clean_env(JIT_DISPATCH_MIN_PRIORITY="Normal")
    result = run_cli("ready", "--jit-dir", str(root), "--json", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert [i["priority"] for i in result.json["dispatchable"]] == ["high", "normal"]


def test_min_priority_in_dispatch_toml_in_any_case(tmp_path: Path, labelled) -> None:
    root, ids = labelled
    write(tmp_path / "dispatch.toml", '[[agents]]\nid = "w"\ncommand = "true"\nmin_priority = "HIGH"\n')
    data = once_json(root, cwd=tmp_path)
    assert (data["issue_id"], data["outcome"]) == (ids["db"], "done")
    assert once_json(root, cwd=tmp_path)["outcome"] == "idle"


@pytest.mark.parametrize("where", ["flag", "env", "toml"])
def test_an_unknown_priority_is_one_line_naming_the_choices(tmp_path: Path, labelled, where) -> None:
    root, _ = labelled
    args = ["once", "--jit-dir", str(root), "--agent", "w", "--command", "true"]
    env = clean_env()
    if where == "flag":
        args += ["--min-priority", "urgent"]
    elif where == "env":
        env["JIT_DISPATCH_MIN_PRIORITY"] = "urgent"
    else:
        write(tmp_path / "dispatch.toml", 'min_priority = "urgent"\n')
    result = run_cli(*args, cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "'urgent'" in result.stderr and "critical, high, normal, low" in result.stderr


def test_config_check_shows_the_store_keys_the_file_sets(tmp_path: Path) -> None:
    write(tmp_path / "dispatch.toml", 'sync = "git"\nstate_branch = "jit-state"\npush_budget = "2m"\n' + SEED_CONFIG)
    result = run_cli("config", "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.json["store"] == {"sync": "git", "state_branch": "jit-state", "push_budget": 120.0}


# --------------------------------------------------------------------------- all mistakes at once
def test_every_mistake_at_once_with_its_line_and_a_suggestion(tmp_path: Path) -> None:
    path = write(
        tmp_path / "dispatch.toml",
        """\
        poll_interval_secs = 5
        max_concurent = 3

        [[agents]]
        id = "a1"
        command = "true"

        [[agents]]
        id = "a2"
        command = "true"
        max_concurent = 2
        timeout = "soon"
        flavour = "vanilla"
        """,
    )
    result = run_cli("config", "check", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"jit-dispatch: error: {path.name}:2: max_concurent: unknown key "
        "(did you mean max_concurrent? it is set per agent, in an [[agents]] table)",
        f"jit-dispatch: error: {path.name}:11: agents[1] (id 'a2').max_concurent: unknown key "
        "(did you mean max_concurrent?)",
        f"jit-dispatch: error: {path.name}:12: agents[1] (id 'a2').timeout: 'soon' is not a duration "
        "(e.g. 600, 90s, 10m, 2h, 2d)",
        f"jit-dispatch: error: {path.name}:13: agents[1] (id 'a2').flavour: unknown key",
    ], result.stderr


def test_a_toml_syntax_error_names_its_line(tmp_path: Path) -> None:
    write(tmp_path / "dispatch.toml", 'poll_interval_secs = 5\n\n[[agents]\nid = "a1"\n')
    result = run_cli("config", "check", cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("jit-dispatch: error: dispatch.toml:3: not valid TOML: "), line
