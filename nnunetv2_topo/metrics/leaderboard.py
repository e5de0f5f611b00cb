"""The leaderboard score of one volume: ``0.30·TopoScore + 0.35·SurfaceDice@2 + 0.35·VOI_score``, clipped to [0, 1].

Shared preprocessing: voxels where the ground truth is 2 (unlabeled) become background in both volumes; then
foreground is ``x != 0`` (NaN counts as 0).
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nnunetv2_topo import IGNORE_LABEL
from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.metrics.engine import auto_workers, shared_pool
from nnunetv2_topo.metrics.rule_threads import auto_threads, shared_threads
from nnunetv2_topo.metrics.score_fields import WEIGHTS, combine_score, score_result  # noqa: F401 (re-exported)
from nnunetv2_topo.metrics.surface_dice import surface_dice
from nnunetv2_topo.metrics.topo_score import (
    TILES_PER_VOLUME,
    TileJob,
    check_engine,
    collect_tile_counts,
    largest_tile_voxels,
    needs_matching,
    submit_topo_counts,
    tile_slices,
    topo_score_from_counts,
)
from nnunetv2_topo.metrics.voi import voi, voi_score

SURFACE_TOLERANCE = 2.0


class MetricInputError(TopoError, ValueError):
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


@dataclass
class PendingScore:
    """A score whose tiles may still be running; :meth:`result` waits for them (and hands tiles the rules gave
    back to the engine, in ``engine_executor()`` or here; :attr:`fallback_tiles` then says how many)."""

    tiles: list[TileJob]
    surface_dice: float
    voi_split: float
    voi_merge: float
    engine_executor: Callable[[], cf.Executor | None] | None = None
    fallback_tiles: int | None = None
    masks: tuple[np.ndarray, np.ndarray] | None = None  # (pred_fg, gt_fg) when start_score(keep_masks=True)

    def tile_counts(self) -> list[np.ndarray]:
        """Each tile's ``(3, 3)`` counts in :func:`tile_slices` order (after :meth:`result`)."""
        out = []
        for job in self.tiles:
            if job.counts is None:
                raise RuntimeError("tile_counts() needs result() first")
            out.append(job.counts)
        return out

    def result(self) -> dict:
        counts, self.fallback_tiles = collect_tile_counts(self.tiles, self.engine_executor)
        topo = topo_score_from_counts(counts)
        voi_s = voi_score(self.voi_split, self.voi_merge)
        return score_result(topo, self.surface_dice, self.voi_split, self.voi_merge, voi_s, counts)


def start_score(
    pred: np.ndarray,
    gt: np.ndarray,
    executor: cf.Executor | None = None,
    engine: str = "auto",
    rules_executor: cf.Executor | None = None,
    engine_executor: Callable[[], cf.Executor | None] | None = None,
    keep_masks: bool = False,
) -> PendingScore:
    """Start the tiles, then compute SurfaceDice and VOI while they run.

    Rules tiles run in ``rules_executor`` (threads) or here; engine tiles (``engine="betti-matching-3d"``) in
    ``executor`` (an engine pool) or here. Tiles past the rules' bound go to ``engine_executor()`` when given, else
    to ``executor``. ``keep_masks``: the pending score keeps the two foreground masks (:attr:`PendingScore.masks`,
    for the error map).
    """
    check_engine(engine)
    pred_fg, gt_fg = binarize_pair(pred, gt)
    tiles = submit_topo_counts(pred_fg, gt_fg, executor, engine=engine, rules_executor=rules_executor)
    sd = surface_dice(pred_fg, gt_fg, SURFACE_TOLERANCE)
    split, merge = voi(pred_fg, gt_fg)
    if engine_executor is None:
        engine_executor = lambda: executor  # noqa: E731
    masks = (pred_fg, gt_fg) if keep_masks else None
    return PendingScore(tiles, sd, split, merge, engine_executor, masks=masks)


def engine_tiles_needed(pred_fg: np.ndarray, gt_fg: np.ndarray) -> int:
    """How many of the 8 tiles need a matching (no shortcut applies; the shortcuts' Betti numbers are computed
    once, when the tiles are submitted)."""
    return sum(needs_matching(pred_fg[s], gt_fg[s]) for s in tile_slices(pred_fg.shape))


def leaderboard_score(pred: np.ndarray, gt: np.ndarray, workers: int | None = None, engine: str = "auto") -> dict:
    """Score one volume exactly like the competition.

    Returns ``score`` (clipped to [0, 1]), ``topo``, ``surface_dice``, ``voi_score``, ``voi_split``,
    ``voi_merge`` and ``counts`` (``{"0": [m, p, g], "1": …, "2": …}`` summed over the 8 tiles).

    ``workers``: parallel tiles. ``None`` = as many as cores and tiles allow (rules tiles run in threads of this
    process; engine tiles in worker processes, also capped by free memory: a 160³ tile needs ~4.6 GB in the
    engine); ``0`` = serially in this process. ``engine``: ``"auto"`` (default: the rules, the engine past their
    bound), ``"rules"`` or ``"betti-matching-3d"`` (see :data:`~nnunetv2_topo.metrics.topo_score.ENGINES`).
    """
    check_engine(engine)
    if workers is not None and workers < 0:
        raise ValueError(f"workers must be None or >= 0, got {workers}")
    if workers == 0:
        return start_score(pred, gt, None, engine).result()
    pred_fg, gt_fg = binarize_pair(pred, gt)
    needed = engine_tiles_needed(pred_fg, gt_fg)
    tile_voxels = largest_tile_voxels(pred_fg.shape)

    def engine_pool(tasks: int = TILES_PER_VOLUME) -> cf.Executor:
        return shared_pool(auto_workers(tasks, tile_voxels) if workers is None else workers)

    if engine == "betti-matching-3d":
        return start_score(pred_fg, gt_fg, engine_pool(needed) if needed else None, engine).result()
    threads = shared_threads(auto_threads(needed) if workers is None else workers) if needed > 1 else None
    return start_score(pred_fg, gt_fg, None, engine, threads, engine_pool).result()
