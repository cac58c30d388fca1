"""Which `permissions:` a workflow job needs for the Action's inputs: one table, read by the example
check, `doctor` and the docs (docs/permissions.md is generated from it). Pure.

GitHub's levels are ordered none < read < write; a job's own `permissions:` replaces the
workflow's; `read-all` / `write-all` set every scope.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

LEVELS = ("none", "read", "write")


@dataclass(frozen=True)
class Rule:
    """When the inputs match `when` (input → value; `*` any value), the job needs `needs`."""

    when: Mapping[str, str]
    needs: Mapping[str, str]
    why: str


# Inputs absent from `with:` take action.yml's defaults (DEFAULTS). Each row adds to the others.
RULES: tuple[Rule, ...] = (
    Rule({}, {"contents": "read"}, "actions/checkout reads the repository"),
    Rule(
        {"tracker": "jit", "sync": "git"},
        {"contents": "write"},
        "the claim lock refs and the state commits are pushed to the state branch",
    ),
    Rule({"tracker": "github"}, {"issues": "write"}, "labels, assignees and comments on the issues"),
    Rule(
        {"tracker": "github", "github-lock": "refs"},
        {"contents": "write"},
        "the claim is a git ref GitHub arbitrates (refs/jit-dispatch/claims/gh-N)",
    ),
)
# action.yml's defaults for the inputs the rules read (a test keeps them equal).
DEFAULTS: Mapping[str, str] = {"tracker": "jit", "sync": "git", "github-lock": "refs", "dry-run": "false"}


def required(inputs: Mapping[str, str]) -> dict[str, str]:
    """The scopes (and levels) a job running the Action with these `with:` inputs needs.

    A dry run writes nothing, so it needs no write scope; an input given as an expression
    (`${{ inputs.dry-run }}`) is taken at its most demanding value.
    """
    values = {**DEFAULTS, **{key: str(value).strip() for key, value in inputs.items()}}
    dry_run = values["dry-run"].lower() == "true"
    needs: dict[str, str] = {}
    for rule in RULES:
        if all(_matches(values.get(key, ""), want) for key, want in rule.when.items()):
            for scope, level in rule.needs.items():
                level = "read" if dry_run and level == "write" else level
                needs[scope] = max(needs.get(scope, "none"), level, key=LEVELS.index)
    return needs


def _matches(value: str, want: str) -> bool:
    return want == "*" or value == want or value.startswith("${{")


def granted(permissions: object) -> dict[str, str] | None:
    """A `permissions:` value as scope → level; None when it grants every scope (`write-all`)."""
    if permissions == "write-all":
        return None
    if permissions == "read-all":
        return {scope: "read" for scope in ("contents", "issues", "actions", "pull-requests")}
    if isinstance(permissions, Mapping):
        return {str(scope): str(level) for scope, level in permissions.items()}
    return {}


def missing(needs: Mapping[str, str], permissions: object) -> list[str]:
    """`scope: level` lines the job's permissions lack (empty: enough)."""
    have = granted(permissions)
    if have is None:
        return []
    return [
        f"{scope}: {level}"
        for scope, level in needs.items()
        if LEVELS.index(have.get(scope, "none")) < LEVELS.index(level)
    ]


def table_markdown() -> str:
    """The rules as the Markdown table docs/permissions.md shows."""
    rows = ["| When the inputs are | The job needs | Why |", "|---|---|---|"]
    for rule in RULES:
        when = ", ".join(f"`{key}: {value}`" for key, value in rule.when.items()) or "always"
        needs = ", ".join(f"`{scope}: {level}`" for scope, level in rule.needs.items())
        rows.append(f"| {when} | {needs} | {rule.why} |")
    rows.append("| `dry-run: true` | every `write` above as `read` | a dry run changes nothing |")
    return "\n".join(rows) + "\n"
