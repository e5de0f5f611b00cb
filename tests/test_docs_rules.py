"""The rules every docs page follows (this docstring is their one statement):

* numbers: a measured result (a time, a size, a ratio or speed-up, a percentage, a score or score difference) lives in
  benchmarks/; a hand-written page outside it quotes one only rounded (about two significant digits) and on a line
  that links to benchmarks/RESULTS.md or a page of benchmarks/results/ (a competitor's number: to the
  competition-sources page or its external source; a default: to the generated reference);
* no hand-written page over 10,000 characters;
* a reference to another page is a link (the link test checks its file and heading), never plain text such as
  "`benchmarks/RESULTS.md`, section X";
* a claim about another team's place cites its source (docs/explanation/competition-sources.md or a URL) in the same
  paragraph, list item or table row.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from docs_pages import HAND_WRITTEN, PAGES, REPO, rel, without_code_blocks

MAX_CHARS = 10_000
# Pages whose purpose is to hold numbers with their provenance: the benchmark results and the competitors' numbers
# with their sources. Everywhere else a number is quoted rounded, with a link to one of them.
NUMBER_HOMES = ("benchmarks/", "docs/explanation/competition-sources.md")
# where a number may come from: a benchmark section, a competitor's source, or (a default) the generated reference
SOURCES = (
    "benchmarks/RESULTS.md",
    "benchmarks/results/",
    "docs/explanation/competition-sources.md",
    "docs/reference/config-keys.md",
    "docs/reference/cli.md",
)

_NUM = r"(?<![\w.,/^#-])(?P<num>[~≈]?\s?[+\-−±]?\s?\d[\d,]*(?:\.\d+)?)"
_NOT_AFTER = r"(?![\w])"
_COMPARED = r"(?:faster|slower|more|less|fewer|larger|smaller|cheaper|the|as|longer|shorter|lower|higher|speed)\b"
MEASURED = {
    "duration": re.compile(_NUM + r"\s?(?:ms|s|sec|seconds?|mins?|minutes?|h|hours?)" + _NOT_AFTER),
    "size": re.compile(_NUM + r"\s?(?:[kKMGTP]i?B|bytes?)" + _NOT_AFTER),
    # a ratio: with decimals or "~" (1.46×, ~20x) or read as a comparison (20× faster); not a factor of the design
    # (2x downsampling, 8× TTA) nor a shape (128×128, 2 × 2)
    "ratio": re.compile(_NUM + rf"(?:[x×](?![\w\d])(?P<cmp>\s+{_COMPARED})?|\s[x×](?P<spaced>\s+{_COMPARED}))"),
    "percent": re.compile(_NUM + r"\s?%(?!\s(?:confidence\s)?intervals?)"),
    # a score difference (+0.03, −0.000 ± 0.0094) or a score with three decimals or more (0.752)
    "score": re.compile(r"(?<![\w.,)\]-])(?P<num>(?:[+−±]\s?|-)0\.\d+|0\.\d{3,})(?![\d.]|\s?[×*])"),
    # a two-decimal score named as one (scored 0.59, private LB 0.62); not a weight (0.35 × VOI)
    "named score": re.compile(
        r"(?i:\bscores?d?\b|\bdice\b|\bLB\b|leaderboard|held-out|private|public)[^.;\d]{0,20}?"
        r"(?<![\w.])(?P<num>0\.\d{2})(?![\d.]|\s?[×*])"
    ),
}
BOUND = re.compile(r"[≤≥<>]\s?$")  # "≤ 1.15×", "(≤ 9 h)": a target or a limit, not a result
INLINE_CODE = re.compile(r"`[^`]*`")  # config values and log excerpts are literals, not measurements
LINK_TARGET = re.compile(r"\]\(([^)\s]+)\)")


def significant_digits(num: str) -> int:
    digits = re.sub(r"[^\d.]", "", num)
    whole, _, frac = digits.partition(".")
    if frac:
        kept = (whole + frac).lstrip("0")
        return len(kept) if kept else len(frac)  # 0.000 states three decimals
    return max(len(whole.strip("0")), 1)


def measured_numbers(line: str) -> list[tuple[str, str, bool]]:
    """(kind, number, rounded) of every measured result the line states."""
    text = LINK_TARGET.sub("]", INLINE_CODE.sub("", line))
    found: dict[int, tuple[str, str, bool]] = {}
    for kind, pattern in MEASURED.items():
        for m in pattern.finditer(text):
            if BOUND.search(text[: m.start("num")]) or m.start("num") in found:
                continue
            num = m.group("num").strip()
            if (
                kind == "ratio"
                and "." not in num
                and not num.startswith(("~", "≈"))
                and not (m.group("cmp") or m.group("spaced"))
            ):
                continue
            found[m.start("num")] = (kind, num, significant_digits(num) <= 2)
    return [found[k] for k in sorted(found)]


def cites_source(page: Path, line: str) -> bool:
    for target in LINK_TARGET.findall(line):
        if target.startswith(("http://", "https://")):
            return True
        path = target.partition("#")[0]
        dest = (page.parent / path).resolve() if path else page
        if dest.is_relative_to(REPO) and rel(dest).startswith(SOURCES):
            return True
    return False


def numbers_broken(page: Path) -> list[str]:
    broken = []
    for n, line in enumerate(without_code_blocks(page.read_text()).splitlines(), 1):
        found = measured_numbers(line)
        if not found:
            continue
        sourced = cites_source(page, line)
        for kind, num, rounded in found:
            if not sourced:
                broken.append(f"line {n}: {kind} {num!r} without a link to its benchmark section on the line")
            elif not rounded:
                broken.append(f"line {n}: {kind} {num!r} not rounded (about two significant digits)")
    return broken


NUMBER_PAGES = [p for p in HAND_WRITTEN if not rel(p).startswith(NUMBER_HOMES)]


@pytest.mark.parametrize("page", NUMBER_PAGES, ids=rel)
def test_numbers_are_rounded_and_linked_to_their_benchmark(page: Path) -> None:
    broken = numbers_broken(page)
    assert not broken, f"{rel(page)}: measured numbers belong in benchmarks/ (quote them rounded, linked):\n  " + (
        "\n  ".join(broken)
    )


@pytest.mark.parametrize(
    "line, expected",
    [
        ("the metric takes 25.7 s wall", [("duration", "25.7", False)]),
        ("about 20 s per case", [("duration", "20", True)]),
        ("~20x faster than the competition code", [("ratio", "~20", True)]),
        ("1.46× the copy", [("ratio", "1.46", False)]),
        ("20× faster", [("ratio", "20", True)]),
        ("+6.3 % time, 5.2 GB peak", [("percent", "+6.3", True), ("size", "5.2", True)]),
        ("idle 1,037 MB resident", [("size", "1,037", False)]),
        ("the tuned score 0.752", [("score", "0.752", False)]),
        ("private LB 0.62 after post-processing", [("named score", "0.62", True)]),
        (
            "a gain of +0.032 [−0.011, +0.087]",
            [("score", "+0.032", True), ("score", "−0.011", True), ("score", "+0.087", True)],
        ),
        ("mean difference −0.000 ± 0.0094", [("score", "−0.000", False), ("score", "± 0.0094", True)]),
        ("it cost 500 ms", [("duration", "500", True)]),
    ],
)
def test_measured_numbers_are_found(line: str, expected: list[tuple[str, str, bool]]) -> None:
    assert measured_numbers(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "a 320³ volume of 128×128×128 voxels, tiles of 2 × 2",
        "the decay (`ema_decay: 0.999`) and `--time-budget 30`",
        "a 95 % confidence interval over the seeds",
        "each level a 2x max-downsampling; 8× mirror TTA",
        "score = 0.30 × TopoScore + 0.35 × SurfaceDice + 0.35 × VOI",
        "targets: ≤ 1.15× per step, ≤ 15 % memory, the notebook runs ≤ 9 h",
        "the seed log's Update #2 set lr 1e-5 on nnU-Net 2.8.1 with focal α 0.25",
        "see [the section](../benchmarks/results/trainers.md#step-time-16-s-per-step)",
    ],
)
def test_design_values_and_shapes_are_not_measured_numbers(line: str) -> None:
    assert measured_numbers(line) == []


def test_a_number_needs_a_rounded_form_and_a_link() -> None:
    page = REPO / "docs/explanation/_probe.md"  # resolved against the repository, never written
    assert not cites_source(page, "it scores 0.75")
    assert cites_source(page, "about 0.03 ([postprocessing](../../benchmarks/results/postprocessing.md#ablation))")
    assert cites_source(page, "the 1st place ([sources](competition-sources.md#first-place))")
    assert not cites_source(page, "see [the glossary](../glossary.md#voi)")
    assert significant_digits("0.03") == 1 and significant_digits("1,037") == 4 and significant_digits("900") == 1


SIZED = [p for p in HAND_WRITTEN if rel(p).startswith(("docs/", "benchmarks/results/"))]  # generated ones excluded


@pytest.mark.parametrize("page", SIZED, ids=rel)
def test_page_is_short_enough_to_read(page: Path) -> None:
    size = len(page.read_text())
    assert size <= MAX_CHARS, f"{rel(page)} has {size:,} characters (limit {MAX_CHARS:,}): split it by topic"


WHOLE_LINK = re.compile(r"\[[^\]]*\]\([^)]*\)")
MD_PATH = re.compile(r"(?<![\w/.-])((?:\.\.?/)*[\w./-]*\w\.md)(?:#[\w-]+)?\b")
RESULTS_SECTION = re.compile(r"RESULTS(?:\.md)?`?,?\s*(?:section\s*)?[\"“'‘]|§")
QUOTED_SECTION = re.compile(r"\bsection\s+[\"“'‘][^\"”'’]+[\"”'’]", flags=re.IGNORECASE)
OUTPUT_FILE = re.compile(r"`[\w.-]+\.(?:md|txt|json|csv)`")  # a section of a file a command writes, not of a page


def plain_references(page: Path) -> list[str]:
    """References to another page written as text, not as a link."""
    text = without_code_blocks(page.read_text())
    text = WHOLE_LINK.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        if RESULTS_SECTION.search(line) or (QUOTED_SECTION.search(line) and not OUTPUT_FILE.search(line)):
            found.append(f"line {n}: a section named in text ({line.strip()[:80]!r}): link to its heading")
        for path in MD_PATH.findall(line):
            for base in (page.parent, REPO):
                if (base / path).is_file():
                    found.append(f"line {n}: {path!r} named in text: make it a link")
                    break
    return found


@pytest.mark.parametrize("page", HAND_WRITTEN, ids=rel)
def test_references_to_other_pages_are_links(page: Path) -> None:
    found = plain_references(page)
    assert not found, f"{rel(page)}:\n  " + "\n  ".join(found)


def test_plain_references_are_found(tmp_path: Path) -> None:
    page = tmp_path / "docs/page.md"
    page.parent.mkdir()
    page.write_text(
        'Full tables: `benchmarks/RESULTS.md`, "LR schedule: replay on simulated logs".\n'
        "see RESULTS 'Loss and step hygiene'\n"
        "and [a real link](../benchmarks/RESULTS.md#x) is fine, so is the file name config.yaml.\n"
    )
    found = plain_references(page)
    assert sorted({f.split(":")[0] for f in found}) == ["line 1", "line 2"], found


def test_every_page_is_checked() -> None:
    assert {REPO / "README.md", REPO / "docs/glossary.md"} <= set(HAND_WRITTEN) <= set(PAGES)


PLACE = re.compile(r"\b\d+(?:st|nd|rd|th)(?:[–-]\d+(?:st|nd|rd|th))? places?\b")
SOURCES_PAGE = "docs/explanation/competition-sources.md"
BLOCK_START = re.compile(r"\s*(?:[-*] |\d+\. |\|)")


def blocks(text: str) -> list[tuple[int, str]]:
    """(first line, text) of every paragraph, list item and table row."""
    found: list[tuple[int, list[str]]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            found.append((n + 1, []))
        elif not found or BLOCK_START.match(line) or line.lstrip().startswith("#"):
            found.append((n, [line]))
        else:
            found[-1][1].append(line)
    return [(n, "\n".join(lines)) for n, lines in found if lines]


def unsourced_places(page: Path) -> list[str]:
    """Claims about a competitor's place in a paragraph, list item or table row that cites no source."""
    missing = []
    for n, block in blocks(without_code_blocks(page.read_text())):
        if not PLACE.search(block):
            continue
        targets = LINK_TARGET.findall(block)
        if not any(t.startswith(("http://", "https://")) or SOURCES_PAGE.rsplit("/", 1)[1] in t for t in targets):
            missing.append(f"line {n}: {PLACE.search(block).group(0)!r} without a link to its source")
    return missing


@pytest.mark.parametrize("page", [p for p in HAND_WRITTEN if rel(p) != SOURCES_PAGE], ids=rel)
def test_claims_about_competitors_cite_their_source(page: Path) -> None:
    missing = unsourced_places(page)
    assert not missing, (
        f"{rel(page)}: a claim about another team links to its section of {SOURCES_PAGE} (or its source):\n  "
        + "\n  ".join(missing)
    )


def test_unsourced_places_are_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "The 1st place removed dust\nin two steps.\n\n"
        "- the 7th place compared optimizers\n  ([source](competition-sources.md#seventh-place))\n"
        "- the 9th places' note\n\n| the 2nd place | ~60 s |\n"
    )
    assert [m.split(":")[0] for m in unsourced_places(page)] == ["line 1", "line 6", "line 8"]
