"""JSON parsing that never recurses without bound: a too-deep document is a ValueError, not a crash.

Python's parser recurses once per nesting level, so a valid file nested 100,000 levels deep ends
in a RecursionError (and a document a few hundred levels deep parses, then breaks whoever walks
or writes it back). jit's own reader (serde_json) refuses anything deeper than 128 levels, so a
deeper document is one jit cannot read either: it is rejected here before it is parsed.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 128  # serde_json's recursion limit (docs/jit-format.md#issue-files)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)


class JSONTooDeep(ValueError):
    """Nested deeper than `MAX_DEPTH` levels."""

    def __init__(self) -> None:
        super().__init__(f"nested deeper than {MAX_DEPTH} levels")


def nesting_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects, brackets inside strings not counted."""
    depth = deepest = 0
    for byte in _STRING.sub(b"", data).translate(None, _NOT_BRACKETS):
        depth += _BRACKETS[byte]
        deepest = max(deepest, depth)
    return deepest


def loads(data: bytes | str) -> Any:
    """`json.loads`, except that a document nested deeper than `MAX_DEPTH` raises `JSONTooDeep`.

    Counting brackets is a C-speed upper bound on the depth, so the exact (slower) measure runs
    only for documents holding more than `MAX_DEPTH` opening brackets.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and nesting_depth(raw) > MAX_DEPTH:
        raise JSONTooDeep()
    try:
        return json.loads(data)
    except RecursionError:  # cannot happen after the check above; kept as the last line of defence
        raise JSONTooDeep() from None
