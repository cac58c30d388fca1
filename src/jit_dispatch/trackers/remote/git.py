"""A thin `git` subprocess wrapper: one place for timeouts, deadlines, redaction and errors."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from jit_dispatch.errors import TrackerError
from jit_dispatch.process import credentials

_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")
DEFAULT_TIMEOUT_SECONDS = 60.0
# Summaries git prints after the line that says why: never the most telling one.
_GENERIC = ("fatal: Could not read from remote repository", "error: failed to push some refs")


# Refusals no retry can fix: credentials, permissions, protection, a wrong URL. Anything else a
# remote says (a hook declining, a 5xx, a reset connection, a timeout) may pass on the next try.
_PERMANENT_WORDS = (
    "permission",
    "denied",
    "protected",
    "forbidden",
    "not allowed",
    "unauthorized",
    "authentication",
    "403",
    "repository not found",
    "does not appear to be a git repository",
    "could not read username",
    "read-only",
)


class GitError(TrackerError):
    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient  # worth another try within the push budget


_PERMANENT = re.compile(r"\b(?:" + "|".join(re.escape(word) for word in _PERMANENT_WORDS) + r")\b")
# Object ids and the uuids in our ref names are hex: "…a403f…" says nothing about permissions.
_HEX_TOKEN = re.compile(r"\b[0-9a-f]{7,64}\b|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def refused(message: str, proc: subprocess.CompletedProcess[bytes]) -> GitError:
    """A remote's refusal, classified: permanent when git or the server says why in those words."""
    return GitError(message, transient=not is_permanent((proc.stdout + proc.stderr).decode("utf-8", errors="replace")))


def is_permanent(output: str) -> bool:
    """Whether what git printed names a refusal no retry can fix (whole words, object ids left out)."""
    return _PERMANENT.search(_HEX_TOKEN.sub(" ", output.lower())) is not None


def redact(text: str) -> str:
    """Never print a token: `https://user:token@host` → `https://***@host`."""
    return _CREDENTIALS.sub(r"\1***@", text)


class Git:
    def __init__(self, repo: Path, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.repo = repo
        self.timeout = timeout
        self.deadline: float | None = None  # monotonic time after which every call fails fast
        self.env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        self.env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")

    def _time_left(self) -> float:
        if self.deadline is None:
            return self.timeout
        return min(self.timeout, self.deadline - time.monotonic())

    def run(
        self,
        *args: str,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        timeout = self._time_left()
        if timeout <= 0:
            raise GitError(f"git {args[0]}: out of time (the run was cancelled)")
        try:
            proc = subprocess.run(
                ["git", "-C", str(self.repo), *args],
                input=stdin,
                capture_output=True,
                env={**self.env, **credentials.git_env(), **(env or {})},
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise GitError(f"git {args[0]} did not finish within {timeout:.1f}s", transient=True) from None
        if check and proc.returncode != 0:
            raise GitError(f"git {args[0]} failed: {last_line(proc)}")
        return proc

    def out(self, *args: str, stdin: bytes | None = None, env: Mapping[str, str] | None = None) -> str:
        return self.run(*args, stdin=stdin, env=env).stdout.decode("utf-8", errors="replace").strip()


def last_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The most telling line git printed, credentials removed."""
    text = (proc.stderr or proc.stdout or b"").decode("utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    telling = ("fatal:", "error:", "remote:", "!")
    fatal = [line for line in lines if line.startswith(telling) and not line.startswith(_GENERIC)]
    return redact((fatal or lines or [f"exit code {proc.returncode}"])[-1])
