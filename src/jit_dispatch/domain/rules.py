"""The newest jit's enforced graph rules at a state transition (docs/jit-format.md#graph-rules). Pure.

jit refuses a transition when a rule of `.jit/rules.toml` with `enforce = true` and severity
`error`, selected by its `when` for the issue in its target state, finds fault with that issue.
Only graph-scope assertions are evaluated then, minus the repo-wide ones; local ones (sections,
schemas, labels) are checked by jit when an issue is written, not at a transition. Of the graph
kinds, `gate-recency` is evaluated here as jit does; an enforced one of the other kinds blocks,
named, rather than be guessed at: the dispatcher never writes a transition jit would refuse.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jit_dispatch.domain.issue import parse_timestamp
from jit_dispatch.domain.selection import label_matches

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
STATES = ("backlog", "ready", "in_progress", "gated", "done", "rejected", "archived")


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

    def selects(self, raw: Mapping[str, Any]) -> bool:
        """jit's `Selector::matches`: type (a `type:` label), label pattern, state, document type."""
        labels = raw.get("labels") or []
        if (kind := self.when.get("type")) is not None and f"type:{kind}" not in labels:
            return False
        if (pattern := self.when.get("label")) is not None and not label_matches(str(pattern), labels):
            return False
        states = self.when.get("state")
        if states is not None and raw.get("state") not in ([states] if isinstance(states, str) else states):
            return False
        doc_type = self.when.get("has_doc_type", self.when.get("has-doc-type"))
        documents = raw.get("documents") or []
        return doc_type is None or any(isinstance(d, dict) and d.get("doc_type") == doc_type for d in documents)

    @property
    def repo_wide(self) -> bool:
        """Left to `jit validate` at a transition: they need the whole repository (jit's own list)."""
        if self.kind == "label-reference":
            return not (isinstance(self.config, dict) and self.config.get("scope") == "linked")
        return self.kind in ("label-uniqueness", "type-hierarchy")


def parse_rules(text: str, where: str) -> list[Rule]:
    """`.jit/rules.toml` as jit loads it; RulesError naming the rule for what jit would refuse to load."""
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
        states = when.get("state")
        listed = [states] if isinstance(states, str) else states
        if states is not None and (not isinstance(listed, list) or not listed or not set(listed) <= set(STATES)):
            raise RulesError(f"{label}: 'when.state' must be one of {', '.join(STATES)} or a list of them")
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


def blockers(rules: Sequence[Rule], raw: Mapping[str, Any], target: str, now: datetime) -> list[tuple[str, str]]:
    """(rule name, message) for every enforced rule that refuses `raw` entering `target`."""
    projected = {**raw, "state": target}
    found: list[tuple[str, str]] = []
    for rule in at_transition(rules, projected):
        if rule.kind == "gate-recency":
            found.extend((rule.name, message) for message in _gate_recency(rule, projected, now))
        else:
            found.append((rule.name, f"rule kind '{rule.kind}' is not evaluated by jit-dispatch; jit may refuse it"))
    return found


def _gate_recency(rule: Rule, raw: Mapping[str, Any], now: datetime) -> list[str]:
    """jit's gate-recency: each gate (all required ones when none named) recorded, and recently enough."""
    config = rule.config if isinstance(rule.config, dict) else {}
    days, hours = config.get("max-age-days"), config.get("max-age-hours")
    if (days is None) == (hours is None) or not isinstance(days if days is not None else hours, int):
        return [f"rule '{rule.name}' is misconfigured: set exactly one of 'max-age-days' or 'max-age-hours'"]
    max_hours = days * 24 if isinstance(days, int) else int(hours or 0)
    in_days = max_hours % 24 == 0
    unit, limit = ("days", max_hours // 24) if in_days else ("hours", max_hours)
    status = raw.get("gates_status") or {}
    messages = []
    for key in config.get("gates") or raw.get("gates_required") or []:
        entry = status.get(key)
        if not isinstance(entry, dict):
            messages.append(f"gate '{key}' has no recorded result")
            continue
        try:
            age_hours = int((now - parse_timestamp(str(entry.get("updated_at")))).total_seconds() // 3600)
        except ValueError:
            age_hours = max_hours + 1
        if age_hours > max_hours:
            shown = (age_hours + 23) // 24 if in_days else age_hours
            messages.append(f"gate '{key}' result is {shown} {unit} old (max {limit})")
    return messages
