"""Every workflow that runs the Action (the examples and our own CI) grants each job what its
inputs need, per the one table in jit_dispatch.domain.permissions; the table's defaults are
action.yml's, and docs/permissions.md shows the table as it is."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import PROJECT_ROOT
from jit_dispatch.domain import permissions

WORKFLOWS = sorted([*(PROJECT_ROOT / "examples" / "workflows").glob("*.yml"),
                    *(PROJECT_ROOT / ".github" / "workflows").glob("*.yml")])  # fmt: skip


def is_jit_dispatch(step: dict) -> bool:
    uses = str(step.get("uses", ""))
    return uses == "./" or uses.split("@")[0].endswith("/jit-dispatch")


def shortfalls(workflow: dict) -> list[str]:
    found = []
    for name, job in workflow["jobs"].items():
        steps = [s for s in job.get("steps", []) if is_jit_dispatch(s)]
        granted = job.get("permissions", workflow.get("permissions"))
        for step in steps:
            if granted is None:
                found.append(f"job {name}: no permissions: declared (the repository default is a guess)")
                continue
            needs = permissions.required(step.get("with") or {})
            if lacking := permissions.missing(needs, granted):
                found.append(f"job {name}: lacks {', '.join(lacking)}")
    return found


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_each_job_has_the_permissions_its_inputs_need(path: Path) -> None:
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert shortfalls(workflow) == []


def test_the_examples_do_run_the_action() -> None:
    examples = [p for p in WORKFLOWS if p.parent.name == "workflows" and p.parent.parent.name == "examples"]
    for path in examples:
        jobs = yaml.safe_load(path.read_text(encoding="utf-8"))["jobs"].values()
        assert any(is_jit_dispatch(s) for job in jobs for s in job.get("steps", [])), path.name


@pytest.mark.parametrize(
    ("inputs", "granted", "lacking"),
    [
        ({}, {"contents": "read"}, ["contents: write"]),  # sync git by default
        ({"sync": "none"}, {"contents": "read"}, []),
        ({"dry-run": "true"}, {"contents": "read"}, []),
        ({"dry-run": "${{ inputs.dry-run }}"}, {"contents": "read"}, ["contents: write"]),
        ({"tracker": "github"}, {"contents": "read", "issues": "write"}, ["contents: write"]),
        ({"tracker": "github", "github-lock": "comments"}, {"contents": "read", "issues": "read"}, ["issues: write"]),
        ({"tracker": "github"}, "write-all", []),
        ({"tracker": "github"}, "read-all", ["contents: write", "issues: write"]),
        ({}, {}, ["contents: write"]),
    ],
)
def test_the_table(inputs: dict, granted: object, lacking: list[str]) -> None:
    assert permissions.missing(permissions.required(inputs), granted) == lacking


def test_the_tables_defaults_are_action_ymls() -> None:
    inputs = yaml.safe_load((PROJECT_ROOT / "action.yml").read_text(encoding="utf-8"))["inputs"]
    assert {key: inputs[key]["default"] for key in permissions.DEFAULTS} == dict(permissions.DEFAULTS)


def test_docs_show_the_table() -> None:
    page = (PROJECT_ROOT / "docs" / "permissions.md").read_text(encoding="utf-8")
    assert permissions.table_markdown() in page, "regenerate: make docs-gen"
