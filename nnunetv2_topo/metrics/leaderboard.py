"""The leaderboard score of one volume: ``0.30·TopoScore + 0.35·SurfaceDice@2 + 0.35·VOI_score``, clipped to [0, 1].

Shared preprocessing: voxels where the ground truth is 2 (unlabeled) become background in both volumes; then
foreground is ``x != 0`` (NaN counts as 0).
"""

from __future__ import annotations

import concurrent.futures as cf
from dataclasses import dataclass

import numpy as np

from nnunetv2_topo import IGNORE_LABEL
from nnunetv2_topo.metrics.engine import auto_workers, shared_pool
from nnunetv2_topo.metrics.surface_dice import surface_dice
from nnunetv2_topo.metrics.topo_score import (
    shortcut_counts,
    submit_topo_counts,
    tile_slices,
    topo_score_from_counts,
)
from nnunetv2_topo.metrics.voi import voi, voi_score

WEIGHTS = {"topo": 0.30, "surface_dice": 0.35, "voi_score": 0.35}
SURFACE_TOLERANCE = 2.0


class MetricInputError(ValueError):
    """Prediction and ground truth cannot be compared (not 3-D, or different shapes)."""


def _foreground(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    fg = x != 0
    if np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.complexfloating):
        fg &= ~np.isnan(x)
    return fg


def binarize_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Foreground masks of prediction and ground truth after removing the ignore region (GT == 2)."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.ndim != 3 or gt.ndim != 3:
        raise MetricInputError(
            f"prediction and ground truth must be 3-D volumes, got shapes {pred.shape} and {gt.shape}"
        )
    if pred.shape != gt.shape:
        raise MetricInputError(f"shape mismatch: prediction {pred.shape} vs ground truth {gt.shape}")
    keep = gt != IGNORE_LABEL
    return np.ascontiguousarray(_foreground(pred) & keep), np.ascontiguousarray(_foreground(gt) & keep)


def combine_score(topo: float, surface_dice: float, voi_score: float) -> float:
    """The weighted sum of the three components, clipped to [0, 1] (stand-in until issue 13's version)."""
    score = WEIGHTS["topo"] * topo + WEIGHTS["surface_dice"] * surface_dice + WEIGHTS["voi_score"] * voi_score
    return float(min(1.0, max(0.0, score)))


@dataclass
class PendingScore:
    """A score whose engine tiles may still be running; :meth:`result` waits for them."""

    tiles: list[cf.Future]
    surface_dice: float
    voi_split: float
    voi_merge: float

    def result(self) -> dict:
        counts = np.sum([f.result() for f in self.tiles], axis=0).astype(np.int64)
        topo = topo_score_from_counts(counts)
        voi_s = voi_score(self.voi_split, self.voi_merge)
        score = WEIGHTS["topo"] * topo + WEIGHTS["surface_dice"] * self.surface_dice + WEIGHTS["voi_score"] * voi_s
        return {
            "score": float(min(1.0, max(0.0, score))),
            "topo": float(topo),
            "surface_dice": float(self.surface_dice),
            "voi_score": float(voi_s),
            "voi_split": float(self.voi_split),
            "voi_merge": float(self.voi_merge),
            "counts": {str(k): [int(v) for v in counts[k]] for k in range(3)},
        }


def start_score(pred: np.ndarray, gt: np.ndarray, executor: cf.Executor | None = None) -> PendingScore:
    """Submit the engine tiles to ``executor`` (or run them here if ``None``), then compute SurfaceDice and VOI
    while they run."""
    pred_fg, gt_fg = binarize_pair(pred, gt)
    tiles = submit_topo_counts(pred_fg, gt_fg, executor)
    sd = surface_dice(pred_fg, gt_fg, SURFACE_TOLERANCE)
    split, merge = voi(pred_fg, gt_fg)
    return PendingScore(tiles, sd, split, merge)


def engine_tiles_needed(pred_fg: np.ndarray, gt_fg: np.ndarray) -> int:
    """How many of the 8 tiles need the engine (no shortcut applies)."""
    return sum(shortcut_counts(pred_fg[s], gt_fg[s]) is None for s in tile_slices(pred_fg.shape))


def leaderboard_score(pred: np.ndarray, gt: np.ndarray, workers: int | None = None) -> dict:
    """Score one volume exactly like the competition.

    Returns ``score`` (clipped to [0, 1]), ``topo``, ``surface_dice``, ``voi_score``, ``voi_split``,
    ``voi_merge`` and ``counts`` (``{"0": [m, p, g], "1": …, "2": …}`` summed over the 8 tiles).

    ``workers``: processes for the Betti-matching tiles. ``None`` = as many as cores, tiles and free memory allow
    (a 160³ tile needs ~4.6 GB in the engine); ``0`` = serially in this process.
    """
    executor = None
    if workers is None or workers > 0:
        pred_fg, gt_fg = binarize_pair(pred, gt)
        needed = engine_tiles_needed(pred_fg, gt_fg)
        if needed:
            tile_voxels = int(np.prod([s.stop - s.start for s in tile_slices(pred_fg.shape)[0]]))
            n = auto_workers(needed, tile_voxels) if workers is None else workers
            executor = shared_pool(n)
        return start_score(pred_fg, gt_fg, executor).result()
    return start_score(pred, gt, None).result()
