"""The design lives in docs/: every citation of it resolves, and nothing cites a document outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import PROJECT_ROOT

CITATION = re.compile(r"(?<![\w/.])docs/([a-z0-9-]+\.md)(?:#([a-z0-9-]+))?")
OUTSIDE = re.compile(
    r"\.\./shared|design\.md|actions-notes\.md|design §|jit-format §|\bjit §|(?<!/)\b\w+\.rs\b(?!\]|#L)"
)


def anchors(doc: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    found = set()
    for line in doc.read_text(encoding="utf-8").splitlines():
        if match := re.match(r"#{1,6} (.+)", line):
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            found.add(slug)
    return found


def sources() -> list[Path]:
    roots = [PROJECT_ROOT / "src", PROJECT_ROOT / "docs", PROJECT_ROOT / "bench"]
    files = [p for root in roots for p in root.rglob("*") if p.suffix in (".py", ".md")]
    return [*files, PROJECT_ROOT / "README.md", PROJECT_ROOT / "CONTRIBUTING.md", PROJECT_ROOT / "action.yml"]


def test_every_citation_of_docs_resolves() -> None:
    missing = []
    for path in sources():
        for doc, anchor in CITATION.findall(path.read_text(encoding="utf-8")):
            target = PROJECT_ROOT / "docs" / doc
            if not target.is_file() or (anchor and anchor not in anchors(target)):
                missing.append(f"{path.relative_to(PROJECT_ROOT)}: docs/{doc}#{anchor}")
    assert missing == []


def test_nothing_cites_a_document_outside_the_repository() -> None:
    found = [
        f"{path.relative_to(PROJECT_ROOT)}:{n}: {line.strip()}"
        for path in sources()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert found == []


def test_the_anchor_rule_is_githubs() -> None:
    doc = PROJECT_ROOT / "docs" / "jit-format.md"
    assert {"atomic-writes", "issue-files", "locks"} <= anchors(doc)
