"""The package version, the examples' `@vN`, the CHANGELOG and the release workflow agree."""

from __future__ import annotations

import re

from helpers import PROJECT_ROOT
from jit_dispatch import __version__

MAJOR = f"v{__version__.split('.')[0]}"


def test_examples_and_docs_pin_the_packages_major_tag() -> None:
    files = [*(PROJECT_ROOT / "examples").rglob("*.yml"), *(PROJECT_ROOT / "docs").rglob("*.md"),
             PROJECT_ROOT / "README.md"]  # fmt: skip
    pins = {pin for path in files for pin in re.findall(r"jit-dispatch@(v\d+)\b", path.read_text(encoding="utf-8"))}
    assert pins == {MAJOR}


def test_the_changelog_names_the_version() -> None:
    changelog = (PROJECT_ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    unreleased = changelog.split("## [Unreleased]", 1)[1].split("\n## [", 1)[0]
    assert f"## [{__version__}]" in changelog or f"**{__version__}**" in unreleased


def test_the_release_workflow_checks_the_examples_major() -> None:
    workflow = (PROJECT_ROOT / ".github" / "workflows" / "release.yml").read_text(encoding="utf-8")
    assert "Check that the examples use this major tag" in workflow


def test_no_package_index_address_in_the_makefile() -> None:
    assert not re.search(r"--index-url|https?://\S*(pypi|simple)", (PROJECT_ROOT / "Makefile").read_text())
