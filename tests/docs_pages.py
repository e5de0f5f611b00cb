"""The Markdown pages of the manual and the benchmark results, and how GitHub names their headings (not a test
module; used by test_docs_links.py and test_docs_rules.py)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [REPO / "README.md", REPO / "benchmarks/RESULTS.md"]
    + list((REPO / "docs").rglob("*.md"))
    + list((REPO / "benchmarks/results").glob("*.md"))
)
GENERATED = {REPO / "docs/reference/cli.md", REPO / "docs/reference/config-keys.md"}  # nnunetv2_topo reference_docs
HAND_WRITTEN = [p for p in PAGES if p not in GENERATED]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", flags=re.DOTALL | re.MULTILINE)


def rel(page: Path) -> str:
    return page.relative_to(REPO).as_posix()


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading (a link in the heading counts with its text only)."""
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"#{1,6} (.*)", line)):
            base = slug(m.group(1))
            name, n = base, 0
            while name in found:
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def without_code_blocks(text: str) -> str:
    """The page with its fenced code blocks blanked (line numbers kept)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
