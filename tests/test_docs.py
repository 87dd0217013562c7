"""README and docs/ link only inside the repository, and docs/methods.md names real functions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE_LINK = re.compile(r"\[([^\]]+)\]\((\.\./[^)#\s]+\.py)\)")


def _links(page: Path) -> list[str]:
    return [target for target in LINK.findall(page.read_text()) if "://" not in target]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve_inside_the_repository(page):
    for target in _links(page):
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT), f"{page.name}: {target} leaves the repository"
        assert path.exists(), f"{page.name}: {target} does not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_reference_to_documents_outside_the_repository(page):
    text = page.read_text()
    assert "shared/" not in text and "DESIGN" not in text


def test_methods_links_name_functions_of_the_linked_file():
    page = ROOT / "docs" / "methods.md"
    found = CODE_LINK.findall(page.read_text())
    assert len(found) > 20
    for names, target in found:
        source = (page.parent / target).read_text()
        for name in re.findall(r"`([\w.]+)`", names):
            last = name.split(".")[-1]
            assert re.search(rf"^\s*(def|class) {last}\b", source, re.M), f"{name} in {target}"
