"""No relative link in README.md or docs/ is broken: its file exists, and its anchor (when it
has one and points into a markdown page) names a heading of that page.

Anchors are compared with the slug GitHub and MkDocs both give a heading (lower case, spaces
to ``-``, punctuation dropped). ``mkdocs build --strict`` (tests/unit/test_docs_build.py)
checks the site's links again with MkDocs' own rules; this test also covers README.md, which
is not part of the site, and runs without MkDocs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`[^`\n]*`")
_HEADING = re.compile(r"^#{1,6} (.+?)\s*#*$", re.MULTILINE)
_EXTERNAL = ("http://", "https://", "mailto:")


def prose(text: str) -> str:
    """The text without code blocks and code spans (their brackets are not links)."""
    return _CODE.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(heading) for heading in _HEADING.findall(_FENCE.sub("", page.read_text()))}


def links(page: Path) -> list[str]:
    return [
        target
        for target in _LINK.findall(prose(page.read_text(encoding="utf-8")))
        if not target.startswith(_EXTERNAL)
    ]


def broken(page: Path) -> list[str]:
    found = []
    for target in links(page):
        path_text, _, anchor = target.partition("#")
        resolved = (page.parent / path_text).resolve() if path_text else page
        if not resolved.exists():
            found.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            found.append(f"{target}: no heading '#{anchor}' in {resolved.name}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    assert broken(page) == []


def test_the_checker_sees_a_broken_link_and_a_broken_anchor(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A page\n\n## Some `code` heading\n")
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md) [ok](a.md#some-code-heading) [gone](nothere.md) [bad](a.md#nope)\n"
        "`[not a link](x.md)` [web](https://example.com)\n"
    )
    assert broken(page) == ["nothere.md: no such file", "a.md#nope: no heading '#nope' in a.md"]


def test_readme_points_to_the_docs_and_the_examples() -> None:
    targets = links(ROOT / "README.md")
    assert "docs/index.md" in targets and "examples/README.md" in targets
