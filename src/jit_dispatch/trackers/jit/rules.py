"""A store's `rules.toml`, as the newest jit enforces it at a transition (docs/jit-format.md#graph-rules)
and at the write of a state (docs/jit-format.md#local-rules).

Re-read whenever the file changed; the pure evaluation is `domain/rules.py`, `domain/graph_rules.py`
and `domain/local_rules.py`.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jit_dispatch.domain import graph_rules, local_rules, rules
from jit_dispatch.domain.values import State
from jit_dispatch.trackers.base import Snapshot
from jit_dispatch.trackers.jit.files import Fingerprint, fingerprint, read_regular

Issues = Callable[[], Mapping[str, dict[str, Any]]]  # every issue of the store by id, as read now


class StoreRules:
    def __init__(self, root: Path, issues: Issues) -> None:
        self.path = root / "rules.toml"
        self.config = root / "config.toml"
        self._issues = issues
        # as last read: the file's fingerprint, its enforced graph rules (or why jit cannot load it),
        # its enforced local ones (`local_rules.blockers`)
        self._loaded: tuple[Fingerprint | None, list[rules.Rule] | str, list[rules.Rule]] | None = None
        self._config_seen: Fingerprint | None = None  # config.toml's when read: its `[item_kinds]` count
        self._schemas_seen: dict[Path, Fingerprint | None] = {}  # json-schema rules' files, when read

    def enforced(self) -> list[rules.Rule] | str:
        """`rules.toml`'s graph rules jit may enforce at a transition (re-read when it changed); the
        one-line error when jit could not load it (jit then refuses every transition)."""
        path = self.path
        try:
            seen: Fingerprint | None = fingerprint(os.stat(path))
        except FileNotFoundError:  # jit's in-memory defaults enforce nothing at a transition
            seen = None
        except OSError as exc:
            return f"{path}: cannot be read ({exc.strerror})"
        stale = any(_fingerprint(p) != then for p, then in self._schemas_seen.items())
        if stale or self._loaded is None or self._loaded[0] != seen or self._config_seen != self._config_fingerprint():
            self._config_seen, self._schemas_seen = self._config_fingerprint(), {}
            local: list[rules.Rule] = []
            try:
                text = read_regular(path).decode("utf-8") if seen is not None else ""
                parsed = rules.parse_rules(text, str(path), self._config().get("item_kinds"))
                every = [self._with_schema(r) if r.kind == "json-schema" else r for r in parsed]
                every = [r for r in every if r.enforce]
                loaded: list[rules.Rule] | str = [r for r in every if r.kind in rules.GRAPH_KINDS]
                local = [r for r in every if r.kind in rules.LOCAL_KINDS]
            except (OSError, UnicodeDecodeError, rules.RulesError) as exc:
                loaded = f"{exc}; jit refuses every transition until it is fixed"
            self._loaded = (seen, loaded, local)
        return self._loaded[1]

    def blockers(self, raw: dict[str, Any], target: str, issues: Issues | None = None) -> list[tuple[str | None, str]]:
        """What refuses `raw` entering `target` under jit's enforced rules (docs/jit-format.md#graph-rules).

        `issues`: the store's issues, read only when a rule applies (its neighbourhood is needed)."""
        loaded = self.enforced()
        if isinstance(loaded, str):
            return [(None, loaded)]
        assert self._loaded is not None
        # jit validates the written issue before the transition (refused: no graph check, no event);
        # a claim or a promotion is no such write (docs/jit-format.md#local-rules)
        written = (
            local_rules.blockers(self._loaded[2], raw, target, self._content_format)
            if target in (State.DONE, State.GATED)
            else []
        )
        if written or not loaded:
            return [*written]
        every = issues or self._issues
        found = rules.blockers(
            loaded,
            raw,
            target,
            datetime.now(UTC),
            lambda issue: graph_rules.neighbourhood(every(), issue),
            self._content_format,
        )
        return list(found)

    def _with_schema(self, rule: rules.Rule) -> rules.Rule:
        """A json-schema rule with its schema read as jit's loader does (unreadable: jit loads no rule)."""
        path = self.path.parent / str(rule.config)
        self._schemas_seen[path] = _fingerprint(path)  # jit reads it afresh on every write: so do we
        try:
            text = read_regular(path).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise rules.RulesError(f"rule '{rule.name}': failed to read schema file '{path}': {exc}") from None
        try:
            return replace(rule, schema=json.loads(text))
        except ValueError as exc:
            raise rules.RulesError(f"rule '{rule.name}': schema file '{path}' is not JSON ({exc})") from None

    def _config(self) -> dict[str, Any]:
        """config.toml as far as the rules need it (its `[item_kinds]`, `[validation]`); {} unreadable."""
        try:
            return tomllib.loads(read_regular(self.config).decode("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return {}

    def _config_fingerprint(self) -> Fingerprint | None:
        return _fingerprint(self.config)

    def _content_format(self) -> str:
        """config.toml's `[validation] content_format`: the body format of issues that name none."""
        validation = self._config().get("validation")
        value = validation.get("content_format") if isinstance(validation, dict) else None
        return value if isinstance(value, str) else "markdown"

    def holds(self, snapshot: Snapshot) -> dict[str, str]:
        """Ready issues jit would refuse to claim, with the rule named."""
        holds = {}
        everything: dict[str, dict[str, Any]] | None = None

        def issues() -> Mapping[str, dict[str, Any]]:
            nonlocal everything
            if everything is None:
                everything = dict(self._issues())
            return everything

        for issue in [i for i in snapshot.issues if i.state == State.READY]:  # a lead is ready too
            full = snapshot.full(issue)
            if full is not None and (found := self.blockers(full.raw, State.IN_PROGRESS, issues)):
                name, text = found[0]
                holds[full.id] = f"rule '{name}' refuses in_progress: {text}" if name else text
        return holds


def _fingerprint(path: Path) -> Fingerprint | None:
    try:
        return fingerprint(os.stat(path))
    except OSError:
        return None
