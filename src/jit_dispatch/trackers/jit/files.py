"""Bytes on disk exactly as jit writes them (jit-format §3.4, §5.3, §6)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# jit's struct order for an issue (jit-format §3, O/domain/types.rs:125-154).
ISSUE_FIELDS = (
    "id",
    "title",
    "description",
    "state",
    "priority",
    "assignee",
    "dependencies",
    "gates_required",
    "gates_status",
    "context",
    "documents",
    "labels",
    "created_at",
    "updated_at",
)
_FIELD_DEFAULTS: dict[str, Any] = {"assignee": None}


def ordered_issue(raw: dict[str, Any]) -> dict[str, Any]:
    """All 14 fields in jit's order; unknown keys kept (in place when the order already fits)."""
    present = [k for k in raw if k in ISSUE_FIELDS]
    if present == list(ISSUE_FIELDS):
        return raw
    ordered = {k: raw.get(k, _FIELD_DEFAULTS.get(k)) for k in ISSUE_FIELDS}
    ordered.update((k, v) for k, v in raw.items() if k not in ordered)
    return ordered


def dumps_pretty(data: Any) -> str:
    """serde_json::to_string_pretty: 2-space indent, raw UTF-8, no trailing newline."""
    return json.dumps(data, indent=2, ensure_ascii=False)


def dumps_event(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def atomic_write(path: Path, text: str) -> None:
    """Write `<name>.tmp` beside the target, then rename over it (jit §5.3; no fsync, as jit)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def append_lines(path: Path, lines: list[str]) -> None:
    """O_APPEND, one write() per line, so concurrent appenders never interleave within a line."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for line in lines:
            os.write(fd, (line + "\n").encode("utf-8"))
    finally:
        os.close(fd)
