"""The newest jit's enforced local rules at a write of an issue (docs/jit-format.md#local-rules). Pure.

`jit issue update --state S` validates the issue as it would be saved, before the transition
(`validate_for_write`, crates/jit/src/commands/mod.rs): every local rule (`require-label`,
`label-value-pattern`, `require-section`, `require-doc-type`, `json-schema`) whose `when` selects
it is a JSON Schema (Draft 2020-12; the shorthand kinds lowered as
crates/jit/src/validation/desugar.rs does) checked over jit's projection of the issue
(crates/jit/src/domain/projection.rs); an `error` finding of an `enforce = true` rule refuses the
write (exit 4, no event). The `jsonschema` library is imported
only when such a rule applies, and the body parsed only when a schema reads `sections`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jit_dispatch.domain import criteria, schema_messages

if TYPE_CHECKING:
    from jit_dispatch.domain.rules import Rule

SHORTHAND = frozenset({"require-label", "label-value-pattern", "require-section", "require-doc-type"})
_LABEL = re.compile(r"[a-z][a-z0-9-]*:[a-zA-Z0-9][a-zA-Z0-9._/-]*")  # jit's `label_regex`, whole


def applying(rules: Sequence[Rule], raw: Mapping[str, Any], target: str) -> list[Rule]:
    """The enforced local rules whose `when` selects the issue saved in `target`."""
    projected = {**raw, "state": target}
    return [
        rule
        for rule in rules
        if (rule.kind in SHORTHAND or rule.kind == "json-schema")
        and rule.enforce
        and rule.severity == "error"
        and rule.selects(projected)
    ]


def blockers(
    rules: Sequence[Rule], raw: Mapping[str, Any], target: str, repo_format: Callable[[], str]
) -> list[tuple[None, str]]:
    """What refuses the write of `raw` in `target`, one entry a finding in jit's words
    (`rule 'R' blocks TARGET: MESSAGE`); unnamed, as jit logs no `transition_blocked` for them.

    `repo_format`: config.toml's `[validation] content_format`, read only when a body is parsed."""
    selected = applying(rules, raw, target)
    if not selected:
        return []
    resolved = [(rule, schema_of(rule)) for rule in selected]
    projection = project(raw, target)
    if any(needs_sections(schema) for _, schema in resolved):
        try:
            projection["sections"] = sections_view(raw, repo_format())
        except criteria.UnreadableBody as exc:
            return [(None, f"rule evaluation failed: {exc}")]
    found: list[tuple[None, str]] = []
    for rule, schema in resolved:
        try:
            messages = schema_messages.findings(schema, projection)
        except schema_messages.BadSchema as exc:  # jit: a schema that does not compile fails the write
            return [(None, f"rule evaluation failed: rule '{rule.name}': {exc}")]
        found += [(None, f"rule '{rule.name}' blocks {target}: {message}") for message in messages]
    return found


def project(raw: Mapping[str, Any], state: str) -> dict[str, Any]:
    """jit's `project`: the fields rules can see, without `sections` (added only when needed)."""
    labels = [label for label in raw.get("labels") or [] if isinstance(label, str)]
    grouped: dict[str, list[str]] = {}
    kind = None
    for label in labels:
        if _LABEL.fullmatch(label):
            namespace, value = label.split(":", 1)
            grouped.setdefault(namespace, []).append(value)
            if namespace == "type" and kind is None:
                kind = value
    doc_types: list[str] = []
    for document in raw.get("documents") or []:
        doc_type = document.get("doc_type") if isinstance(document, dict) else None
        if isinstance(doc_type, str) and doc_type not in doc_types:
            doc_types.append(doc_type)
    projection: dict[str, Any] = {} if kind is None else {"type": kind}
    projection |= {
        "state": state,
        "priority": raw.get("priority", "normal"),
        "labels": dict(sorted(grouped.items())),
        "raw_labels": labels,
        "doc_types": doc_types,
    }
    return projection


def sections_view(raw: Mapping[str, Any], repo_format: str) -> dict[str, Any]:
    """The projection's `sections`: slug → {heading, level, items}, as jit's Markdown parser reads
    the description (`domain/criteria.py`); an `html`/`xml` body is an error, as in jit's default build."""
    content_format = raw.get("content_format") or repo_format
    if content_format != "markdown":
        raise criteria.UnreadableBody(
            f"content format '{content_format}' needs jit's '{content_format}' feature, not in its default build"
        )
    found = criteria.parsed(str(raw.get("description") or ""))
    return {
        slug: {"heading": heading, "level": level, "items": list(items)}
        for slug, (heading, level, items) in sorted(found.items())
    }


def reference_error(reference: Any) -> str | None:
    """jit's `validate_schema_reference`: a `json-schema` rule names a file under `.jit/schemas/`."""
    if not isinstance(reference, str):
        return "reference must be a string"
    if reference.startswith("/"):
        return "reference must be a relative path, not absolute"
    if ".." in reference.split("/"):
        return "reference must not contain a '..' path component"
    if not reference.startswith("schemas/"):
        return "reference must start with 'schemas/'"
    if not reference.endswith(".json"):
        return "reference must end with '.json'"
    return None


def schema_of(rule: Rule) -> Any:
    """The rule's JSON Schema: a `json-schema` rule's own (loaded by the tracker), a shorthand lowered."""
    if rule.kind == "json-schema":
        return rule.schema
    return desugar(rule.kind, rule.config)


def desugar(kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """jit's `desugar` of a shorthand kind (crates/jit/src/validation/desugar.rs)."""
    if kind == "require-label":
        label, least, most = str(config["label"]), config.get("min"), config.get("max")
        least = 1 if least is None else least  # "require": one at least unless told otherwise
        namespace, sep, value = label.partition(":")
        if sep and value not in ("*", ""):
            array: dict[str, Any] = {"type": "array", "contains": {"const": value}, "minContains": least}
            if most is not None:
                array["maxContains"] = most
        else:
            array = {"type": "array"}
            if least > 0:
                array["minItems"] = least
            if most is not None:
                array["maxItems"] = most
        labels: dict[str, Any] = {"type": "object", "properties": {namespace: array}}
        if least >= 1:
            labels["required"] = [namespace]
        return {"type": "object", "properties": {"labels": labels}}
    if kind == "label-value-pattern":
        items = {"type": "string", "pattern": config["regex"]}
        namespace_schema = {"type": "array", "items": items}
        return {
            "type": "object",
            "properties": {"labels": {"type": "object", "properties": {config["namespace"]: namespace_schema}}},
        }
    if kind == "require-section":
        heading = str(config["heading"])
        slug = criteria.slugify(heading)
        section = {
            "type": "object",
            schema_messages.SECTION_HEADING: heading,
            "required": ["items"],
            "properties": {"items": {"type": "array", "minItems": 1}},
        }
        sections = {"type": "object", "required": [slug], "properties": {slug: section}}
        return {"type": "object", "required": ["sections"], "properties": {"sections": sections}}
    if kind == "require-doc-type":
        doc_type = config.get("doc-type", config.get("doc_type"))
        doc_types = {"type": "array", "contains": {"const": doc_type}}
        return {"type": "object", "required": ["doc_types"], "properties": {"doc_types": doc_types}}
    raise ValueError(f"{kind} is not a shorthand local kind")


def needs_sections(schema: Any) -> bool:
    """jit's `schema_needs_sections`: a `sections` key or string anywhere, or a regex-keyed property
    (which could name it) — conservative, as jit: a needless parse costs little, a skipped one lies."""
    if isinstance(schema, dict):
        return any(
            key in ("sections", "patternProperties", "propertyNames") or needs_sections(child)
            for key, child in schema.items()
        )
    if isinstance(schema, list):
        return any(needs_sections(child) for child in schema)
    return bool(schema == "sections")
