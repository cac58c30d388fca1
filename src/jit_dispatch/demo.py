"""`make demo`: a throw-away git repository with a small `.jit/`, two real dispatches of one issue
(the first fails its gate and is released, the second is done), the second one's summary.

Everything runs for real: the store is written by this package, `jit-dispatch once` runs as a
separate process, and the step summary is the Markdown an Actions run would get.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from jit_dispatch.trackers.jit.store import JitStore, NewIssue

# The "agent": its first attempt leaves the tests failing, the second fixes them.
COMMAND = (
    'echo "agent {agent} working on {short_id} (attempt $JIT_DISPATCH_ATTEMPT): {title}"; sleep 0.3; '
    'if [ "$JIT_DISPATCH_ATTEMPT" -gt 1 ]; then echo "fixed" > tests-pass; fi; echo done'
)
# A jit gate as the newest jit defines it (`jit gate define`): an auto postcheck.
TESTS_GATE = {
    "version": 1,
    "key": "tests",
    "title": "Tests pass",
    "description": "The test suite must pass",
    "stage": "postcheck",
    "mode": "auto",
    "checker": {
        "type": "exec",
        "command": 'echo "running 12 tests"; test -f tests-pass || { echo "test_plugin_api FAILED"; exit 1; }',
        "timeout_seconds": 60,
        "working_dir": None,
        "env": {},
        "pass_context": False,
    },
    "priority": 100,
    "reserved": {},
    "auto": True,
    "example_integration": None,
}


def build_example(root: Path, *, gates: bool = False) -> JitStore:
    """The example store; with `gates`, the top issue requires the auto postcheck `tests`."""
    store = JitStore.init(root / ".jit")
    if gates:
        (store.root / "gates.json").write_text(json.dumps({"gates": {"tests": TESTS_GATE}}, indent=2))
    required = ("tests",) if gates else ()
    (design,) = store.create_issues(
        [NewIssue("Design the plugin API", "critical", labels=("type:task", "component:core"), gates_required=required)]
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


def example_repo(tmp: Path, *, gates: bool = False) -> Path:
    """A git repository holding the example store, committed."""
    repo = tmp / "repo"
    _git(tmp, "init", "-q", "-b", "main", str(repo))
    (repo / ".gitignore").write_text(".jit/**/*.lock\n")
    build_example(repo, gates=gates)
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=demo", "-c", "user.email=demo@example.invalid", "commit", "-q", "-m", "example store")
    return repo


# The delivering agent: writes the registry its issue asks for.
DELIVER_COMMAND = 'mkdir -p plugins && echo "REGISTRY = {}" > plugins/registry.py && echo "wrote plugins/registry.py"'
PERSON = ["-c", "user.name=reviewer", "-c", "user.email=reviewer@example.invalid"]


def demo_delivery(repo: Path, tmp: Path, cli: list[str]) -> None:
    """`--deliver branch` on a local bare remote: the work on `jit/…`, the issue waiting, a merge by
    hand with plain git, and the next look at the store turning it `done` and its dependent ready."""
    bare = tmp / "origin.git"
    _git(tmp, "init", "-q", "--bare", "-b", "main", str(bare))
    _git(repo, "remote", "add", "origin", str(bare))
    _git(repo, "push", "-q", "origin", "main")
    store = JitStore(repo / ".jit")
    (registry,) = store.create_issues([NewIssue("Add the plugin registry", "critical", labels=("type:task",))])
    store.create_issues(
        [NewIssue("Document the registry", "critical", labels=("type:docs",), dependencies=(registry,))]
    )
    print("\n--- delivering the work: a branch on the remote, done when it merges ---")
    args = ["once", "--agent", "demo-runner", "--issue", registry[:8], "--deliver", "branch", "--command"]
    print(f"$ jit-dispatch {' '.join(args)} '{DELIVER_COMMAND}'")
    subprocess.run([*cli, *args, DELIVER_COMMAND], cwd=repo, check=False)
    print("$ git ls-remote origin 'refs/heads/jit/*'")
    branches = _git(repo, "ls-remote", "origin", "refs/heads/jit/*")
    print(branches, end="")
    branch = branches.split()[1].removeprefix("refs/heads/")
    print(f"$ git log -1 --format=%B {branch}")
    print(_git(bare, "log", "-1", "--format=%B", branch), end="")
    print("$ jit-dispatch ready   # 'Document the registry' waits: its prerequisite is not merged")
    subprocess.run([*cli, "ready"], cwd=repo, check=True)
    person = tmp / "reviewer"
    _git(tmp, "clone", "-q", str(bare), str(person))
    _git(person, *PERSON, "merge", "-q", "--no-ff", "-m", f"Merge {branch}", f"origin/{branch}")
    _git(person, "push", "-q", "origin", "main")
    print(f"\n(a person merges {branch} into main with plain git and pushes)")
    print("$ jit-dispatch status --repair   # any once, reap or the pool notices it the same way")
    subprocess.run([*cli, "status", "--repair"], cwd=repo, check=True, stdout=subprocess.DEVNULL)
    print("$ jit-dispatch ready   # done on the merge: the dependent is ready now")
    subprocess.run([*cli, "ready"], cwd=repo, check=True)


def main() -> None:
    if sys.argv[1:2] == ["--init"] and len(sys.argv) == 3:  # DIR/.jit only, for the CI self-test
        build_example(Path(sys.argv[2]))
        return
    with tempfile.TemporaryDirectory(prefix="jit-dispatch-demo-") as tmp:
        service = sys.argv[1:2] == ["--service"]
        repo = example_repo(Path(tmp), gates=not service)
        if service:  # make demo-service: the pool with --listen
            from jit_dispatch.demo_service import run

            sys.exit(run(repo))
        summary = Path(tmp) / "step-summary.md"
        env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary)}
        cli = [sys.executable, "-m", "jit_dispatch"]
        print(f"$ cd {repo}\n$ jit-dispatch ready --all")
        subprocess.run([*cli, "ready", "--all"], cwd=repo, check=True)
        for attempt in (1, 2):
            summary.unlink(missing_ok=True)
            print(f"\n$ jit-dispatch once --agent demo-runner --command '{COMMAND}'")
            code = subprocess.run(
                [*cli, "once", "--agent", "demo-runner", "--command", COMMAND], cwd=repo, env=env
            ).returncode
            note = "the gate failed: released, the attempt counted" if attempt == 1 else "the gate passed: done"
            print(f"(exit code {code}: {note})")
        print("\n--- step summary of the second run (Markdown, as GitHub would render it) ---")
        print(summary.read_text())
        print("--- git status: the claims, results and gate runs are changes to commit ---")
        print(_git(repo, "status", "--short"))
        print("$ jit-dispatch ready   # the unblocked follow-up is ready now")
        subprocess.run([*cli, "ready"], cwd=repo, check=True)
        demo_delivery(repo, Path(tmp), cli)
        print("\n(make demo-service: the same store served by the agent pool with --listen, probes, webhooks, metrics)")
        sys.exit(code)


if __name__ == "__main__":
    main()
