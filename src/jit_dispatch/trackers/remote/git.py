"""A thin `git` subprocess wrapper: one place for timeouts, deadlines, redaction and errors."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from jit_dispatch.errors import TrackerError
from jit_dispatch.process import credentials
from jit_dispatch.trackers.remote.refusals import classify

_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")
DEFAULT_TIMEOUT_SECONDS = 60.0
# Summaries git prints after the line that says why: never the most telling one.
_GENERIC = ("fatal: Could not read from remote repository", "error: failed to push some refs")


class GitError(TrackerError):
    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient  # worth another try within the push budget


def refused(message: str, proc: subprocess.CompletedProcess[bytes]) -> GitError:
    """A remote's refusal, classified by its cause (`refusals.py`): permanent ones fail at once."""
    refusal = classify((proc.stdout + proc.stderr).decode("utf-8", errors="replace"))
    verdict = "permanent" if refusal.permanent else "transient"
    return GitError(f"{message} ({refusal.cause}: {verdict})", transient=not refusal.permanent)


def is_permanent(output: str) -> bool:
    """Whether what git printed names a refusal no retry can fix."""
    return classify(output).permanent


def redact(text: str) -> str:
    """Never print a token: `https://user:token@host` → `https://***@host`."""
    return _CREDENTIALS.sub(r"\1***@", text)


class Git:
    def __init__(self, repo: Path, *, timeout: float = DEFAULT_TIMEOUT_SECONDS, bare: bool = False) -> None:
        """`repo`: a working tree (`git -C repo`), or with `bare` a git directory (`git --git-dir repo`)."""
        self.repo = repo
        self.timeout = timeout
        self.deadline: float | None = None  # monotonic time after which every call fails fast
        self.env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        self.env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        self._where = ("--git-dir", str(repo)) if bare else ("-C", str(repo))

    def _time_left(self, deadline: float | None) -> float:
        ends = [end for end in (self.deadline, deadline) if end is not None]
        return min([self.timeout, *(end - time.monotonic() for end in ends)])

    def run(
        self,
        *args: str,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        deadline: float | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """`git -C repo ARGS`, finished by `deadline` (monotonic; also by `hurry`'s and the timeout):
        past it, git and whatever it started (a transport, a receive-pack on a local remote) are killed."""
        timeout = self._time_left(deadline)
        if timeout <= 0:
            if self.deadline is not None and self.deadline <= time.monotonic():
                raise GitError(f"git {args[0]}: out of time (the run was cancelled)")
            raise GitError(f"git {args[0]}: out of time", transient=True)
        with subprocess.Popen(
            ["git", *self._where, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**self.env, **credentials.git_env(), **(env or {})},
            start_new_session=True,  # its own group: a timeout kills the transport it spawned too
        ) as proc:
            try:
                stdout, stderr = proc.communicate(stdin, timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise GitError(f"git {args[0]} did not finish within {timeout:.1f}s", transient=True) from None
            except BaseException:
                _kill_group(proc)
                raise
        done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        if check and done.returncode != 0:
            raise GitError(f"git {args[0]} failed: {last_line(done)}")
        return done

    def out(self, *args: str, stdin: bytes | None = None, env: Mapping[str, str] | None = None) -> str:
        return self.run(*args, stdin=stdin, env=env).stdout.decode("utf-8", errors="replace").strip()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL git's process group and reap git; a grandchild holding the pipes is not waited for."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    proc.wait()


def last_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The most telling line git printed, credentials removed."""
    text = (proc.stderr or proc.stdout or b"").decode("utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    telling = ("fatal:", "error:", "remote:", "!")
    fatal = [line for line in lines if line.startswith(telling) and not line.startswith(_GENERIC)]
    return redact((fatal or lines or [f"exit code {proc.returncode}"])[-1])
