"""Metrics for the scoring-process tests, importable without torch (the worker imports this module to unpickle
them): one that never finishes on the case named ``"hang"``, and quick ones whose score encodes the case."""

from __future__ import annotations

import time

CASES = ["case_a", "case_b", "case_c"]


def case_score(gt_file: str) -> dict[str, float]:
    score = 0.1 * (1 + CASES.index(gt_file)) if gt_file in CASES else 0.5
    return {"score": score, "topo": score, "surface_dice": score, "voi_score": score, "seconds": 0.0}


def hang_on_hang(segmentation, gt_file: str, reader_class) -> dict[str, float]:
    """Never returns for ``gt_file == "hang"`` (a wedged Betti matching); scores every other case at once."""
    while gt_file == "hang":
        time.sleep(3600)
    return case_score(gt_file)


def sleep_then_score(segmentation, gt_file: str, reader_class, seconds: float = 7.5) -> dict[str, float]:
    """Slower than the process group's timeout of the DDP test on :data:`CASES`, never finishing on ``"hang"``,
    at once on any other case."""
    if gt_file in CASES:
        time.sleep(seconds)
    return {**hang_on_hang(segmentation, gt_file, reader_class), "seconds": seconds}
