"""Credentials out of what strangers read, and out of the command's reach (docs/hardening.md#credentials).

One scrubber for the process: the tracker's token, the workspace's persisted git credential and
the usual token variables are learned here, registered with `::add-mask::` in every form a tool
may print them (`domain.secrets`), and cut out of the output tail, comments, summary, `--json`
and errors by everyone who writes those.

During the command, the credentials persisted in the workspace's git config are moved out of it:
what actions/checkout writes (`http.<url>.extraheader`, or the `includeIf` entry of a credentials
file; `core.sshCommand` naming its `ssh-key`) and credential helpers (`credential[.<url>].helper`,
as `gh auth setup-git` or a workflow's `git config` set them); the dispatcher's own git calls get
them through their environment (`git_env`). The entries are stashed outside the workspace first,
so that a run killed meanwhile leaves them for the next run to put back (`restore_left_behind`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from jit_dispatch.domain.secrets import Scrubber

TOKEN_VARIABLES = ("GITHUB_TOKEN", "GH_TOKEN", "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN")
_EXTRAHEADER = r"^http\..*\.extraheader$"
_HELPER = r"^credential\.(.*\.)?helper$"  # credential.helper, credential.<url>.helper
_SSH_COMMAND = r"^core\.sshcommand$"  # actions/checkout's persisted `ssh-key`
_INCLUDE = r"^includeif\..*\.path$"

_scrubber = Scrubber()
_moved: list[tuple[str, str]] = []  # config entries moved out of the workspace while a command runs


def register(token: str) -> None:
    """Learn a secret; in Actions, ask the runner to mask each of its forms in the log."""
    for form in _scrubber.add(token):
        if os.environ.get("GITHUB_ACTIONS") == "true":
            print(f"::add-mask::{form}", file=sys.stderr, flush=True)


def register_environment() -> None:
    """The token variables of the dispatcher's own environment (before it takes them from the command's)."""
    for name in TOKEN_VARIABLES:
        register(os.environ.get(name, ""))


def scrubber() -> Scrubber:
    return _scrubber


def scrub(text: str) -> str:
    return _scrubber.scrub(text)


def git_env() -> dict[str, str]:
    """The moved entries as `GIT_CONFIG_*` variables: for the dispatcher's own git calls, never the command's."""
    if not _moved:
        return {}
    env = {"GIT_CONFIG_COUNT": str(len(_moved))}
    for i, (key, value) in enumerate(_moved):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
    return env


def _git(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_CONFIG_")}
    return subprocess.run(
        ["git", *args], cwd=workdir, env={**env, "LC_ALL": "C"}, capture_output=True, text=True, check=False
    )


def _entries(workdir: Path, pattern: str, *where: str) -> list[tuple[str, str]]:
    found = _git(workdir, "config", *where, "--get-regexp", pattern)
    pairs = (line.partition(" ") for line in found.stdout.splitlines())
    return [(key, value) for key, _, value in pairs if key]


def _learn_header(value: str) -> None:
    """`AUTHORIZATION: basic base64(user:token)` (or `bearer token`): the token becomes a known secret."""
    scheme, _, credential = value.partition(":")[2].strip().partition(" ")
    if scheme.lower() == "bearer":
        register(credential)
        return
    try:
        user, _, password = base64.b64decode(credential.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        register(credential.strip())  # not base64: the value itself is the secret
        return
    register(password or user)


def persisted(workdir: Path) -> list[tuple[str, str]]:
    """The workspace's credential entries: extraheaders, credential helpers, an ssh command, and
    includes of a file that holds an extraheader or a helper."""
    entries = [e for pattern in (_EXTRAHEADER, _HELPER, _SSH_COMMAND) for e in _entries(workdir, pattern, "--local")]
    for key, path in _entries(workdir, _INCLUDE, "--local"):
        if not Path(path).is_file():
            continue
        headers = _entries(workdir, _EXTRAHEADER, "--file", path)
        if headers or _entries(workdir, _HELPER, "--file", path):
            entries.append((key, path))
            entries += [("", value) for _, value in headers]  # learned, not moved: the file is not ours
    for _, value in entries:
        if value.lower().startswith("authorization:"):
            _learn_header(value)
    return [(key, value) for key, value in entries if key]


def _stash_path(workdir: Path) -> Path | None:
    found = _git(workdir, "rev-parse", "--absolute-git-dir")
    if found.returncode != 0:
        return None
    digest = hashlib.sha256(found.stdout.strip().encode()).hexdigest()[:16]
    base = Path(os.environ.get("RUNNER_TEMP") or os.environ.get("TMPDIR") or "/tmp")
    return base / f"jit-dispatch-git-credentials-{digest}.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _put_back(workdir: Path, stash: Path) -> None:
    entries = json.loads(stash.read_text(encoding="utf-8"))["entries"]
    for key, value in entries:
        present = {(k.lower(), v) for k, v in _entries(workdir, "^" + _quote(key) + "$", "--local")}
        if (key.lower(), value) not in present:
            _git(workdir, "config", "--local", "--add", key, value)
    stash.unlink()


def _quote(key: str) -> str:
    return "".join("\\" + c if c in ".^$*+?()[]{}|\\" else c for c in key)


def restore_left_behind(workdir: Path) -> list[str]:
    """Put back credentials a killed run moved out (its stash outlived it). Notes for the log."""
    stash = _stash_path(workdir)
    if stash is None or not stash.is_file():
        return []
    try:
        owner = int(json.loads(stash.read_text(encoding="utf-8")).get("pid", 0))
        if owner and owner != os.getpid() and _alive(owner):
            return []  # a live run in this workspace has them out; it puts them back
        _put_back(workdir, stash)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"could not restore the git credentials stashed in {stash}: {exc}"]
    return [f"restored the workspace's git credentials a killed run had moved out ({stash.name})"]


@contextlib.contextmanager
def hidden_git_credentials(workdir: Path | None, *, keep: bool = False) -> Iterator[None]:
    """The command runs without the workspace's persisted git credential (`keep`: with it, as before)."""
    where = workdir or Path.cwd()
    restore_left_behind(where)  # a --workdir other than the directory the run started in
    entries = persisted(where)
    stash = _stash_path(where) if entries and not keep else None
    if stash is None or stash.exists():
        yield
        return
    fd = os.open(stash, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"pid": os.getpid(), "entries": entries}, handle)
    _moved[:] = entries
    try:
        for key, value in entries:
            _git(where, "config", "--local", "--fixed-value", "--unset-all", key, value)
        yield
    finally:
        _moved.clear()
        with contextlib.suppress(OSError, ValueError, KeyError):
            _put_back(where, stash)
