"""jit's graph-rule evaluators over a transition's neighbourhood (docs/jit-format.md#graph-rules). Pure.

One function per assertion kind, as crates/jit/src/validation/graph.rs evaluates it: the same
config keys and defaults, the same findings in the same words. A finding is attributed to an
issue id, or to none for a rule whose config is broken (jit's `config-error`, which blocks).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jit_dispatch.domain.criteria import DEFAULT_ID_PATTERN, DEFAULT_SECTION, UnreadableBody, criterion_ids
from jit_dispatch.domain.issue import parse_timestamp
from jit_dispatch.domain.selection import label_matches

if TYPE_CHECKING:
    from jit_dispatch.domain.rules import Rule

Raw = Mapping[str, Any]
Finding = tuple[str | None, str]  # (the issue it concerns, or None: the rule's config is broken; message)
CONFIG_ERROR = "config error: "


class ConfigError(ValueError):
    """A rule's config jit reports as a `config-error` finding."""


STATES = ("backlog", "ready", "in_progress", "gated", "done", "rejected", "archived")


def selector_error(when: Mapping[str, Any], *, known_states: bool = True) -> str | None:
    """What jit's `Selector` deserialization refuses in a `when`/`target` table; None when it loads.
    `known_states`: a `when`'s states are checked at load too; a `target`'s unknown one matches none."""
    for key in ("type", "label", "has_doc_type", "has-doc-type"):
        if key in when and not isinstance(when[key], str):
            return f"'{key}' must be a string"
    states = when.get("state")
    listed = [states] if isinstance(states, str) else states
    if states is not None and (not isinstance(listed, list) or not all(isinstance(s, str) for s in listed)):
        return "'state' must be a string or a list of strings"
    if known_states and states is not None and (not listed or not set(listed) <= set(STATES)):
        return f"'state' must be one of {', '.join(STATES)} or a list of them"
    return None


def selects(when: Mapping[str, Any], raw: Raw) -> bool:
    """jit's `Selector::matches`: type (a `type:` label), label pattern, state, document type."""
    labels = _labels(raw)
    if (kind := when.get("type")) is not None and f"type:{kind}" not in labels:
        return False
    if (pattern := when.get("label")) is not None and not label_matches(str(pattern), labels):
        return False
    states = when.get("state")
    if states is not None and raw.get("state") not in ([states] if isinstance(states, str) else states):
        return False
    doc_type = when.get("has_doc_type", when.get("has-doc-type"))
    documents = raw.get("documents") or []
    return doc_type is None or any(isinstance(d, dict) and d.get("doc_type") == doc_type for d in documents)


def _str(config: Mapping[str, Any], key: str, default: str | None = None, *, required: bool = False) -> str | None:
    value = config.get(key)
    if value is None:
        if required:
            raise ConfigError(f"missing required key '{key}'")
        return default
    if not isinstance(value, str):
        raise ConfigError(f"key '{key}' must be a string")
    return value


def _pattern(source: str) -> re.Pattern[str]:
    try:
        return re.compile(source)
    except re.error as exc:
        raise ConfigError(f"invalid 'id-pattern': {exc}") from None


def short_id(issue: Raw) -> str:
    return str(issue.get("id", ""))[:8]


def _labels(issue: Raw) -> list[str]:
    return [label for label in issue.get("labels") or [] if isinstance(label, str)]


def _deps(issue: Raw) -> list[str]:
    return [dep for dep in issue.get("dependencies") or [] if isinstance(dep, str)]


def values_in(issue: Raw, namespace: str) -> Iterator[str]:
    prefix = f"{namespace}:"
    return (label[len(prefix) :] for label in _labels(issue) if label.startswith(prefix))


def credits(label: str, namespace: str, criterion: str, scope: str) -> bool:
    """jit's `label_credits_id`: `<ns>:<id>`, or `<ns>:<scope>/<id>` for the criteria owner's short id."""
    prefix = f"{namespace}:"
    if not label.startswith(prefix):
        return False
    value = label[len(prefix) :]
    if "/" in value:
        owner, own_id = value.split("/", 1)
        return owner == scope and own_id == criterion
    return value == criterion


def evaluate(rule: Rule, issues: Sequence[Raw], now: datetime, repo_format: str = "markdown") -> list[Finding]:
    """Every finding of `rule` over `issues` (the neighbourhood, the issue in its target state)."""
    config = rule.config if isinstance(rule.config, Mapping) else {}
    try:
        return _KINDS[rule.kind](rule, config, issues, now, repo_format)
    except ConfigError as exc:
        return [(None, f"{CONFIG_ERROR}{exc}")]


def _per_issue(rule: Rule, issues: Sequence[Raw], judge: Callable[[Raw], list[Finding]]) -> list[Finding]:
    """`judge` over each issue the rule selects; a config error of one issue (its container, its
    body) is one finding, the others' findings kept, as jit's evaluators go issue by issue."""
    found: list[Finding] = []
    for issue in issues:
        if rule.selects(issue):
            try:
                found += judge(issue)
            except ConfigError as exc:
                found.append((None, f"{CONFIG_ERROR}{exc}"))
    return found


def _gate_recency(rule: Rule, config: Mapping[str, Any], issues: Sequence[Raw], now: datetime, _: str) -> list[Finding]:
    """Each checked gate recorded, and no older than the limit (the config was checked at load)."""
    days, hours = config.get("max-age-days"), config.get("max-age-hours")
    max_hours = int(days) * 24 if days is not None else int(hours or 0)
    in_days = max_hours % 24 == 0
    unit, limit = ("days", max_hours // 24) if in_days else ("hours", max_hours)
    found: list[Finding] = []
    for issue in (i for i in issues if rule.selects(i)):
        status = issue.get("gates_status") or {}
        for key in config.get("gates") or issue.get("gates_required") or []:
            entry = status.get(key)
            if not isinstance(entry, dict):
                found.append((issue["id"], f"gate '{key}' has no recorded result"))
                continue
            try:
                age = int((now - parse_timestamp(str(entry.get("updated_at")))).total_seconds() // 3600)
            except ValueError:
                age = max_hours + 1
            if age > max_hours:
                shown = (age + 23) // 24 if in_days else age
                found.append((issue["id"], f"gate '{key}' result is {shown} {unit} old (max {limit})"))
    return found


def _criteria(config: Mapping[str, Any]) -> tuple[str, str | None, re.Pattern[str]]:
    section = _str(config, "criteria-section", DEFAULT_SECTION) or DEFAULT_SECTION
    return section, _str(config, "marker"), _pattern(_str(config, "id-pattern", DEFAULT_ID_PATTERN) or "")


def _ids(issue: Raw, criteria: tuple[str, str | None, re.Pattern[str]], repo_format: str) -> list[str]:
    try:
        return criterion_ids(issue, *criteria, repo_format)
    except UnreadableBody as exc:
        raise ConfigError(str(exc)) from None


def _children(source: Raw, issues: Sequence[Raw], link: str, exclude: set[str]) -> list[Raw]:
    """jit's `children_of`: the transitive walk in the link's direction, bounded by excluded types."""

    def excluded(issue: Raw) -> bool:
        return any(v in exclude for v in values_in(issue, "type"))

    if link == "any":
        return [i for i in issues if i.get("id") != source.get("id") and not excluded(i)]
    by_id = {i.get("id"): i for i in issues}

    def neighbours(node: Raw) -> list[Raw]:
        if link == "dependents":
            return [i for i in issues if node.get("id") in _deps(i)]
        return [by_id[d] for d in _deps(node) if d in by_id]

    visited, candidates, frontier = {source.get("id")}, [], neighbours(source)
    while frontier:
        node = frontier.pop()
        if node.get("id") in visited:
            continue
        visited.add(node.get("id"))
        if excluded(node):
            continue
        candidates.append(node)
        frontier.extend(neighbours(node))
    return candidates


def _container(source: Raw, namespace: str, issues: Sequence[Raw]) -> Raw:
    """jit's `resolve_container`: the issue a `<ns>:<id>` label names (full id, short id, prefix)."""
    value = next(values_in(source, namespace), None)
    if value is None:
        raise ConfigError(
            f"issue {short_id(source)} matched the rule but its '{namespace}:<id>' container pointer is missing"
        )
    for matches in (
        [i for i in issues if i.get("id") == value],
        [i for i in issues if short_id(i) == value],
        [i for i in issues if str(i.get("id", "")).startswith(value)],
    ):
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ConfigError(
                f"issue {short_id(source)} matched the rule but its '{namespace}:{value}' container "
                "pointer is ambiguous (matches multiple issue ids by prefix)"
            )
    pointer = f"issue {short_id(source)} matched the rule but its '{namespace}:{value}' container pointer"
    raise ConfigError(f"{pointer} names no known issue")


def _label_coverage(
    rule: Rule, config: Mapping[str, Any], issues: Sequence[Raw], _: datetime, fmt: str
) -> list[Finding]:
    """Every criterion of the container covered by a child labelled `<satisfies>:<id>` (in `child-state`)."""
    criteria = _criteria(config)
    namespace = _str(config, "satisfies-namespace", "satisfies") or "satisfies"
    child_state = _str(config, "child-state")
    link = _str(config, "child-link", "dependents") or "dependents"
    if link not in ("dependents", "dependencies", "any"):
        raise ConfigError(f"key 'child-link' must be one of 'dependents', 'dependencies', 'any', got '{link}'")
    exclude = config.get("child-type-exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(t, str) for t in exclude):
        raise ConfigError("key 'child-type-exclude' must be an array of strings")
    pointer = _str(config, "container-from-label")
    described = {"dependents": "dependent", "dependencies": "dependency", "any": ""}[link]
    in_state = f" in state '{child_state}'" if child_state is not None else ""

    def judge(source: Raw) -> list[Finding]:
        container = source if pointer is None else _container(source, pointer, issues)
        children = _children(container, issues, link, set(exclude))
        scope = short_id(container)
        return [
            (
                container["id"],
                f"criterion '{criterion}' of issue {scope} is not satisfied by any {described} child{in_state}",
            )
            for criterion in _ids(container, criteria, fmt)
            if not any(
                any(credits(label, namespace, criterion, scope) for label in _labels(child))
                and (child_state is None or child.get("state") == child_state)
                for child in children
            )
        ]

    return _per_issue(rule, issues, judge)


def _label_reference(
    rule: Rule, config: Mapping[str, Any], issues: Sequence[Raw], _: datetime, __: str
) -> list[Finding]:
    """Each `<from>:<v>` label resolves to a `<to>:<v>` declared in scope (only `linked` runs at a transition)."""
    source, target = _str(config, "from", required=True), _str(config, "to", required=True)
    scope = _str(config, "scope", "global")
    if scope not in ("global", "linked"):
        raise ConfigError(f"key 'scope' must be 'global' or 'linked', got '{scope}'")
    assert source is not None and target is not None
    everywhere = {v for i in issues for v in values_in(i, target)}
    found: list[Finding] = []
    for issue in (i for i in issues if rule.selects(i)):
        allowed = everywhere
        if scope == "linked":
            linked = [
                o
                for o in issues
                if o.get("id") != issue.get("id") and (o.get("id") in _deps(issue) or issue.get("id") in _deps(o))
            ]
            allowed = {v for o in linked for v in values_in(o, target)}
        for value in values_in(issue, source):
            if value not in allowed:
                message = (
                    f"issue {short_id(issue)} references '{source}:{value}' but no '{target}:{value}' "
                    f"source is declared in {scope} scope"
                )
                found.append((issue["id"], message))
    return found


def _dependency_shape(
    rule: Rule, config: Mapping[str, Any], issues: Sequence[Raw], _: datetime, __: str
) -> list[Finding]:
    """Each selected issue depends (directly, or through the graph with `transitive`) on a `target` match."""
    target = config.get("target")
    if target is None:
        raise ConfigError("missing required key 'target'")
    if not isinstance(target, Mapping):
        raise ConfigError("key 'target' must be a table")
    if (wrong := selector_error(target, known_states=False)) is not None:
        raise ConfigError(f"invalid 'target' selector: {wrong}")
    mode = _str(config, "mode", "must")
    if mode not in ("must", "should"):
        raise ConfigError(f"key 'mode' must be 'must' or 'should', got '{mode}'")
    transitive = config.get("transitive", False)
    if not isinstance(transitive, bool):
        raise ConfigError("key 'transitive' must be a boolean")
    targets = {i.get("id") for i in issues if selects(target, i)}
    by_id = {i.get("id"): i for i in issues}

    def reaches(source: Raw) -> bool:
        if any(d in targets for d in _deps(source)):
            return True
        seen, frontier = set(), list(_deps(source))
        while transitive and frontier:
            node = frontier.pop()
            if node in seen or node not in by_id:
                continue
            seen.add(node)
            if node in targets:
                return True
            frontier.extend(_deps(by_id[node]))
        return False

    message = "issue {} {} depend on an issue matching the target selector but does not"
    return [(s["id"], message.format(short_id(s), mode)) for s in issues if rule.selects(s) and not reaches(s)]


def _criteria_to_check(
    rule: Rule, config: Mapping[str, Any], issues: Sequence[Raw], _: datetime, fmt: str
) -> list[Finding]:
    """Each criterion has a required gate `<gate-prefix><id>` or a label `<check-namespace>:<id>`."""
    criteria = _criteria(config)
    prefix, namespace = _str(config, "gate-prefix"), _str(config, "check-namespace")

    def judge(issue: Raw) -> list[Finding]:
        found: list[Finding] = []
        for criterion in _ids(issue, criteria, fmt):
            gated = prefix is not None and f"{prefix}{criterion}" in (issue.get("gates_required") or [])
            labelled = namespace is not None and any(
                credits(label, namespace, criterion, short_id(issue)) for label in _labels(issue)
            )
            if not (gated or labelled):
                wanted = [f"gate '{prefix}{criterion}'"] * (prefix is not None)
                wanted += [f"label '{namespace}:{criterion}'"] * (namespace is not None)
                found.append(
                    (issue["id"], f"criterion '{criterion}' has no verification: expected {' or '.join(wanted)}")
                )
        return found

    return _per_issue(rule, issues, judge)


def _criteria_label_match(
    rule: Rule, config: Mapping[str, Any], issues: Sequence[Raw], _: datetime, fmt: str
) -> list[Finding]:
    """Each `<namespace>:<v>` label names a criterion of the section (else a stray label)."""
    criteria = _criteria(config)
    namespace = _str(config, "namespace", required=True)
    heading = " ".join(word[:1].upper() + word[1:] for word in criteria[0].split("_"))

    def judge(issue: Raw) -> list[Finding]:
        ids = set(_ids(issue, criteria, fmt))
        return [
            (
                issue["id"],
                f"label '{namespace}:{value}' on issue {short_id(issue)} names no criterion in "
                f"section '{heading}' (stray or invented)",
            )
            for value in values_in(issue, str(namespace))
            if value not in ids
        ]

    return _per_issue(rule, issues, judge)


_KINDS: dict[str, Callable[[Rule, Mapping[str, Any], Sequence[Raw], datetime, str], list[Finding]]] = {
    "gate-recency": _gate_recency,
    "label-coverage": _label_coverage,
    "label-reference": _label_reference,
    "dependency-shape": _dependency_shape,
    "criteria-to-check": _criteria_to_check,
    "criteria-label-match": _criteria_label_match,
}
EVALUATED = frozenset(_KINDS)


def neighbourhood(issues: Mapping[str, Raw], issue: Raw) -> list[Raw]:
    """jit's `transition_neighborhood`: `issue`, what it depends on and what depends on it, transitively."""
    dependents: dict[str, list[str]] = {}
    for other_id, other in issues.items():
        for dep in _deps(other):
            dependents.setdefault(dep, []).append(other_id)
    own = issue.get("id")
    reached: set[str] = set()

    def dependencies(node: str) -> list[str]:
        return _deps(issues[node]) if node in issues else []

    def dependents_of(node: str) -> list[str]:
        return dependents.get(node, [])

    steps: list[tuple[list[str], Callable[[str], list[str]]]] = [
        (_deps(issue), dependencies),
        (dependents_of(str(own)), dependents_of),
    ]
    for start, step in steps:
        frontier, seen = list(start), set[str]()
        while frontier:
            node = frontier.pop()
            if node not in seen and node != own:
                seen.add(node)
                frontier.extend(step(node))
        reached |= seen
    return [issue, *(issues[i] for i in sorted(reached) if i in issues)]
