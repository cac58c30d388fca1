"""Shared test helpers: real stores on disk, the real CLI in a subprocess, a bare remote, issue values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jit_dispatch.domain.issue import Issue
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = PROJECT_ROOT / "tests" / "fixtures"  # derived from real jit stores: tests/fixtures/README.md


def fixture_store(tmp_path: Path, name: str) -> Path:
    """A writable copy of a store written by the real jit (`seed-era` or `latest`)."""
    source = FIXTURES / name / ".jit"
    target = tmp_path / name / ".jit"
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def read_issue(store_root: Path, issue_id: str) -> dict:
    return json.loads((store_root / "issues" / f"{issue_id}.json").read_text())


def read_events(store_root: Path) -> list[dict]:
    text = (store_root / "events.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without anything GitHub Actions or a user may have set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "JIT_", "RUNNER_"))}
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60) -> CliRun:
    """The real `jit-dispatch` entry point, as a separate process."""
    proc = subprocess.run(
        [sys.executable, "-m", "jit_dispatch", *args],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliRun(proc.returncode, proc.stdout, proc.stderr)


def parse_outputs(text: str) -> dict[str, str]:
    """Read `$GITHUB_OUTPUT` the way the runner does: `name=value` or `name<<DELIM` … `DELIM`."""
    values: dict[str, str] = {}
    lines = iter(text.split("\n"))
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            body = []
            for inner in lines:
                if inner == delimiter:
                    break
                body.append(inner)
            else:
                raise AssertionError(f"output {name}: delimiter {delimiter} never closes")
            values[name] = "\n".join(body)
        elif line:
            name, _, value = line.partition("=")
            values[name] = value
    return values


GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_IDENTITY}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


@dataclass
class Remote:
    """A bare repository holding a jit store on `main`, as GitHub would for the runners."""

    bare: Path
    ids: list[str]

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def clone(self, dest: Path, *, shallow: bool = True) -> Path:
        depth = ["--depth", "1"] if shallow else []
        subprocess.run(["git", "clone", "-q", *depth, self.url, str(dest)], check=True, capture_output=True)
        return dest

    def issue(self, issue_id: str) -> dict:
        return json.loads(git(self.bare, "show", f"main:.jit/issues/{issue_id}.json"))

    def events(self) -> list[dict]:
        return [json.loads(line) for line in git(self.bare, "show", "main:.jit/events.jsonl").splitlines() if line]

    def refs(self, prefix: str = "refs/jit-dispatch/") -> list[str]:
        return git(self.bare, "for-each-ref", "--format=%(refname)", prefix).split()


def make_remote(tmp_path: Path, specs: list[NewIssue], *, other_files: int = 0) -> Remote:
    """A bare `main` with `.jit/` holding `specs` (and `other_files` unrelated files)."""
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    seed = tmp_path / "seed"
    subprocess.run(["git", "init", "-q", "-b", "main", str(seed)], check=True)
    ids = JitStore.init(seed / ".jit").create_issues(specs)
    (seed / ".gitignore").write_text(".jit/**/*.lock\n")
    for n in range(other_files):
        path = seed / "src" / f"d{n % 100}" / f"file{n}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file {n}\n")
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "seed")
    git(seed, "push", "-q", str(bare), "main")
    return Remote(bare, ids)


# A fixed moment for constructed issues (selection orders by created_at).
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_issue(
    issue_id: str,
    *,
    state: str = "ready",
    priority: str = "normal",
    assignee: str | None = None,
    deps: tuple[str, ...] = (),
    labels: tuple[str, ...] = (),
    gates: tuple[str, ...] = (),
    passed: tuple[str, ...] = (),
    minutes: int = 0,
) -> Issue:
    return Issue(
        id=issue_id,
        title=f"issue {issue_id}",
        state=state,
        priority=priority,
        assignee=assignee,
        dependencies=deps,
        labels=labels,
        gates_required=gates,
        gates_passed=frozenset(passed),
        context={},
        created_at=T0 + timedelta(minutes=minutes),
        raw={},
    )
