"""A JSON Schema's findings over jit's projection, in jit's words (docs/jit-format.md#local-rules). Pure.

jit validates with the Rust `jsonschema` crate pinned to Draft 2020-12 (`format` an annotation)
and renders each error with `render_finding_message` (crates/jit/src/validation/engine.rs): a
readable instance path prefix, its own words for an empty section, a `contains`, a missing
property (with a did-you-mean over the sections), a pattern; the crate's words otherwise. The
Python `jsonschema` library's Draft202012Validator gives the same verdicts; its messages are
re-rendered here as the crate writes them for the keywords the shorthand kinds use and the
common ones besides (`type`, `const`, `enum`); any other keyword keeps the library's message.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

SECTION_HEADING = "x-jit-section-heading"  # desugar's annotation: a section's heading as written
_CONTAINS = ("contains", "minContains", "maxContains")  # the crate reports all three as `contains`


class BadSchema(ValueError):
    """A schema jit's engine cannot compile: jit fails the write rather than skip the rule."""


def findings(schema: Any, instance: Any) -> list[str]:
    """Every error of `instance` under `schema`, rendered as jit renders it."""
    import re

    from jsonschema import Draft202012Validator  # only when a local rule applies: ~0.1 s to import
    from jsonschema.exceptions import SchemaError

    schema = _sorted(schema)  # jit's serde_json maps are sorted: its keywords, and so its errors, in that order
    try:
        Draft202012Validator.check_schema(schema)
        return [render(error, schema, instance) for error in Draft202012Validator(schema).iter_errors(instance)]
    except SchemaError as exc:
        raise BadSchema(exc.message) from None
    except re.error as exc:
        raise BadSchema(f"invalid regex ({exc})") from None


def render(error: ValidationError, schema: Any, projection: Any) -> str:
    """jit's `render_finding_message` for one error."""
    path = [str(part) for part in error.absolute_path]
    kind, value, instance = error.validator, error.validator_value, error.instance
    if kind in ("minItems", *_CONTAINS) and instance == [] and _section_items(path) is not None:
        slug = _section_items(path) or ""
        heading = _section_heading(schema, slug) or slug
        return _at(
            path, f"section '{heading}' has no list items; items must be Markdown bullets (lines starting with '- ')"
        )
    if kind in _CONTAINS:
        return _contains(error, schema, path)
    if kind == "required":
        missing = _missing(error.message)
        base = _at(path, f"{_json(missing)} is a required property")
        if isinstance(missing, str) and (near := _did_you_mean(missing, projection)) is not None:
            return f"{base}; did you mean '{near}'?"
        return base
    if kind == "pattern":
        expected = f"expected to match {humanize(str(value))}"
        return _at(path, f"{_json(instance)} is not valid under the given pattern ({expected})")
    return _at(path, _crate_words(str(kind), value, instance) or error.message)


def _crate_words(kind: str, value: Any, instance: Any) -> str | None:
    """The Rust crate's message for the keywords it words differently from the Python library."""
    if kind in ("minItems", "maxItems"):
        return f"{_json(instance)} has {'less' if kind == 'minItems' else 'more'} than {value} item{_s(value)}"
    if kind == "type":
        if isinstance(value, list):
            return f"{_json(instance)} is not of types {', '.join(_json(v) for v in value)}"
        return f"{_json(instance)} is not of type {_json(value)}"
    if kind == "const":
        return f"{_json(value)} was expected"
    if kind == "enum":
        return f"{_json(instance)} is not one of {_json(value)}"
    return None


def _contains(error: ValidationError, schema: Any, path: Sequence[str]) -> str:
    """jit's `render_contains_message`: the section (or path) and the pattern required."""
    sub = error.schema.get("contains") if isinstance(error.schema, dict) else None
    pattern = sub.get("pattern") if isinstance(sub, dict) else None
    pattern = pattern if isinstance(pattern, str) else None
    slug = _section_items(path)
    if slug is not None:
        heading = _section_heading(schema, slug) or slug
        if pattern is not None:
            return _at(path, f"section '{heading}' items must include at least one entry matching {humanize(pattern)}")
        return _at(path, f"section '{heading}' items must include at least one entry satisfying the required shape")
    if pattern is not None:
        return _at(path, f"items must include at least one entry matching {humanize(pattern)}")
    return _at(path, "items must include at least one matching entry")


def _missing(message: str) -> Any:
    """The property a `required` error names (the library writes its repr)."""
    import ast  # only for a finding

    try:
        return ast.literal_eval(message.removesuffix(" is a required property"))
    except (ValueError, SyntaxError):
        return message


def _section_items(path: Sequence[str]) -> str | None:
    return path[1] if len(path) == 3 and path[0] == "sections" and path[2] == "items" else None


def _section_heading(schema: Any, slug: str) -> str | None:
    try:
        heading = schema["properties"]["sections"]["properties"][slug][SECTION_HEADING]
    except (KeyError, TypeError):
        return None
    return heading if isinstance(heading, str) else None


def _did_you_mean(required: str, projection: Any) -> str | None:
    """jit's `did_you_mean_section`: the nearest other section within max(len/5, 2) edits."""
    sections = projection.get("sections") if isinstance(projection, dict) else None
    if not isinstance(sections, dict):
        return None
    threshold = max(len(required) // 5, 2)
    near = [(_levenshtein(required, slug), slug) for slug in sorted(sections) if slug != required]
    near = [(distance, slug) for distance, slug in near if distance <= threshold]
    if not near:
        return None
    _, slug = min(near, key=lambda pair: pair[0])
    heading = sections[slug].get("heading") if isinstance(sections[slug], dict) else None
    return heading if isinstance(heading, str) else slug


def _levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a):
        diagonal, row[0] = row[0], i + 1
        for j, cb in enumerate(b):
            diagonal, row[j + 1] = row[j + 1], min(row[j] + 1, row[j + 1] + 1, diagonal + (ca != cb))
    return row[-1]


def humanize(pattern: str) -> str:
    """jit's `humanize_regex`: tabs and line breaks escaped, other invisible characters as `\\u{…}`."""
    out = []
    for ch in pattern:
        if ch in "\t\n\r":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r"}[ch])
        elif unicodedata.category(ch) == "Cc" or ch in "\u200b\u200c\u200d\u2060\ufeff":
            out.append(f"\\u{{{ord(ch):04x}}}")
        else:
            out.append(ch)
    return "".join(out)


def _at(path: Sequence[str], message: str) -> str:
    return f"at {'.'.join(path)}: {message}" if path else message


def _json(value: Any) -> str:
    """serde_json's compact form, as the crate prints an instance (its maps sorted)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def _s(count: Any) -> str:
    return "" if count == 1 else "s"
