"""Credentials out of everything strangers read (issue 22, item 2), for both trackers.

A workspace as actions/checkout leaves it (`http.https://github.com/.extraheader = AUTHORIZATION:
basic base64(x-access-token:TOKEN)`, or v6's `includeIf` of a credentials file), a command that
prints its git config and the token in every spelling a tool uses; real git, real processes.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_github_tracker
from test_github_tracker import TOKEN, run_main

from github_fake import FakeGitHub, serving, without_pacing
from helpers import clean_env, run_cli
from jit_dispatch.domain.secrets import Scrubber, embedded_base64, secret_forms
from jit_dispatch.trackers.jit.store import JitStore, NewIssue

actions_env = test_github_tracker.actions_env  # the fixture: an Actions step's environment
HEADER_KEY = "http.https://github.com/.extraheader"
HEADER = "AUTHORIZATION: basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
# Every spelling: git config, curl -u TOKEN:, a Bearer header, a URL, base64 inside a longer string.
LEAKY = (
    "git config --list; "
    'printf "%s:" "$T" | base64; '
    'echo "Authorization: Bearer $T"; '
    'echo "https://x-access-token:$(printf %s "$T" | jq -sRr @uri | sed s/_/%5F/g)@github.com/"; '
    'for p in "" a ab; do printf "%suser:%s:pw" "$p" "$T" | base64 -w0; echo; done'
)


def leaks(text: str, token: str = TOKEN) -> list[str]:
    """Where `text` still shows the token: literally, URL-encoded, or decodable from base64 at any offset."""
    found = [form for form in (token, urllib.parse.quote(token, safe="")) if form in text]
    for run in re.findall(r"[A-Za-z0-9+/]{16,}", text):
        for start in range(4):
            chunk = run[start:]
            chunk = chunk[: len(chunk) - len(chunk) % 4]
            try:
                decoded = base64.b64decode(chunk).decode("latin-1")
            except ValueError:
                continue
            if token[4:-4] in decoded:
                found.append(run)
    return found


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def checkout_workspace(path: Path, include_file: Path | None = None) -> Path:
    """A repository as actions/checkout leaves it: the credential in .git/config, or (v6) an included file."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q")
    if include_file is None:
        git(path, "config", "--local", HEADER_KEY, HEADER)
    else:
        git(include_file.parent, "config", "--file", str(include_file), HEADER_KEY, HEADER)
        git(path, "config", "--local", f"includeIf.gitdir:{path / '.git'}.path", str(include_file))
    return path


def test_every_form_is_known_and_cut_out() -> None:
    forms = secret_forms(TOKEN)
    assert base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode() in forms
    assert base64.b64encode(f"{TOKEN}:".encode()).decode() in forms
    scrubber = Scrubber([TOKEN])
    for prefix in ("", "a", "ab", "abc"):
        encoded = base64.b64encode(f"{prefix}user:{TOKEN}:pw".encode()).decode()
        assert leaks(encoded) and not leaks(scrubber.scrub(encoded))
        assert any(run in encoded for run in embedded_base64(TOKEN.encode()))
    assert secret_forms("short") == []


def test_a_stream_split_inside_a_base64_form_is_held_back_then_cut() -> None:
    from jit_dispatch.process import credentials
    from jit_dispatch.report.console import ConsoleHooks

    credentials.register(TOKEN)

    class Sink:
        def __init__(self) -> None:
            self.buffer = self
            self.data = b""

        def write(self, data: bytes) -> None:
            self.data += data

        def flush(self) -> None:
            pass

    sink = Sink()
    hooks = ConsoleHooks(sink, in_actions=False, allow_workflow_commands=False)  # type: ignore[arg-type]
    text = ("git config: " + HEADER + "\n").encode()
    for i in range(0, len(text), 7):
        hooks.output(text[i : i + 7])
    hooks._end_output("")
    assert not leaks(sink.data.decode()) and b"***" in sink.data


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    without_pacing(monkeypatch)
    with serving() as server:
        yield server


def test_github_a_command_printing_its_git_config_leaks_nothing(
    fake: FakeGitHub,
    actions_env: dict[str, Path],
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """The finding: the base64 extraheader reached the output tail, the result comment and the summary."""
    checkout_workspace(tmp_path)
    fake.add_issue(1, "print your config")
    os.environ["T"] = TOKEN  # as a command that decoded the header would have it
    args = ("once", "--tracker", "github", "--agent", "ci", "--json", "--pass-git-credentials", "--command", LEAKY)
    assert run_main(*args) == 0
    out, err = capfd.readouterr()
    assert "AUTHORIZATION: basic ***" in fake.bodies(1)[-1]  # it was printed, and cut out
    for text in (out, actions_env["summary"].read_text(), actions_env["output"].read_text(), *fake.bodies(1)):
        assert leaks(text) == [], text
    masked = [line.removeprefix("::add-mask::") for line in err.splitlines() if line.startswith("::add-mask::")]
    assert set(secret_forms(TOKEN)) <= set(masked)  # the runner hides every form of the live log too
    assert leaks(re.sub(r"^::add-mask::.*$", "", err, flags=re.M)) == []


@pytest.mark.parametrize("form", ["extraheader", "includeIf"])
def test_the_command_runs_without_the_persisted_credential_and_it_is_put_back(
    fake: FakeGitHub,
    actions_env: dict[str, Path],
    tmp_path: Path,
    form: str,
) -> None:
    include = tmp_path / "runner-temp" / "git-credentials-1.config" if form == "includeIf" else None
    if include is not None:
        include.parent.mkdir()
    work = checkout_workspace(tmp_path / "work", include)
    before = git(work, "config", "--local", "--list")
    fake.add_issue(1)
    seen = tmp_path / "seen"
    command = f'git config --get-regexp "http.*extraheader" > {seen}; true'
    assert run_main("once", "--tracker", "github", "--agent", "ci", "--workdir", str(work), "--command", command) == 0
    assert seen.read_text() == ""  # the command could neither print nor use it
    assert git(work, "config", "--local", "--list") == before  # and it is back, exactly
    assert not list(tmp_path.glob("jit-dispatch-git-credentials-*"))


def with_helpers(work: Path, tmp_path: Path) -> Path:
    """Credential helpers in the workspace's config, as `gh auth setup-git` or a workflow's `git config`
    leave them (a reset, then `store` with a stored token), and checkout's `core.sshCommand`."""
    store = tmp_path / "git-credentials"
    store.write_text(f"https://x-access-token:{TOKEN}@github.com\n")
    git(work, "config", "--local", "--add", "credential.helper", "")
    git(work, "config", "--local", "--add", "credential.helper", f"store --file={store}")
    git(work, "config", "--local", "credential.https://github.com.username", "x-access-token")
    git(work, "config", "--local", "core.sshCommand", 'ssh -i "$RUNNER_TEMP/key"')
    git(work, "config", "--local", "user.name", "agent")
    return work


# What git itself would hand the command: the helper's credential, and every credential entry.
ASK_GIT = (
    "printf 'protocol=https\\nhost=github.com\\n\\n' | GIT_TERMINAL_PROMPT=0 git credential fill 2>/dev/null; "
    "git config --local --get-regexp '^(credential|core[.]sshcommand|http[.].*[.]extraheader)'; true"
)


def config_of(work: Path) -> tuple[list[str], list[str]]:
    """The workspace's config entries (in any order) and the helpers in theirs (an empty one resets)."""
    helpers = subprocess.run(["git", "config", "--local", "--get-all", "credential.helper"], cwd=work,
                             capture_output=True, text=True).stdout.split("\n")  # fmt: skip
    return sorted(git(work, "config", "--local", "--list").splitlines()), helpers


def test_credential_helpers_and_the_ssh_command_are_out_of_the_commands_reach_too(
    fake: FakeGitHub,
    actions_env: dict[str, Path],
    tmp_path: Path,
) -> None:
    work = with_helpers(checkout_workspace(tmp_path / "work"), tmp_path)
    before = config_of(work)
    fake.add_issue(1)
    fake.add_issue(2)
    seen = tmp_path / "seen"
    args = ("once", "--tracker", "github", "--agent", "ci", "--workdir", str(work), "--issue")
    assert run_main(*args, "#1", "--command", f"({ASK_GIT}) > {seen}") == 0
    assert TOKEN not in seen.read_text() and ".helper" not in seen.read_text(), seen.read_text()
    assert "sshcommand" not in seen.read_text() and "extraheader" not in seen.read_text()
    assert config_of(work) == before  # all back, the helpers in their order
    assert run_main(*args, "#2", "--pass-git-credentials", "--command", f"({ASK_GIT}) > {seen}") == 0
    shown = seen.read_text()
    assert f"password={TOKEN}" in shown and "credential.helper store" in shown and "core.sshcommand" in shown


def test_pass_git_credentials_keeps_todays_behaviour(
    fake: FakeGitHub,
    actions_env: dict[str, Path],
    tmp_path: Path,
) -> None:
    work = checkout_workspace(tmp_path / "work")
    fake.add_issue(1)
    seen = tmp_path / "seen"
    command = f'git config --get-regexp "http.*extraheader" > {seen}; true'
    args = ("once", "--tracker", "github", "--agent", "ci", "--workdir", str(work), "--pass-git-credentials")
    assert run_main(*args, "--command", command) == 0
    assert seen.read_text().strip() == f"{HEADER_KEY} {HEADER}"


def jit_workspace(tmp_path: Path) -> Path:
    work = checkout_workspace(tmp_path / "work")
    JitStore.init(work / ".jit").create_issues([NewIssue("one"), NewIssue("two")])
    return work


def test_jit_tracker_summary_and_json_never_show_the_workspace_credential(tmp_path: Path) -> None:
    """No --github-token at all: the token is learned from the workspace's git config."""
    work = jit_workspace(tmp_path)
    summary = tmp_path / "summary.md"
    env = clean_env(GITHUB_STEP_SUMMARY=str(summary), T=TOKEN)
    ran = run_cli("once", "--agent", "ci", "--json", "--pass-git-credentials", "--command", LEAKY, cwd=work, env=env)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["outcome"] == "done" and "AUTHORIZATION: basic ***" in ran.stderr  # the live log
    for text in (ran.stdout, ran.stderr, summary.read_text()):
        assert leaks(text) == [], text


def test_a_killed_run_leaves_the_credential_for_the_next_run_to_put_back(tmp_path: Path) -> None:
    """SIGKILL of the dispatcher mid-command: the stash outlives it; the next run puts every entry back."""
    work = with_helpers(jit_workspace(tmp_path), tmp_path)
    before = config_of(work)
    env = clean_env(TMPDIR=str(tmp_path))
    started = tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jit_dispatch", "once", "--agent", "ci", "--command", f"touch {started}; sleep 60"],
        cwd=work,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists()
        during = git(work, "config", "--local", "--list")
        assert "extraheader" not in during and "credential.helper" not in during and "sshcommand" not in during
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the dispatcher and its command: no cleanup runs
        proc.wait()
    assert list(tmp_path.glob("jit-dispatch-git-credentials-*"))
    ran = run_cli("ready", cwd=work, env=env)
    assert ran.returncode == 0, ran.stderr
    assert "restored the workspace's git credentials" in ran.stderr
    assert config_of(work) == before
    assert not list(tmp_path.glob("jit-dispatch-git-credentials-*"))


def test_the_pools_per_issue_logs_never_show_a_token(tmp_path: Path) -> None:
    """The pool writes each command's output to a log file of its own: every form is cut there too,
    also when a form is split across the chunks the command writes (`sleep` between halves)."""
    work = jit_workspace(tmp_path)
    basic = 'printf "x-access-token:%s" "$T" | base64 -w0'
    halves = 'printf %s "$T" | cut -c1-12 | tr -d "\\n"; sleep 0.3; printf %s "$T" | cut -c13-; '
    command = f'echo "$T"; echo "AUTHORIZATION: basic $({basic})"; {halves}{LEAKY}'
    config = tmp_path / "dispatch.toml"
    config.write_text(f"[[agents]]\nid = \"solo\"\nmax_concurrent = 2\ncommand = '''{command}'''\n")
    logs = tmp_path / "logs"
    env = clean_env(GITHUB_TOKEN=TOKEN, T=TOKEN)
    args = ("start", "--once", "--config", str(config), "--jit-dir", str(work / ".jit"), "--log-dir", str(logs))
    ran = run_cli(*args, cwd=work, env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    files = sorted(logs.iterdir())
    assert len(files) == 2 and all("***" in f.read_text() for f in files)  # printed, and cut out
    for text in (*(f.read_text() for f in files), ran.stdout, ran.stderr):
        assert leaks(text) == [], text
