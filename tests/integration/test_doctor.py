"""`jit-dispatch doctor` catches what would make the first scheduled run fail, naming the fix, and
changes nothing: a healthy remote, a state branch under a protection hook (GitHub's wording), a
read-only remote (`git daemon` without receive-pack), an unreachable one, a missing store, a bad
gate registry, a missing program, and the GitHub fake with a token lacking `contents: write`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from github_fake import REPO, FakeGitHub
from github_server import FakeServer
from helpers import Remote, clean_env, git, make_remote, run_cli
from jit_dispatch.trackers.jit.store import NewIssue
from remote_runs import git_daemon, install_hook

PROTECTION_HOOK = """\
while read old new ref; do
  if [ "$ref" = refs/heads/main ]; then
    echo "error: GH006: Protected branch update failed for $ref." >&2
    echo "error: Changes must be made through a pull request." >&2
    exit 1
  fi
done
"""


def doctor(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict, str]:
    result = run_cli("doctor", "--json", *args, cwd=cwd, env=env)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, result.json, result.stderr


def by_name(report: dict) -> dict[str, dict]:
    return {check["check"]: check for check in report["checks"]}


def refs_and_tip(remote: Remote) -> tuple[str, str]:
    return git(remote.bare, "for-each-ref"), git(remote.bare, "rev-parse", "main")


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return make_remote(tmp_path, [NewIssue("first"), NewIssue("second")])


def test_a_healthy_remote_is_all_good_and_left_as_it_was(tmp_path: Path, remote: Remote) -> None:
    clone = remote.clone(tmp_path / "clone")
    before = refs_and_tip(remote)
    code, report, _ = doctor(clone, "--sync", "git")
    assert (code, report["ok"]) == (0, True), report
    checks = by_name(report)
    assert checks["store .jit"]["detail"] == "2 issue(s) readable"
    assert checks["state branch main"]["ok"] and checks["lock refs refs/jit-dispatch/claims/"]["ok"]
    assert refs_and_tip(remote) == before, "no ref left, the branch did not move"
    text = run_cli("doctor", "--sync", "git", cwd=clone)
    assert text.returncode == 0 and text.stdout.strip().endswith("jit-dispatch doctor: all good"), text.stdout


def test_branch_protection_is_detected_with_the_fix(tmp_path: Path, remote: Remote) -> None:
    clone = remote.clone(tmp_path / "clone")
    install_hook(remote, PROTECTION_HOOK)
    before = refs_and_tip(remote)
    code, report, _ = doctor(clone, "--sync", "git")
    assert (code, report["ok"]) == (1, False)
    branch = by_name(report)["state branch main"]
    assert branch["ok"] is False and "GH006" in branch["detail"]
    assert "--state-branch jit-state" in branch["fix"] and "refs/heads/jit-state" in branch["fix"]
    assert by_name(report)["lock refs refs/jit-dispatch/claims/"]["ok"], "lock refs are not the protected branch"
    assert refs_and_tip(remote) == before
    # The fix works: a branch of its own passes.
    git(clone, "push", "-q", "origin", "HEAD:refs/heads/jit-state")
    code, report, _ = doctor(clone, "--sync", "git", "--state-branch", "jit-state")
    assert code == 0, report


@pytest.fixture
def read_only_daemon(tmp_path: Path) -> Iterator[str]:
    """`git daemon` serving tmp_path without receive-pack: fetches work, pushes are refused."""
    with git_daemon(tmp_path, receive_pack=False) as url:
        yield url


def test_a_read_only_remote_names_the_permission(tmp_path: Path, remote: Remote, read_only_daemon: str) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", f"{read_only_daemon}/remote.git", str(clone)], check=True)
    code, report, _ = doctor(clone, "--sync", "git")
    assert code == 1
    checks = by_name(report)
    assert checks["remote origin"]["ok"], "reachable for reading"
    lock = checks["lock refs refs/jit-dispatch/claims/"]
    assert lock["ok"] is False and "contents: write" in lock["fix"]
    assert checks["state branch main"]["ok"] is False


def test_an_unreachable_remote(tmp_path: Path, remote: Remote) -> None:
    clone = remote.clone(tmp_path / "clone")
    git(clone, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    code, report, _ = doctor(clone, "--sync", "git")
    assert code == 1
    [failed] = [c for c in report["checks"] if c["ok"] is False]
    assert failed["check"] == "remote origin" and "unreachable" in failed["detail"]
    assert "git remote get-url origin" in failed["fix"]


def test_store_registry_config_and_programs(tmp_path: Path) -> None:
    code, report, _ = doctor(tmp_path)
    assert code == 1
    store = by_name(report)["store .jit"]
    assert store["ok"] is False and "jit init" in store["fix"]

    remote = make_remote(tmp_path, [NewIssue("first")])
    clone = remote.clone(tmp_path / "clone")
    (clone / ".jit" / "gates.json").write_text('{"gates": [1, 2]}')
    agents = ('[[agents]]\nid = "a"\ncommand = "./scripts/missing.sh {issue_id}"\n'
              '[[agents]]\nid = "b"\ncommand = "no-such-program-xyz --go"\n'
              '[[agents]]\nid = "c"\ncommand = "git status"\nshell = "zsh-nowhere"\n')  # fmt: skip
    (clone / "dispatch.toml").write_text(agents)
    code, report, _ = doctor(clone)
    checks = by_name(report)
    assert code == 1
    assert checks["gate registry"]["ok"] is False and "gates.json" in checks["gate registry"]["detail"]
    assert checks["agent a command"]["ok"] is False and "./scripts/missing.sh" in checks["agent a command"]["detail"]
    assert checks["agent b command"]["ok"] is False and "no-such-program-xyz" in checks["agent b command"]["detail"]
    assert checks["agent c command"]["ok"] and checks["agent c shell"]["ok"] is False

    (clone / "dispatch.toml").write_text("max_concurent = 2\n")
    code, report, _ = doctor(clone)
    assert code == 1 and report["checks"][0]["check"] == "dispatch.toml" and not report["checks"][0]["ok"]
    assert "did you mean max_concurrent?" in report["checks"][0]["detail"]


def test_a_script_whose_interpreter_is_missing(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, [NewIssue("first")])
    clone = remote.clone(tmp_path / "clone")
    script = clone / "work.sh"
    script.write_text("#!/usr/bin/env no-such-interpreter-xyz\necho hi\n")
    script.chmod(0o755)
    (clone / "dispatch.toml").write_text('[[agents]]\nid = "a"\ncommand = "./work.sh {issue_id}"\n')
    code, report, _ = doctor(clone)
    assert code == 1
    assert "no-such-interpreter-xyz" in by_name(report)["agent a command"]["detail"]


UNPACED = (
    "import jit_dispatch.trackers.github.api as a; a.THROTTLE = False; from jit_dispatch.cli.main import main; main()"
)


@pytest.mark.parametrize("contents_write", [True, False])
def test_github_token_scopes(tmp_path: Path, contents_write: bool) -> None:
    fake = FakeGitHub(page_size=30, contents_write=contents_write)
    fake.add_issue(1)
    with FakeServer(fake) as server:
        env = clean_env(GITHUB_TOKEN="ghs_doctortoken0123456789", GITHUB_REPOSITORY=REPO,
                        JIT_DISPATCH_GITHUB_API_URL=server.url, JIT_DISPATCH_TRACKER="github")  # fmt: skip
        proc = subprocess.run([sys.executable, "-c", UNPACED, "doctor", "--json"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    report = json.loads(proc.stdout)
    [check] = [c for c in report["checks"] if c["check"].startswith("GitHub")]
    assert "ghs_doctortoken" not in proc.stdout + proc.stderr
    if contents_write:
        assert proc.returncode == 0 and check["ok"], proc.stdout
    else:
        assert proc.returncode == 1 and check["ok"] is False
        assert "contents: write" in check["detail"] and "contents: write" in check["fix"]
        assert fake.labels(1) == ["dispatch"] and fake.comments.get(1, []) == [], "nothing changed"


def test_github_without_a_token(tmp_path: Path) -> None:
    env = clean_env(GITHUB_REPOSITORY=REPO, JIT_DISPATCH_TRACKER="github")
    code, report, _ = doctor(tmp_path, env=env)
    assert code == 1 and "GITHUB_TOKEN" in report["checks"][-1]["fix"]
