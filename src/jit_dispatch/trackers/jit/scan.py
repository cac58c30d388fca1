"""Reading every issue of a store, fast: the hot path of a dispatch (docs/hardening.md).

One read() per file, a substring search for the state line, a full parse only for the states a
caller asked for; backlog issues only for their dependencies. Ids from index.json are checked
before any path is built from them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import cast

from jit_dispatch.domain.issue import CTX_DELIVERED_AT, Issue, parse_issue
from jit_dispatch.domain.values import RESOLVED_STATES, State
from jit_dispatch.trackers.jit.files import HEAD_BYTES, READ_FLAGS, Fingerprint, fingerprint, read_open
from jit_dispatch.trackers.jit.leads import lead_of

# In a pretty-printed issue only top-level keys sit at a two-space indent, and a raw newline
# never occurs inside a JSON string, so these find the issue's own fields without parsing (when
# the file also ends in a brace at column 0, which only the top-level object's can be).
_STATE_KEY = b'\n  "state": "'
_STATE_NAMES = {state.value.encode(): state.value for state in State}
# jit's ids are lowercase hyphenated UUIDs (docs/jit-format.md#index): an id is a file name, so
# anything else (`../x`, a NUL, a separator) is never used to build a path.
_ID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_ID_SHAPE = re.compile(_ID)
_DEPENDENCIES_KEY = b'\n  "dependencies": '
_UUID = b'"' + _ID.encode() + b'"'
_ID_LIST = re.compile(rb"\[(?:\s*" + _UUID + rb"\s*,)*(?:\s*" + _UUID + rb")?\s*\]")


def quick_dependencies(data: bytes) -> tuple[str, ...] | None:
    """The dependencies of a well-formed pretty file (a list of ids), or None: parse it in full."""
    start = data.find(_DEPENDENCIES_KEY)
    match = _ID_LIST.match(data, start + len(_DEPENDENCIES_KEY)) if start >= 0 else None
    if match is None:
        return None
    return tuple(_ID_SHAPE.findall(match.group().decode()))


_ID_LINES = re.compile(rf"(?:{_ID}\n)*+")  # every id in one pass over "id\nid\n…" (possessive: no backtrack stack)
DELIVERED_KEY = f'"{CTX_DELIVERED_AT}"'.encode()  # only a file holding it may be waiting for a merge


Waiting = tuple[str, tuple[str, ...]]  # a backlog issue's id and its dependencies


def check_ids(ids: list[str]) -> list[str]:
    """The ids that do not have jit's shape (in one regex pass when, as usual, there is none)."""
    if _ID_LINES.fullmatch("\n".join(ids) + "\n"):
        return []
    return [i for i in ids if not _ID_SHAPE.fullmatch(i)]


@dataclass
class Scan:
    """What one pass over the issue files found."""

    states: dict[str, str] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)  # those of the requested states (ready: maybe leads)
    backlog: list[Waiting] = field(default_factory=list)
    seen: dict[str, Fingerprint] = field(default_factory=dict)  # unresolved issues' files, as read
    warnings: list[str] = field(default_factory=list)
    delivered: dict[str, bytes] = field(default_factory=dict)  # `gated` files that may wait for a merge


def scan_issues(
    ids: list[str], directory: str, requested: frozenset[str], found: Scan, leads: bool = False
) -> dict[str, str]:
    """Read every issue into `found`; returns the files that could not be read, id → cause.

    A file is opened, read in one read(), classified by a substring search for its state
    line (`_STATE_KEY`) and closed; only an unresolved issue's file is also fstat'ed, and only
    the states in `requested` (and backlog issues jit's way of writing cannot tell) parsed.
    `leads`: a ready issue in jit's layout is read only as far as selection needs (`lead_of`).
    """
    backlog_in_full = State.BACKLOG in requested
    leads = leads and State.READY in requested
    lists: dict[bytes, tuple[str, ...]] = {}  # label and gate lists of leads, shared
    resolved = frozenset(str(state) for state in RESOLVED_STATES)
    unwanted = resolved - requested  # resolved issues not asked for: their state is all we keep
    open_, read, close, fstat = os.open, os.read, os.close, os.fstat
    key, key_length, names = _STATE_KEY, len(_STATE_KEY), _STATE_NAMES
    states = found.states
    unreadable: dict[str, str] = {}
    for issue_id in ids:
        path = f"{directory}/{issue_id}.json"
        try:
            fd = open_(path, READ_FLAGS)
            try:
                data = read(fd, HEAD_BYTES)
                if not 0 < len(data) < HEAD_BYTES:  # empty, large, or not a regular file
                    data = read_open(fd, data)
                line = data.find(key)
                if line >= 0 and (data.endswith(b"\n}") or data.rstrip().endswith(b"\n}")):
                    at = line + key_length
                    state = names.get(data[at : data.find(b'"', at)])
                else:
                    state = None
                if state not in resolved:  # what it is now, for the promotions (`Fingerprint`)
                    found.seen[issue_id] = fingerprint(fstat(fd))
            finally:
                close(fd)
        except OSError as exc:
            found.warnings.append(f"{path}: listed in index.json but unreadable ({exc.strerror}); skipped")
            unreadable[issue_id] = exc.strerror or str(exc)
            continue
        if state in unwanted:
            states[issue_id] = state
            continue
        if leads and state == "ready" and (lead := lead_of(data, line, issue_id, path, lists)) is not None:
            found.issues.append(cast(Issue, lead))  # stands in for the issue until `Snapshot.full` reads it
            states[issue_id] = state
            continue
        if state == "gated" and DELIVERED_KEY in data:  # kept for the merge watch: no second read
            found.delivered[issue_id] = data
        waiting = quick_dependencies(data) if state == "backlog" and not backlog_in_full else None
        if waiting is not None:
            found.backlog.append((issue_id, waiting))
        elif state is None or state in requested or state == "backlog":
            try:
                issue = parse_issue(data, issue_id)
            except ValueError as exc:  # invalid JSON/UTF-8, too deep, IssueFormatError
                found.warnings.append(f"{path}: {exc}; skipped (left untouched)")
                continue
            state = issue.state
            if state in requested:
                found.issues.append(issue)
            if state == State.BACKLOG:
                found.backlog.append((issue_id, issue.dependencies))
        if state is not None:  # always set by now: read from the file's state line, or parsed
            states[issue_id] = state
    return unreadable
