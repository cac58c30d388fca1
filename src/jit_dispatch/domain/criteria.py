"""Criterion ids in an issue's body, as jit's rules read them (docs/jit-format.md#graph-rules). Pure.

jit parses a Markdown body with pulldown-cmark into sections keyed by the heading's slug, each
holding the text of its top-level list items (crates/jit/src/document/parser/markdown.rs); a
criterion id is the first match of the rule's `id-pattern` in an item. markdown-it-py is a
CommonMark parser as pulldown-cmark is, so both split a body into the same blocks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from markdown_it.token import Token

DEFAULT_SECTION = "success_criteria"
DEFAULT_ID_PATTERN = "[A-Z][A-Z0-9]*-[0-9]+"
_TEXT = frozenset({"text", "code_inline", "text_special"})
_BREAKS = frozenset({"softbreak", "hardbreak"})


class UnreadableBody(ValueError):
    """A body jit's default build cannot parse (HTML or XML content): jit calls it a config error."""


def slugify(heading: str) -> str:
    """jit's `slugify_heading`: alphanumerics lower-cased, every other run one `_`, none at either end."""
    slug: list[str] = []
    for ch in heading.strip():
        if ch.isalnum():
            slug.append(ch.lower())
        elif slug and slug[-1] != "_":
            slug.append("_")
    return "".join(slug).rstrip("_")


def _inline_text(token: Token) -> str:
    """pulldown-cmark's `Text` and `Code` events of an inline run (an image's alt text among them),
    each line break one space; inline HTML is no text."""
    parts = []
    for child in token.children or ():
        if child.type in _TEXT:
            parts.append(child.content)
        elif child.type in _BREAKS:
            parts.append(" ")
        elif child.type == "image":
            parts.append(_inline_text(child))
    return "".join(parts)


def sections(body: str) -> dict[str, tuple[str, ...]]:
    """Section slug → its top-level list items' text (sections of one slug merged, in order)."""
    return {slug: items for slug, (_, _, items) in parsed(body).items()}


@lru_cache(maxsize=256)
def parsed(body: str) -> dict[str, tuple[str, int, tuple[str, ...]]]:
    """Section slug → (heading, level, items), as jit's `ParsedContent`: sections of one slug merged,
    the first one's heading and level kept (`merge_section`)."""
    from markdown_it import MarkdownIt  # only when a rule reads sections: off the plain path's start-up

    found: dict[str, tuple[str, int, list[str]]] = {}
    level = 0
    current: list[str] | None = None
    depth = 0
    item: list[str] | None = None
    in_heading = False
    heading: list[str] = []
    for token in MarkdownIt("commonmark").parse(body):
        kind = token.type
        if kind == "heading_open":
            in_heading, heading, level = True, [], int(token.tag[1:])
        elif kind == "heading_close":
            in_heading = False
            text = "".join(heading).strip()
            current = found.setdefault(slugify(text), (text, level, []))[2]
        elif kind in ("bullet_list_open", "ordered_list_open"):
            depth += 1
        elif kind in ("bullet_list_close", "ordered_list_close"):
            depth = max(0, depth - 1)
        elif kind == "list_item_open" and depth == 1:
            item = []
        elif kind == "list_item_close" and depth == 1 and item is not None:
            if current is not None:
                current.append("".join(item).strip())
            item = None
        elif kind == "inline" and in_heading:
            heading.append(_inline_text(token))
        elif item is not None and depth == 1:
            if kind == "inline":
                item.append(_inline_text(token))
            elif kind in ("fence", "code_block"):
                item.append(token.content)
    return {slug: (text, size, tuple(items)) for slug, (text, size, items) in found.items()}


def criterion_ids(
    issue: Mapping[str, Any], section: str, marker: str | None, pattern: re.Pattern[str], repo_format: str
) -> list[str]:
    """The ids of the criteria in `section` of the issue's body, first seen first (jit's `criterion_ids`)."""
    content_format = issue.get("content_format") or repo_format
    if content_format != "markdown":
        raise UnreadableBody(
            f"content format '{content_format}' needs jit's '{content_format}' feature, not in its default build"
        )
    items = sections(str(issue.get("description") or "")).get(section, ())
    ids: dict[str, None] = {}
    for text in items:
        if marker is not None and not text.lstrip().startswith(marker):
            continue
        if (match := pattern.search(text)) is not None:
            ids.setdefault(match.group(0))
    return list(ids)
