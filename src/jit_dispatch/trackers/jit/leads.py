"""A ready issue read only as far as selection needs, from jit's own bytes (docs/hardening.md#hot-path).

`once` orders every ready issue but claims one: parsing and validating them all costs more than
the rest of the dispatch. `lead_of` reads the fields selection needs (priority, created_at,
assignee, dependencies, labels, gates, context) with one regular expression over the part of the
file from its state line to its end, in the exact layout jit writes. The expression tokenizes
that part completely (every string, every bracket), so when it matches, the fields it captures
are the last, and so the effective, top-level members of a valid file; anything else — keys
reordered, compact JSON, escapes in a captured value, an unknown field — gives None and the
caller parses the file in full. A lead whose file turns out invalid is dropped when selection
reaches it (`Lead.parse`, the same checks as `issue_from_raw`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType

from jit_dispatch.domain.issue import Issue, IssueFacts, parse_issue, parse_timestamp
from jit_dispatch.domain.values import Priority, State
from jit_dispatch.trackers.jit.files import read_regular

_PLAIN = rb'"[^"\\\x00-\x1f]*"'  # a string with no escape: its bytes are its text
_ANY = rb'"[^"\\\x00-\x1f]*(?:\\.[^"\\\x00-\x1f]*)*"'  # any string token
_SCALAR = rb"(?:" + _ANY + rb"|null|true|false|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|\[\])"


def _list(item: bytes, indent: int) -> bytes:
    """A pretty-printed array of `item`s whose closing bracket sits at `indent` (`item` once: less to compile)."""
    return _members_of(rb"\[", item, rb"\]", indent)


def _object(key: bytes, value: bytes, indent: int) -> bytes:
    """A pretty-printed object of `key: value` members whose closing brace sits at `indent`."""
    return _members_of(rb"\{", key + b": " + value, rb"\}", indent)


def _members_of(opening: bytes, member: bytes, closing: bytes, indent: int) -> bytes:
    inner, outer = b"\n" + b" " * (indent + 2), b"\n" + b" " * indent
    return (
        rb"(?:"
        + opening
        + closing
        + rb"|"
        + opening
        + rb"(?:"
        + inner
        + member
        + rb"(?:,(?="
        + inner
        + rb")|(?="
        + outer
        + closing
        + rb")))+"
        + outer
        + closing
        + rb")"
    )


_PLAIN_LIST = _list(_PLAIN, 2)
_DOCUMENT_VALUE = rb"(?:" + _SCALAR + rb"|" + _list(_object(_ANY, _SCALAR, 8), 6) + rb")"  # `assets`: a list
_TAIL = re.compile(
    rb'\n  "state": "ready",'
    rb'\n  "priority": "(?P<priority>[a-z]+)",'
    rb'\n  "assignee": (?P<assignee>null|' + _PLAIN + rb"),"
    rb'\n  "dependencies": (?P<dependencies>' + _PLAIN_LIST + rb"),"
    rb'\n  "gates_required": (?P<gates_required>' + _PLAIN_LIST + rb"),"
    rb'\n  "gates_status": (?P<gates_status>'
    + _object(_PLAIN, _object(_PLAIN, rb"(?:null|" + _PLAIN + rb")", 4), 2)
    + rb"),"
    rb'\n  "context": (?P<context>' + _object(_PLAIN, _PLAIN, 2) + rb"),"
    rb'\n  "documents": ' + _list(_object(_ANY, _DOCUMENT_VALUE, 4), 2) + rb","
    rb'\n  "labels": (?P<labels>' + _PLAIN_LIST + rb"),"
    rb'\n  "created_at": (?P<created_at>' + _PLAIN + rb"),"
    rb'\n  "updated_at": ' + _ANY + rb"\n\}\n?"
)
_STRINGS = re.compile(_PLAIN)
_MEMBER = re.compile(rb"(" + _PLAIN + rb"): (" + _PLAIN + rb"|null)")
_PAIR = re.compile(rb"(" + _PLAIN + rb"): (" + _PLAIN + rb")")
_GATE = re.compile(rb"\n    (" + _PLAIN + rb"): \{(.*?)\n    \}", re.DOTALL)
_FRACTION = re.compile(r"\.(\d+)")
_PRIORITIES = {p.value.encode(): p for p in Priority}
_NO_CONTEXT: Mapping[str, str] = MappingProxyType({})  # most ready issues: one shared, read-only


def _strings(text: bytes) -> tuple[str, ...]:
    """A matched `_list(_PLAIN, 2)`: its items hold no quote, so splitting at the separators is exact."""
    if text == b"[]":
        return ()
    return tuple(text[7:-5].decode().split('",\n    "'))


def _members(text: bytes) -> dict[str, str | None]:
    """An object of plain members as JSON reads it (a repeated key: the last one wins)."""
    return {k[1:-1].decode(): None if v == b"null" else v[1:-1].decode() for k, v in _MEMBER.findall(text)}


def _pairs(text: bytes) -> Mapping[str, str]:
    """An object of plain strings as JSON reads it (a repeated key: the last one wins)."""
    if text == b"{}":
        return _NO_CONTEXT
    return {k[1:-1].decode(): v[1:-1].decode() for k, v in _PAIR.findall(text)}


def _passed(text: bytes) -> frozenset[str]:
    """The gates of `gates_status` whose status is `passed` (a repeated key: the last one wins)."""
    if text == b"{}":
        return frozenset()
    gates = {key: _members(body) for key, body in _GATE.findall(text)}
    return frozenset(key[1:-1].decode() for key, members in gates.items() if members.get("status") == "passed")


class Lead(IssueFacts):
    """What selection reads of a ready issue (the attributes of `Issue` it uses); `parse()` gives the issue.

    A plain class with slots, not a dataclass: `once` builds thousands, and a dataclass costs
    about a millisecond of start-up to create.
    """

    __slots__ = (
        "assignee",
        "context",
        "created_at",
        "created_ns",
        "dependencies",
        "gates_passed",
        "gates_required",
        "id",
        "labels",
        "path",
        "priority",
    )
    state = State.READY

    def __init__(
        self,
        id: str,
        priority: Priority,
        assignee: str | None,
        dependencies: tuple[str, ...],
        labels: tuple[str, ...],
        gates_required: tuple[str, ...],
        gates_passed: frozenset[str],
        context: Mapping[str, str],
        created_at: datetime,
        created_ns: int,
        path: str,
    ) -> None:
        self.id = id
        self.priority = priority
        self.assignee = assignee
        self.dependencies = dependencies
        self.labels = labels
        self.gates_required = gates_required
        self.gates_passed = gates_passed
        self.context = context
        self.created_at = created_at
        self.created_ns = created_ns
        self.path = path

    def parse(self) -> Issue:
        """The issue in full, read again and checked like every other (ValueError: unreadable as one).

        Read again rather than kept: the few leads read in full do not justify keeping the bytes
        of every ready issue. A file changed since is read as it is now, as a claim reads it.
        """
        try:
            data = read_regular(self.path)
        except OSError as exc:
            raise ValueError(f"cannot be read ({exc.strerror or exc})") from None
        return parse_issue(data, self.id)


def lead_of(data: bytes, at: int, issue_id: str, path: str, lists: dict[bytes, tuple[str, ...]]) -> Lead | None:
    """The lead of a ready issue whose state line starts at `at`, or None: parse the file in full.

    The file must start with its own id, as jit writes it (a mismatch is caught by `Lead.parse`).
    `lists`: the label and gate lists read so far in this scan, shared (a store repeats a few).
    """
    if not data.startswith(b'{\n  "id": "%s",\n' % issue_id.encode()):
        return None
    match = _TAIL.fullmatch(data, at)
    if match is None:
        return None
    priority, assignee, dependencies, gates_required, gates_status, context, labels, created = match.groups()
    if (priority := _PRIORITIES.get(priority)) is None:
        return None
    try:
        created_raw = created[1:-1].decode()
        fraction = _FRACTION.search(created_raw)
        return Lead(
            issue_id,
            priority,
            None if assignee == b"null" else assignee[1:-1].decode(),
            _strings(dependencies),
            lists.get(labels) or lists.setdefault(labels, _strings(labels)),
            lists.get(gates_required) or lists.setdefault(gates_required, _strings(gates_required)),
            _passed(gates_status),
            _pairs(context),
            parse_timestamp(created_raw),
            int(fraction.group(1).ljust(9, "0")[6:9]) if fraction else 0,
            path,
        )
    except ValueError:  # not UTF-8, not a timestamp: the full parse says what is wrong
        return None
