"""Run the configured command as a child process group (docs/architecture.md#run).

Output is copied to the log as it arrives and only a bounded tail is kept, so memory stays flat
whatever the command prints. A timeout or a cancellation stops the whole group: SIGTERM, a
grace period, then SIGKILL, to every process of the run (`process/tree.py`: `setsid` ones too).
Nothing the command started outlives the run.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from jit_dispatch.process import runlock
from jit_dispatch.process.tree import TOKEN_VARIABLE, bind_to_parent, kill_run, signal_run

POLL_SECONDS = 0.05
EXIT_POLL_SECONDS = 0.002  # without a pidfd: how often to look for the exit once output has closed
TIMEOUT_GRACE_SECONDS = 10.0
CANCEL_GRACE_SECONDS = 3.0  # the runner kills a cancelled step after ~10 s; we must settle in 7
DRAIN_SECONDS = 0.5  # how long background children may hold the output pipe after the command ends
CHUNK = 64 * 1024


class CancelToken:
    """Set by a signal handler; polled by the runner and the dispatcher."""

    def __init__(self) -> None:
        self._signum: int | None = None

    @property
    def signum(self) -> int | None:
        """The first signal received, or None."""
        return self._signum

    def cancel(self, signum: int) -> None:
        if self._signum is None:
            self._signum = signum

    @property
    def cancelled(self) -> bool:
        return self.signum is not None


def install_cancel_handlers(token: CancelToken) -> None:
    """A cancelled workflow run sends SIGINT, then SIGTERM; some runners SIGHUP."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda received, _frame: token.cancel(received))


class OutputTail:
    """The last `max_bytes` of a stream, for the summary."""

    def __init__(self, max_bytes: int = 32 * 1024) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self.total_bytes = 0

    def add(self, chunk: bytes) -> None:
        self.total_bytes += len(chunk)
        self._buffer += chunk
        if len(self._buffer) > 2 * self.max_bytes:
            del self._buffer[: len(self._buffer) - self.max_bytes]

    def text(self) -> str:
        return bytes(self._buffer[-self.max_bytes :]).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class RunResult:
    """How the command ended, and the tail of what it printed."""

    exit_code: int  # shell convention: 128+N when killed by signal N, 127 when not found
    duration_seconds: float
    tail: str
    output_bytes: int
    timed_out: bool = False
    cancelled_by: int | None = None
    not_found: str | None = None
    start_error: str | None = None  # why the command could not be started at all (e.g. E2BIG)
    killed_by: int | None = None  # the signal that ended it (then `exit_code` is 128+N by convention)
    stderr: str = ""  # with `stderr_tail`: the tail of stderr, kept apart from `tail` (stdout)
    stderr_bytes: int = 0


_NOT_FOUND = re.compile(r"(?:^|: )([^\n:]+): command not found\s*$", re.MULTILINE)


def missing_command(tail: str, fallback: str) -> str:
    """The name bash reported as not found (the last such line), or `fallback`."""
    found = _NOT_FOUND.findall(tail)
    return found[-1].strip() if found else fallback


def _watch_exit(selector: selectors.BaseSelector, pid: int) -> int | None:
    """A pidfd that becomes readable when `pid` exits (Linux ≥ 5.3); None where there is none."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None
    selector.register(pidfd, selectors.EVENT_READ)
    return pidfd


def _has_exited(pid: int) -> bool:
    """True once the leader has exited, without reaping it (so its pgid stays reserved)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def run_command(
    argv: Sequence[str],
    *,
    cwd: Path | None,
    env: Mapping[str, str],
    timeout: float | None,
    cancel: CancelToken,
    write_output: Callable[[bytes], None],
    tail: OutputTail | None = None,
    stderr_tail: OutputTail | None = None,
    timeout_grace: float = TIMEOUT_GRACE_SECONDS,
    run_lock: str | None = None,
) -> RunResult:
    """Run `argv` to its end, a timeout or a cancellation.

    `stderr_tail`: keep stderr apart (both still go to `write_output`), as jit's gate executor does.
    `timeout_grace`: seconds between SIGTERM and SIGKILL at the timeout; 0 kills at once (jit's).
    `run_lock`: the issue id whose run lock the command's processes hold (process/runlock.py), so
    its life is visible after the dispatcher's.
    """
    token = os.urandom(8).hex()
    lock = runlock.hold(run_lock, token) if run_lock else None  # held by the command's processes too
    tail = tail or OutputTail()
    try:
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env={**env, TOKEN_VARIABLE: token},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if stderr_tail is None else subprocess.PIPE,
                start_new_session=True,  # own process group: we can stop the whole tree
                preexec_fn=bind_to_parent(),  # SIGKILLed by the kernel if the dispatcher dies
                pass_fds=(lock.fd,) if lock else (),
                bufsize=0,
            )
        except FileNotFoundError:
            return RunResult(127, time.monotonic() - started, "", 0, not_found=argv[0])
        except (OSError, ValueError, subprocess.SubprocessError) as exc:  # not executable, E2BIG, a NUL in it
            cause = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
            message = f"cannot start {argv[0]}: {cause}"
            return RunResult(126, time.monotonic() - started, message, len(message), start_error=cause.lower())
        assert proc.stdout is not None
        tails = {proc.stdout.fileno(): tail}
        if proc.stderr is not None and stderr_tail is not None:
            tails[proc.stderr.fileno()] = stderr_tail
        selector = selectors.DefaultSelector()
        for fd in tails:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        exit_watch = _watch_exit(selector, proc.pid)  # wakes the loop the moment the command exits

        deadline = started + timeout if timeout else None
        kill_at: float | None = None
        exited_at: float | None = None
        timed_out = False
        cancelled_by: int | None = None
        stragglers_killed_at: float | None = None
        eof = False
        try:
            while not (eof and exited_at is not None):
                wait = POLL_SECONDS if exit_watch is not None or not eof else EXIT_POLL_SECONDS
                for key, _ in selector.select(wait):
                    if key.fd in tails and not _copy_available(key.fd, write_output, tails[key.fd]):
                        del tails[key.fd]  # output closed (`exec >log`); the command itself may still run
                        selector.unregister(key.fd)
                        eof = not tails
                now = time.monotonic()
                if (
                    cancel.signum is not None and cancelled_by is None and exited_at is None
                ):  # exited: its result stands
                    cancelled_by = cancel.signum
                    signal_run(proc.pid, token, signal.SIGTERM)
                    grace_end = now + CANCEL_GRACE_SECONDS
                    kill_at = grace_end if kill_at is None else min(kill_at, grace_end)
                if deadline is not None and now >= deadline and kill_at is None:
                    timed_out = True
                    signal_run(proc.pid, token, signal.SIGTERM if timeout_grace > 0 else signal.SIGKILL)
                    kill_at = now + timeout_grace
                if kill_at is not None and now >= kill_at:
                    signal_run(proc.pid, token, signal.SIGKILL)
                if exited_at is None and _has_exited(proc.pid):
                    exited_at = now
                    if exit_watch is not None:
                        selector.unregister(exit_watch)
                if exited_at is not None and now - exited_at > DRAIN_SECONDS:
                    if stragglers_killed_at is None:
                        signal_run(proc.pid, token, signal.SIGKILL)  # background children still hold the pipe
                        stragglers_killed_at = now
                    elif now - stragglers_killed_at > DRAIN_SECONDS:
                        break  # a process we cannot see holds the pipe: stop reading it
        finally:
            selector.close()
            if exit_watch is not None:
                os.close(exit_watch)
            kill_run(proc.pid, token)  # leave nothing behind, whatever happened
            proc.stdout.close()
            if proc.stderr is not None:
                proc.stderr.close()
            returncode = proc.wait()
        exit_code = 128 - returncode if returncode < 0 else returncode
        text = tail.text()
        first_word = (argv[-1].split() or [argv[-1]])[0]
        not_found = missing_command(text, first_word) if exit_code == 127 else None
        return RunResult(
            exit_code,
            time.monotonic() - started,
            text,
            tail.total_bytes,
            timed_out=timed_out,
            cancelled_by=cancelled_by,
            not_found=not_found,
            killed_by=-returncode if returncode < 0 else None,
            stderr=stderr_tail.text() if stderr_tail is not None else "",
            stderr_bytes=stderr_tail.total_bytes if stderr_tail is not None else 0,
        )
    finally:
        if lock is not None:
            lock.release()


def _copy_available(fd: int, write_output: Callable[[bytes], None], tail: OutputTail) -> bool:
    """Copy what the pipe holds now; False at end of file."""
    try:
        chunk = os.read(fd, CHUNK)
    except BlockingIOError:
        return True
    if not chunk:
        return False
    tail.add(chunk)
    write_output(chunk)
    return True
