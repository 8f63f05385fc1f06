"""The documentation's pages hold together: every fenced block says what it holds (so
no command hides from :mod:`tests.docs.test_commands` in an untagged block), and every
relative link of a Markdown file of the repository names a file of it and, with
``#anchor``, a heading of that file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.commands import ROOT, doc_files, fences

PAGES = doc_files()
# every other Markdown file of the repository (READMEs of compose/, deploy/, examples/…)
OTHERS = sorted(
    p
    for p in ROOT.rglob("*.md")
    if p not in PAGES and not any(part.startswith(".") for part in p.relative_to(ROOT).parts)
)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_CODE = re.compile(r"`[^`]*`")


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (outside fenced blocks)."""
    found: set[str] = set()
    inside = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            inside = not inside
        elif not inside and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def prose(path: Path) -> str:
    """The text of ``path`` outside fenced blocks and code spans."""
    lines, inside = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            inside = not inside
        elif not inside:
            lines.append(_CODE.sub("", line))
    return "\n".join(lines)


def test_the_readme_links_every_docs_page() -> None:
    readme = prose(ROOT / "README.md")
    pages = [p.relative_to(ROOT).as_posix() for p in PAGES[1:]]
    assert [p for p in pages if f"]({p}" not in readme] == []


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_fenced_block_has_a_language(page: Path) -> None:
    untagged = [f.line for f in fences(page) if not f.language]
    assert untagged == [], "tag them: sh/console for commands, text (or yaml…) otherwise"


@pytest.mark.parametrize(
    "page", PAGES + OTHERS, ids=[str(p.relative_to(ROOT)) for p in PAGES + OTHERS]
)
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in _LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or not dest.is_relative_to(ROOT):
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert broken == []
