"""Straightforward implementations of the metric's definition, for tests and as the benchmark baseline.

Slow on purpose: the engine on every tile one after another (no shortcuts), SurfaceDice with a correlation
kernel and two float Euclidean distance transforms like ``surface-distance``, VOI from a sparse contingency table.
"""

from __future__ import annotations

import cc3d
import numpy as np
from scipy import ndimage, sparse

from nnunetv2_topo.metrics.engine import engine_counts
from nnunetv2_topo.metrics.leaderboard import binarize_pair
from nnunetv2_topo.metrics.score_fields import score_result
from nnunetv2_topo.metrics.surface_dice import SURFEL_AREA
from nnunetv2_topo.metrics.topo_score import tile_slices, topo_score_from_counts
from nnunetv2_topo.metrics.voi import voi_score

KERNEL = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]])


def topo_counts_reference(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Engine on all 8 tiles, serially."""
    total = np.zeros((3, 3), dtype=np.int64)
    for sl in tile_slices(pred.shape):
        if 0 in pred[sl].shape:
            continue
        total += engine_counts(np.ascontiguousarray(pred[sl]), np.ascontiguousarray(gt[sl]))
    return total


def surface_dice_reference(pred: np.ndarray, gt: np.ndarray, tau: float = 2.0) -> float:
    """Bounding-box crop, neighbour codes by correlation, distance transforms, area-weighted overlap."""
    if not pred.any() and not gt.any():
        return 1.0
    if not pred.any() or not gt.any():
        return 0.0
    idx = np.argwhere(pred | gt)
    lo, hi = idx.min(0), idx.max(0)
    crop = tuple(slice(a, b + 1) for a, b in zip(lo, hi, strict=True))
    shape = tuple(int(b - a + 2) for a, b in zip(lo, hi, strict=True))

    def codes(mask):
        c = np.zeros(shape, np.uint8)
        c[:-1, :-1, :-1] = mask[crop]
        return ndimage.correlate(c.astype(np.uint8), KERNEL, mode="constant", cval=0)

    code_gt, code_pr = codes(gt), codes(pred)
    border_gt = (code_gt != 0) & (code_gt != 255)
    border_pr = (code_pr != 0) & (code_pr != 255)
    dist_gt = ndimage.distance_transform_edt(~border_gt)
    dist_pr = ndimage.distance_transform_edt(~border_pr)
    d_gt_to_pr, a_gt = dist_pr[border_gt], SURFEL_AREA[code_gt[border_gt]]
    d_pr_to_gt, a_pr = dist_gt[border_pr], SURFEL_AREA[code_pr[border_pr]]
    overlap = a_gt[d_gt_to_pr <= tau].sum() + a_pr[d_pr_to_gt <= tau].sum()
    return float(overlap / (a_gt.sum() + a_pr.sum()))


def voi_reference(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """``(split, merge)`` from a sparse contingency table over the union of both foregrounds."""
    union = pred | gt
    if not union.any():
        return 0.0, 0.0
    lp = cc3d.connected_components(pred, connectivity=26)[union].astype(np.int64)
    lg = cc3d.connected_components(gt, connectivity=26)[union].astype(np.int64)
    n = lp.size
    table = sparse.coo_matrix((np.ones(n), (lg, lp))).tocsr()
    pxy = table.data / n
    px = np.asarray(table.sum(axis=1)).ravel() / n
    py = np.asarray(table.sum(axis=0)).ravel() / n
    px, py = px[px > 0], py[py > 0]
    h_xy = -np.sum(pxy * np.log2(pxy))
    h_x = -np.sum(px * np.log2(px))
    h_y = -np.sum(py * np.log2(py))
    return float(h_xy - h_x), float(h_xy - h_y)


def leaderboard_score_reference(pred: np.ndarray, gt: np.ndarray) -> dict:
    """The whole score with the reference pieces above (serial, no shortcuts)."""
    p, g = binarize_pair(pred, gt)
    counts = topo_counts_reference(p, g)
    topo = topo_score_from_counts(counts)
    sd = surface_dice_reference(p, g)
    split, merge = voi_reference(p, g)
    v = voi_score(split, merge)
    return score_result(topo, sd, split, merge, v, counts)
