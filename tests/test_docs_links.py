"""Every relative link of the README, docs/ and the benchmark results points at a file (and heading) that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from docs_pages import LINK, PAGES, REPO, anchors, slug

NOT_IN_GIT = ("benchmarks/out/",)  # benchmark outputs, ignored by git


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return [t for t in LINK.findall(text) if not t.startswith(("http://", "https://", "mailto:"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        rel = dest.relative_to(REPO).as_posix() if dest.is_relative_to(REPO) else str(dest)
        if rel.startswith(NOT_IN_GIT):
            continue
        if not dest.exists():
            broken.append(f"{target}: no such file {rel}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {rel}")
    assert not broken, f"{page.relative_to(REPO)}: broken links:\n  " + "\n  ".join(broken)


def test_slug_matches_github() -> None:
    assert slug("Resuming (`--c`) cannot drift") == "resuming---c-cannot-drift"
    assert slug("Predict: score of single vs fused vs fused + rot90 TTA") == (
        "predict-score-of-single-vs-fused-vs-fused--rot90-tta"
    )


def test_readme_stays_short() -> None:
    size = len((REPO / "README.md").read_text())
    assert size <= 15_000, f"README.md has {size} characters (limit 15,000): move detail into docs/"
