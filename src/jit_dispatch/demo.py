"""`make demo`: a throw-away git repository with a small `.jit/`, one real dispatch, its summary.

Everything runs for real: the store is written by this package, `jit-dispatch once` runs as a
separate process, and the step summary is the Markdown an Actions run would get.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from jit_dispatch.trackers.jit.store import JitStore, NewIssue

COMMAND = (
    'echo "agent {agent} working on {short_id}: {title}"; echo "issue snapshot: $JIT_ISSUE_FILE"; sleep 0.3; echo done'
)


def build_example(root: Path) -> JitStore:
    store = JitStore.init(root / ".jit")
    (design,) = store.create_issues(
        [NewIssue("Design the plugin API", "critical", labels=("type:task", "component:core"))]
    )
    store.create_issues(
        [
            NewIssue("Fix crash on empty config", "high", labels=("type:bug", "component:cli")),
            NewIssue("Implement the plugin loader", "high", labels=("type:task",), dependencies=(design,)),
            NewIssue("Write the user guide", "normal", labels=("type:docs",)),
            NewIssue("Title from a stranger: $(touch pwned) `id`; </details> ::error::x", "low", labels=("type:bug",)),
        ]
    )
    return store


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def example_repo(tmp: Path) -> Path:
    """A git repository holding the example store, committed."""
    repo = tmp / "repo"
    _git(tmp, "init", "-q", "-b", "main", str(repo))
    (repo / ".gitignore").write_text(".jit/**/*.lock\n")
    build_example(repo)
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=demo", "-c", "user.email=demo@example.invalid", "commit", "-q", "-m", "example store")
    return repo


def main() -> None:
    if sys.argv[1:2] == ["--init"] and len(sys.argv) == 3:  # DIR/.jit only, for the CI self-test
        build_example(Path(sys.argv[2]))
        return
    with tempfile.TemporaryDirectory(prefix="jit-dispatch-demo-") as tmp:
        repo = example_repo(Path(tmp))
        if sys.argv[1:2] == ["--service"]:  # make demo-service: the pool with --listen
            from jit_dispatch.demo_service import run

            sys.exit(run(repo))
        summary = Path(tmp) / "step-summary.md"
        env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary)}
        cli = [sys.executable, "-m", "jit_dispatch"]
        print(f"$ cd {repo}\n$ jit-dispatch ready --all")
        subprocess.run([*cli, "ready", "--all"], cwd=repo, check=True)
        print(f"\n$ jit-dispatch once --agent demo-runner --command '{COMMAND}'")
        code = subprocess.run(
            [*cli, "once", "--agent", "demo-runner", "--command", COMMAND], cwd=repo, env=env
        ).returncode
        print(f"(exit code {code})\n\n--- step summary (Markdown, as GitHub would render it) ---")
        print(summary.read_text())
        print("--- git status: the claim and the result are changes to commit ---")
        print(_git(repo, "status", "--short"))
        print("$ jit-dispatch ready   # the unblocked follow-up is ready now")
        subprocess.run([*cli, "ready"], cwd=repo, check=True)
        print("\n(make demo-service: the same store served by the agent pool with --listen, probes, webhooks, metrics)")
        sys.exit(code)


if __name__ == "__main__":
    main()
