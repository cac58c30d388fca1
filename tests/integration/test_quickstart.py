"""The README's quickstart, followed literally: its shell lines with the real (newest) jit, the
agent script template from examples/agent-script/, the workflow's `command:` run as a runner
would (remote mode, a shallow clone of a bare remote), and a first dispatch that ends `done`."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import PROJECT_ROOT, clean_env, git, run_cli
from real_jit import jit_binary

README = PROJECT_ROOT / "README.md"
TEMPLATE = PROJECT_ROOT / "examples" / "agent-script" / "work-on-issue.sh"
CRON_WORKER = PROJECT_ROOT / "examples" / "workflows" / "cron-worker.yml"


def readme_block(after_heading: str, language: str) -> str:
    """The first fenced block of `language` under the README heading that starts with `after_heading`."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(after_heading) :]
    match = re.search(rf"```{language}\n(.*?)```", section, flags=re.S)
    assert match, f"README: no ```{language} block under {after_heading!r}"
    return match.group(1)


def test_the_readme_workflow_is_the_cron_worker_example() -> None:
    shown = yaml.safe_load(readme_block("### 3. The workflow", "yaml"))
    assert shown == yaml.safe_load(CRON_WORKER.read_text(encoding="utf-8"))
    step = next(s for s in shown["jobs"]["work"]["steps"] if s.get("id") == "dispatch")
    assert step["uses"] == "org/jit-dispatch@v1"


def test_a_first_dispatch_from_the_quickstart_alone(tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "jit").symlink_to(jit_binary("newest"))
    env = clean_env(PATH=f"{tools}:{clean_env()['PATH']}", GIT_AUTHOR_NAME="p", GIT_AUTHOR_EMAIL="p@example.com",
                    GIT_COMMITTER_NAME="p", GIT_COMMITTER_EMAIL="p@example.com")  # fmt: skip
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(bare), str(repo)], check=True, capture_output=True)
    git(repo, "commit", "-q", "--allow-empty", "-m", "start")

    # Step 1, line by line as a person would type it.
    store_lines = readme_block("### 1. A jit store", "sh")
    done = subprocess.run(["bash", "-euc", store_lines], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ready = run_cli("ready", "--all", cwd=repo)
    assert ready.returncode == 0, ready.stderr
    titles = [line.split(None, 2)[2] for line in ready.stdout.splitlines()]
    assert titles == ["Add a --verbose flag", "Fix the typo in the help text"]

    # Step 2: the template, tried with --dry-run, then committed and pushed.
    (repo / "scripts").mkdir()
    shutil.copy(TEMPLATE, repo / "scripts" / "work-on-issue.sh")
    dry = run_cli("once", "--agent", "laptop", "--command", "./scripts/work-on-issue.sh", "--dry-run", cwd=repo)
    assert dry.returncode == 0, dry.stderr
    assert "would claim" in dry.stdout
    git(repo, "add", "-A")
    assert not [p for p in git(repo, "diff", "--cached", "--name-only").split() if p.endswith(".lock")]
    git(repo, "commit", "-q", "-m", "jit store and agent script")
    git(repo, "push", "-q", "origin", "HEAD:main")

    # Step 3: what the Action runs, in a runner's shallow clone.
    step = yaml.safe_load(readme_block("### 3. The workflow", "yaml"))["jobs"]["work"]["steps"][1]["with"]
    runner = tmp_path / "runner"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{bare}", str(runner)], check=True)
    run = run_cli("once", "--agent", step["agent"], "--command", step["command"], "--sync", "git",
                  "--timeout", step["timeout"], "--json", cwd=runner, env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.json["outcome"] == "done"
    assert run.json["title"] == "Add a --verbose flag"
    assert "Title: Add a --verbose flag" in run.stderr  # the template printed the issue it worked on
    subjects = git(bare, "log", "--format=%s", "main").splitlines()
    assert subjects[0].startswith("jit-dispatch: done ") and subjects[0].endswith("(agent:cron-worker) [skip ci]")


def test_the_template_treats_issue_text_as_data(tmp_path: Path) -> None:
    """A hostile title and body reach the agent's prompt verbatim and run nothing."""
    canary = tmp_path / "pwned"
    issue = tmp_path / "issue.json"
    issue.write_text(f'{{"title": "t", "body": "$(touch {canary}) `touch {canary}`"}}', encoding="utf-8")
    hostile = f'$(touch {canary}); `touch {canary}` "; touch {canary}; #'
    env = clean_env(JIT_ISSUE_ID="#12", JIT_ISSUE_SHORT_ID="#12", JIT_ISSUE_TITLE=hostile, JIT_ISSUE_PRIORITY="low",
                    JIT_DISPATCH_ATTEMPT="1", JIT_ISSUE_FILE=str(issue))  # fmt: skip
    done = subprocess.run([str(TEMPLATE)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert f"Title: {hostile}" in done.stdout
    assert not canary.exists()


def test_the_template_refuses_to_run_outside_jit_dispatch(tmp_path: Path) -> None:
    done = subprocess.run([str(TEMPLATE)], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "JIT_ISSUE_ID" in done.stderr


@pytest.mark.parametrize("name", ["make demo", "make test"])
def test_the_readme_shows_how_to_try_and_test(name: str) -> None:
    assert name in README.read_text(encoding="utf-8")
