"""README.md and docs/: a front door under 300 lines with a table of contents, links that
resolve, Python examples that compile, and test paths that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    assert "## Contents" in text
    for command in ("make demo", "make test"):
        assert command in text


def _anchors(text: str) -> set[str]:
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: broken link {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest.read_text(encoding="utf-8")), f"{page.name}: no anchor {target}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_examples_compile(page):
    for block in re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
        compile(block, str(page), "exec")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_named_test_files_exist(page):
    for path in re.findall(r"tests/[\w/]+\.py", page.read_text(encoding="utf-8")):
        assert (ROOT / path).is_file(), f"{page.name} names {path}, which does not exist"
