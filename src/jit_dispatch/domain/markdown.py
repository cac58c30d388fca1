"""Untrusted text made inert: for a terminal line, and for Markdown (step summary, comments, pull
request bodies). In Markdown it is HTML-escaped and stripped of Markdown syntax, or fenced with a
fence longer than any backtick run it contains; `@`, `#` and URL schemes are escaped so that no
mention pings anyone and no issue is referenced or closed (`Closes #12` in a pull request body).
"""

from __future__ import annotations

import re

ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_LINE_START_SPECIAL = re.compile(r"^([#+\-=>]|\d+[.)])")


def plain(text: str) -> str:
    """Text safe for a terminal line: no escape sequences, controls or bidi overrides."""
    return CONTROL.sub("", ANSI.sub("", text.replace("\r", "").replace("\n", " ").replace("\t", " ")))


def one_line(text: str, limit: int) -> str:
    """`plain`, cut to `limit` characters."""
    flat = plain(text)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# html.escape(quote=True), `@` so that no mention pings anyone, and `#` (as a hex reference: no `#<digits>`
# left) so that no `Closes #12` or `#12` in a title closes or links an issue; a table: `html` imports its entities.
_HTML_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;", "@": "&#64;", "#": "&#x23;"}
)
_URL_SCHEME = re.compile(r"(?<=[A-Za-z]):(?=//)")  # `https://…/issues/12` after a keyword closes it too


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def md_text(text: str, limit: int = 300) -> str:
    """Untrusted text as inert inline Markdown: one line, HTML escaped, syntax escaped."""
    escaped = _URL_SCHEME.sub("&#x3a;", one_line(text, limit).translate(_HTML_ESCAPES))
    return _LINE_START_SPECIAL.sub(r"\\\1", _MARKDOWN_SPECIAL.sub(r"\\\1", escaped))


def md_code_span(text: str, limit: int = 300) -> str:
    """Untrusted text as an inline code span that is also safe inside a table cell."""
    flat = one_line(text, limit)
    fence = "`" * (_longest_backtick_run(flat) + 1)
    body = flat.replace("|", "\\|")
    return f"{fence} {body} {fence}"


def md_code_block(text: str, info: str = "text") -> str:
    """A fenced block no content can close: the fence outruns every backtick run inside."""
    fence = "`" * max(3, _longest_backtick_run(text) + 1)
    return f"{fence}{info}\n{text}\n{fence}"
