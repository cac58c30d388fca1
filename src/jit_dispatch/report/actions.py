"""GitHub Actions I/O: step outputs, the step summary and workflow commands in the log.

Facts this relies on are in docs/github-actions.md: heredoc outputs with a random delimiter
(#outputs), `::stop-commands::` (#workflow-commands), the 1 MiB summary limit (#summary).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

SUMMARY_LIMIT_BYTES = 1024 * 1024


def in_actions(env: Mapping[str, str] = os.environ) -> bool:
    return env.get("GITHUB_ACTIONS") == "true"


def escape_data(text: str) -> str:
    """Workflow command message escaping (actions/toolkit `escapeData`)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, **properties: str) -> str:
    props = ",".join(f"{k}={escape_property(v)}" for k, v in properties.items())
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


def new_stop_token() -> str:
    return "jit-dispatch-" + os.urandom(16).hex()


def fenced(text: str) -> str:
    """Text that the runner prints verbatim, never interpreting `::commands::` inside it."""
    token = new_stop_token()
    return f"::stop-commands::{token}\n{text}\n::{token}::"


def write_outputs(path: Path, outputs: Mapping[str, str]) -> None:
    """`name<<DELIM` … `DELIM` for every output, with a delimiter the value cannot contain."""
    with open(path, "a", encoding="utf-8") as handle:
        for name, value in outputs.items():
            delimiter = "ghadelimiter_" + os.urandom(16).hex()
            while delimiter in value:  # astronomically unlikely, but then it is not a guess
                delimiter = "ghadelimiter_" + os.urandom(16).hex()
            handle.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


def append_summary(path: Path, markdown: str) -> None:
    """Append to the step summary, never past the size GitHub accepts."""
    data = markdown.encode("utf-8")
    existing = path.stat().st_size if path.exists() else 0
    room = SUMMARY_LIMIT_BYTES - existing - 1024
    if len(data) > room:
        data = data[: max(0, room)].decode("utf-8", errors="ignore").encode("utf-8")
    with open(path, "ab") as handle:
        handle.write(data)


def print_line(stream: TextIO, text: str) -> None:
    """A line for whoever reads; a reader that went away (`once | head -1`) changes nothing else."""
    try:
        stream.write(text + "\n")
        stream.flush()
    except BrokenPipeError:
        discard(stream)


def discard(stream: TextIO) -> None:
    """The stream's reader is gone: point it at /dev/null, so later writes, and the interpreter's
    flush at exit, succeed silently. The issue's outcome and the exit code are decided elsewhere."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError):  # not backed by a descriptor (a test's StringIO)
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, descriptor)
    finally:
        os.close(null)
