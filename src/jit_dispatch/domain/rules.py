"""The newest jit's enforced graph rules at a state transition (docs/jit-format.md#graph-rules). Pure.

jit refuses a transition when a rule of `.jit/rules.toml` with `enforce = true` and severity
`error`, selected by its `when` for the issue in its target state, finds fault with that issue
(or has a broken config) over the issue's dependency neighbourhood (`enforce_transition_graph_rules`,
crates/jit/src/commands/mod.rs). Only graph-scope assertions are evaluated then, minus the
repo-wide ones; every graph kind jit evaluates is evaluated here (`domain/graph_rules.py`).
Local ones (sections, schemas, labels) are checked by jit when it writes the issue (`domain/local_rules.py`).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jit_dispatch.domain import graph_rules, local_rules
from jit_dispatch.domain.criteria import DEFAULT_ID_PATTERN, DEFAULT_SECTION

LOCAL_KINDS = frozenset(
    {"require-label", "require-section", "require-doc-type", "label-value-pattern", "json-schema", "checker-command"}
)
GRAPH_KINDS = frozenset(
    {
        "label-coverage",
        "label-reference",
        "dependency-shape",
        "gate-recency",
        "type-hierarchy",
        "criteria-label-match",
        "criteria-to-check",
        "label-uniqueness",
    }
)


class RulesError(ValueError):
    """A rules file jit cannot load: jit then refuses every transition until it is fixed."""


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    config: Any
    severity: str = "warn"
    enforce: bool = False
    when: Mapping[str, Any] = field(default_factory=dict)
    schema: Any = None  # a json-schema rule's schema, as the tracker read it from `.jit/<config>`

    def selects(self, raw: Mapping[str, Any]) -> bool:
        return graph_rules.selects(self.when, raw)

    @property
    def repo_wide(self) -> bool:
        """Left to `jit validate` at a transition: they need the whole repository (jit's own list)."""
        if self.kind == "label-reference":
            return not (isinstance(self.config, dict) and self.config.get("scope") == "linked")
        return self.kind in ("label-uniqueness", "type-hierarchy")


def parse_rules(text: str, where: str, item_kinds: Mapping[str, Any] | None = None) -> list[Rule]:
    """`.jit/rules.toml` as jit loads it; RulesError naming the rule for what jit would refuse to load.

    `item_kinds`: config.toml's `[item_kinds]`, which a label-coverage `kind =` names."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{where}: not valid TOML ({exc})") from None
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise RulesError(f"{where}: 'rules' must be an array of tables")
    rules = []
    for n, entry in enumerate(raw_rules, 1):
        name = entry.get("name") if isinstance(entry, dict) else None
        label = f"{where}: rule {name!r}" if isinstance(name, str) else f"{where}: rule #{n}"
        if not isinstance(name, str):
            raise RulesError(f"{label}: missing 'name'")
        assertion = entry.get("assert")
        if not isinstance(assertion, dict) or len(assertion) != 1:
            raise RulesError(f"{label}: 'assert' must name exactly one assertion kind")
        ((kind, config),) = assertion.items()
        if kind not in LOCAL_KINDS | GRAPH_KINDS:
            raise RulesError(f"{label}: unknown assertion kind {kind!r}")
        severity, enforce, when = entry.get("severity", "warn"), entry.get("enforce", False), entry.get("when", {})
        if severity not in ("off", "warn", "error") or not isinstance(enforce, bool) or not isinstance(when, dict):
            raise RulesError(f"{label}: 'severity', 'enforce' or 'when' has the wrong type")
        if (wrong := graph_rules.selector_error(when)) is not None:
            raise RulesError(f"{label}: 'when.{wrong[1:]}")
        if kind == "json-schema" and (refused := local_rules.reference_error(config)) is not None:
            raise RulesError(f"{label}: invalid schema reference {config!r}: {refused}")
        if (refused := _refused_at_load(str(kind), config)) is not None:
            raise RulesError(f"{label}: {refused}")
        if kind == "checker-command" and enforce:
            raise RulesError(f"{label}: checker-command rules cannot block writes; remove enforce")
        if kind == "label-coverage" and isinstance(config, dict):
            config = _expand_kind(config, item_kinds or {}, label)
        rules.append(Rule(name, str(kind), config, severity, enforce, when))
    return rules


def at_transition(rules: Sequence[Rule], projected: Mapping[str, Any]) -> list[Rule]:
    """The rules jit enforces when the issue enters its (projected) target state."""
    return [
        rule
        for rule in rules
        if rule.kind in GRAPH_KINDS
        and rule.enforce
        and rule.severity == "error"
        and not rule.repo_wide
        and rule.selects(projected)
    ]


def blockers(
    rules: Sequence[Rule],
    raw: Mapping[str, Any],
    target: str,
    now: datetime,
    neighbourhood: Callable[[Mapping[str, Any]], Sequence[Mapping[str, Any]]] | None = None,
    repo_format: Callable[[], str] = lambda: "markdown",
) -> list[tuple[str, str]]:
    """(rule name, message) for every enforced rule that refuses `raw` entering `target`.

    `neighbourhood`: the issue (in its target state) with every issue it depends on or that
    depends on it, transitively, as jit's `transition_neighborhood`; read only when a rule applies,
    as is `repo_format` (config.toml's `[validation] content_format`).
    """
    projected = {**raw, "state": target}
    selected = at_transition(rules, projected)
    if not selected:
        return []
    issues: list[Mapping[str, Any]] = [projected]
    if neighbourhood is not None:
        issues += [i for i in neighbourhood(projected) if i.get("id") != raw.get("id")]
    found: list[tuple[str, str]] = []
    body_format = repo_format()
    for rule in selected:
        for about, message in graph_rules.evaluate(rule, issues, now, body_format):
            if about is None:  # a broken guard blocks rather than pass silently
                found.append(
                    (rule.name, f"rule '{rule.name}' is misconfigured: {message}; fix the rule or use --force")
                )
            elif about == raw.get("id"):
                found.append((rule.name, message))
    return found


def _expand_kind(config: dict[str, Any], item_kinds: Mapping[str, Any], label: str) -> dict[str, Any]:
    """jit's `expand_kind_sugar`: a `kind` with no inline criteria triple becomes the triple of
    config.toml's `[item_kinds.<kind>]` (its section, first marker, id-pattern); beside one, inert."""
    if "kind" not in config or {"criteria-section", "marker", "id-pattern"} & set(config):
        return config
    name = config["kind"]
    if not isinstance(name, str):
        raise RulesError(
            f"{label}: label-coverage key 'kind' must be a string when it is the sole criteria-triple source"
        )
    declared = item_kinds.get(name)
    if not isinstance(declared, dict):
        raise RulesError(f"{label}: label-coverage kind '{name}' is not declared in config.toml [item_kinds]")
    expanded = {key: value for key, value in config.items() if key != "kind"}
    expanded["criteria-section"] = declared.get("section") or DEFAULT_SECTION
    markers = declared.get("markers") or []
    if isinstance(markers, list) and markers:
        expanded["marker"] = markers[0]
    expanded["id-pattern"] = declared.get("id-pattern") or DEFAULT_ID_PATTERN
    return expanded


def _refused_at_load(kind: str, config: Any) -> str | None:
    """What jit's loader refuses in an assertion it checks at load (crates/jit/src/validation/rules.rs)."""
    if kind in _STRICT:
        return _strict_shape(kind, config)
    if kind == "label-coverage" and isinstance(config, dict):
        state = config.get("child-state")
        if isinstance(state, str) and state not in graph_rules.STATES:
            return f"label-coverage 'child-state' must be one of {', '.join(graph_rules.STATES)}, found '{state}'"
    keys = _LOAD_KEYS.get(kind)
    if keys is None:
        return None
    if not isinstance(config, dict):
        return f"{kind} must be a table"
    if stray := sorted(set(config) - keys):
        return f"{kind}: unknown field '{stray[0]}'"
    if kind == "gate-recency":
        days, hours = config.get("max-age-days"), config.get("max-age-hours")
        if days is not None and hours is not None:
            return "gate-recency must set exactly one of 'max-age-days' or 'max-age-hours', not both"
        if days is None and hours is None:
            return "gate-recency requires 'max-age-days' or 'max-age-hours'"
        age = days if days is not None else hours
        if not isinstance(age, int) or isinstance(age, bool) or age < 0:
            return "gate-recency max age must be a whole number"
        if age == 0:
            return "gate-recency max age must be greater than zero"
        gates = config.get("gates", [])
        if not isinstance(gates, list) or not all(isinstance(g, str) for g in gates):
            return "gate-recency 'gates' must be an array of strings"
        return None
    if kind == "criteria-to-check" and config.get("gate-prefix") is None and config.get("check-namespace") is None:
        return "criteria-to-check requires at least one of 'gate-prefix' or 'check-namespace'"
    if kind == "criteria-label-match" and "namespace" not in config:
        return "criteria-label-match: missing field 'namespace'"
    if kind == "criteria-label-match" and config["namespace"] == "":
        return "criteria-label-match 'namespace' must be a non-empty string"
    if any(not isinstance(v, str) for v in config.values()):
        return f"{kind}: every field must be a string"
    try:
        re.compile(config.get("id-pattern", DEFAULT_ID_PATTERN))
    except re.error as exc:
        return f"{kind}: invalid 'id-pattern' ({exc})"
    return None


_CRITERIA_KEYS = frozenset({"criteria-section", "marker", "id-pattern"})
_LOAD_KEYS = {
    "gate-recency": frozenset({"max-age-days", "max-age-hours", "gates"}),
    "criteria-to-check": _CRITERIA_KEYS | {"gate-prefix", "check-namespace"},
    "criteria-label-match": _CRITERIA_KEYS | {"namespace"},
}

# jit's serde-strict assertion payloads (deny_unknown_fields): required string fields, optional
# whole-number ones, the aliases serde accepts; then the values jit's lowering refuses.
_STRICT: dict[str, tuple[tuple[str, ...], tuple[str, ...], dict[str, str]]] = {
    "label-uniqueness": (("namespace", "scope"), (), {}),
    "type-hierarchy": (("kind",), (), {}),
    "require-label": (("label",), ("min", "max"), {}),
    "require-section": (("heading",), (), {}),
    "require-doc-type": (("doc-type",), (), {"doc_type": "doc-type"}),
    "label-value-pattern": (("namespace", "regex"), (), {}),
}


def _strict_shape(kind: str, config: Any) -> str | None:
    """What jit's loader refuses in a serde-strict payload (crates/jit/src/validation/rules.rs)."""
    required, counts, aliases = _STRICT[kind]
    if not isinstance(config, dict):
        return f"{kind} must be a table"
    fields: dict[str, Any] = {aliases.get(str(key), str(key)): value for key, value in config.items()}
    if stray := sorted(set(fields) - set(required) - set(counts)):
        return f"{kind}: unknown field '{stray[0]}'"
    if missing := [key for key in required if key not in fields]:
        return f"{kind}: missing field '{missing[0]}'"
    if wrong := [key for key in required if not isinstance(fields[key], str)]:
        return f"{kind}: '{wrong[0]}' must be a string"
    for key in counts:
        value = fields.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**32):
            return f"{kind}: '{key}' must be a whole number"
    if kind == "label-uniqueness" and fields["scope"] != "all":
        if fields["scope"] == "linked":
            return 'label-uniqueness does not support scope = "linked"; uniqueness is repo-wide — use scope = "all"'
        return f'label-uniqueness \'scope\' must be "all", found "{fields["scope"]}"'
    if kind == "type-hierarchy" and fields["kind"] not in ("orphan-leaf", "strategic-consistency"):
        return f"type-hierarchy 'kind' must be 'orphan-leaf' or 'strategic-consistency', found '{fields['kind']}'"
    return None
