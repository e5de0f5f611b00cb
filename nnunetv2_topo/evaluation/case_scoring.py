"""Score one case in memory with the competition metric, optionally after post-processing it (``nnunetv2_topo tune``
and the benchmarks; folders of predictions are scored by :mod:`nnunetv2_topo.evaluation.folder_scoring`).

:func:`score_prediction` computes the exact leaderboard score of one volume in this process and can
reuse Betti-matching counts: ``tile_cache`` maps ``(tile index, digest of the prediction tile)`` to that tile's
``[[m, p, g]]`` counts against the one ground truth of the case, so a prediction whose tile did not change (another
post-processing configuration that leaves it as it was) never runs the engine again. SurfaceDice and VOI are
always recomputed (cheap).
"""

from __future__ import annotations

import hashlib

import numpy as np

from nnunetv2_topo.metrics.leaderboard import SURFACE_TOLERANCE, binarize_pair
from nnunetv2_topo.metrics.score_fields import score_result
from nnunetv2_topo.metrics.surface_dice import surface_dice
from nnunetv2_topo.metrics.topo_score import tile_counts, tile_slices, topo_score_from_counts
from nnunetv2_topo.metrics.voi import voi, voi_score
from nnunetv2_topo.postprocessing.steps import PostprocessConfig, postprocess_volume

__all__ = ["TileKey", "postprocess_and_score", "score_prediction", "tile_digest"]

TileKey = tuple[int, bytes]
"""``(tile index 0..7, digest of the prediction tile's packed bits)``: the cache key within one case."""


def tile_digest(tile: np.ndarray) -> bytes:
    """A 16-byte digest of a binary tile's shape and packed bits."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.asarray(tile.shape, np.int64).tobytes())
    h.update(np.packbits(np.ascontiguousarray(tile, dtype=bool)).tobytes())
    return h.digest()


def score_prediction(pred: np.ndarray, gt: np.ndarray, tile_cache: dict[TileKey, np.ndarray] | None = None) -> dict:
    """The leaderboard score of one volume, computed here (no worker processes); equals ``leaderboard_score``.

    ``tile_cache`` (one dict per case; its ground truth must never change): counts found in it are reused, counts
    computed are added to it. The result also holds ``tile_hits`` and ``tile_misses`` (engine or shortcut runs).
    """
    pred_fg, gt_fg = binarize_pair(pred, gt)
    counts = np.zeros((3, 3), np.int64)
    hits = misses = 0
    for index, sl in enumerate(tile_slices(pred_fg.shape)):
        p, g = pred_fg[sl], gt_fg[sl]
        if 0 in p.shape:
            continue
        key = (index, tile_digest(p)) if tile_cache is not None else None
        found = tile_cache.get(key) if tile_cache is not None and key is not None else None
        if found is None:
            found = np.asarray(tile_counts(np.ascontiguousarray(p), np.ascontiguousarray(g)), np.int64)
            misses += 1
            if tile_cache is not None and key is not None:
                tile_cache[key] = found
        else:
            hits += 1
        counts += found
    topo = topo_score_from_counts(counts)
    sd = surface_dice(pred_fg, gt_fg, SURFACE_TOLERANCE)
    split, merge = voi(pred_fg, gt_fg)
    voi_s = voi_score(split, merge)
    return {**score_result(topo, sd, split, merge, voi_s, counts), "tile_hits": hits, "tile_misses": misses}


def postprocess_and_score(
    volume: np.ndarray,
    gt: np.ndarray,
    config: PostprocessConfig = PostprocessConfig(),  # noqa: B008
    tile_cache: dict[TileKey, np.ndarray] | None = None,
) -> dict:
    """:func:`score_prediction` of ``postprocess_volume(volume, config)``."""
    return score_prediction(postprocess_volume(volume, config), gt, tile_cache)
