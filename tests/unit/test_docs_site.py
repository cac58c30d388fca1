"""The docs site: its reference pages are what tools/gen_docs.py generates from action.yml, the
click commands and the permissions table (regenerate with `make docs-gen`), and its navigation
lists every page (the strict build, `make docs`, fails on the rest)."""

from __future__ import annotations

import subprocess
import sys

import yaml

from helpers import PROJECT_ROOT


def test_the_generated_pages_match_their_sources() -> None:
    run = subprocess.run([sys.executable, "tools/gen_docs.py", "--check"], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr


def test_the_navigation_lists_every_page() -> None:
    config = yaml.safe_load((PROJECT_ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(nav: object) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        if isinstance(nav, list):
            return [p for item in nav for p in pages(item)]
        if isinstance(nav, dict):
            return [p for value in nav.values() for p in pages(value)]
        return []

    listed = set(pages(config["nav"]))
    present = {p.relative_to(PROJECT_ROOT / "docs").as_posix() for p in (PROJECT_ROOT / "docs").rglob("*.md")}
    assert present - listed == set(), "add them to mkdocs.yml's nav"
    assert listed - present == set()
