"""Cross-validation splits for the Vesuvius data in nnU-Net's ``splits_final.json`` format.

``stratified``: every fold holds each scroll's cases in proportion (per scroll and fold within one case of
n_scroll / folds; fold sizes within one case of each other). ``by-scroll``: whole scrolls go to folds, largest
scroll first into the fold with the fewest cases, to estimate generalisation to unseen scrolls.
Both are deterministic for a seed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.io import atomic_write_text

SPLIT_MODES = ("stratified", "by-scroll", "none")
DEFAULT_SEED = 12345  # nnU-Net's own split seed


class SplitError(TopoError, ValueError):
    """A split that cannot be made (too few cases or scrolls for the folds); the message says what to change."""


def _by_scroll(scroll_of: Mapping[str, str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for case, scroll in scroll_of.items():
        groups.setdefault(scroll, []).append(case)
    return {s: sorted(groups[s]) for s in sorted(groups)}


def stratified_folds(scroll_of: Mapping[str, str], folds: int = 5, seed: int = DEFAULT_SEED) -> list[list[str]]:
    """Validation cases per fold, stratified by scroll: one global round-robin over the cases grouped by scroll."""
    if folds < 2:
        raise SplitError(f"--folds must be >= 2, got {folds}")
    if len(scroll_of) < folds:
        raise SplitError(
            f"{len(scroll_of)} training cases cannot fill {folds} folds; use --folds {len(scroll_of)} or less"
        )
    rng = np.random.default_rng(seed)
    out: list[list[str]] = [[] for _ in range(folds)]
    i = 0
    for cases in _by_scroll(scroll_of).values():
        for j in rng.permutation(len(cases)):
            out[i % folds].append(cases[j])
            i += 1
    return [sorted(f) for f in out]


def by_scroll_folds(scroll_of: Mapping[str, str], folds: int = 5) -> list[list[str]]:
    """Validation cases per fold with whole scrolls per fold, balanced greedily by case count."""
    if folds < 2:
        raise SplitError(f"--folds must be >= 2, got {folds}")
    groups = _by_scroll(scroll_of)
    if len(groups) < folds:
        raise SplitError(
            f"--split by-scroll needs at least as many scrolls as folds, but the data has {len(groups)} scroll(s) "
            f"for {folds} folds; use --folds {len(groups)} (if >= 2) or --split stratified"
        )
    out: list[list[str]] = [[] for _ in range(folds)]
    for _, cases in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        smallest = min(range(folds), key=lambda f: (len(out[f]), f))
        out[smallest].extend(cases)
    return [sorted(f) for f in out]


def make_splits(
    scroll_of: Mapping[str, str], mode: str = "stratified", folds: int = 5, seed: int = DEFAULT_SEED
) -> list[dict[str, list[str]]]:
    """nnU-Net's split list ``[{"train": [...], "val": [...]}, ...]`` for ``mode`` (``stratified`` or ``by-scroll``)."""
    if mode == "stratified":
        val = stratified_folds(scroll_of, folds, seed)
    elif mode == "by-scroll":
        val = by_scroll_folds(scroll_of, folds)
    else:
        raise SplitError(f"unknown split mode {mode!r}; choose one of: stratified, by-scroll")
    cases = sorted(scroll_of)
    splits = []
    for v in val:
        held_out = set(v)
        splits.append({"train": [c for c in cases if c not in held_out], "val": v})
    return splits


def describe_splits(splits: Sequence[Mapping[str, Sequence[str]]], scroll_of: Mapping[str, str]) -> str:
    """One line per fold: validation size and its cases per scroll."""
    lines = []
    for k, s in enumerate(splits):
        per: dict[str, int] = {}
        for c in s["val"]:
            per[scroll_of[c]] = per.get(scroll_of[c], 0) + 1
        scrolls = ", ".join(f"{sc}: {n}" for sc, n in sorted(per.items()))
        lines.append(f"  fold {k}: {len(s['train'])} train / {len(s['val'])} val ({scrolls})")
    return "\n".join(lines)


def save_splits(path: str | os.PathLike, splits: Sequence[Mapping[str, Sequence[str]]]) -> None:
    """Write ``splits_final.json`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps([{"train": list(s["train"]), "val": list(s["val"])} for s in splits], indent=1))
