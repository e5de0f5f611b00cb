"""TopoScore: Betti matching per 2×2×2 tile, F1 per homology dimension, weighted mean.

Per tile the counts come from the Betti-matching engine (:mod:`nnunetv2_topo.metrics.engine`) unless a shortcut
that provably gives the engine's numbers applies:

* both tiles empty: no finite pairs at all;
* identical tiles: every pair is matched, ``m_k = p_k = g_k`` = the tile's finite pairs;
* one tile empty: nothing is matched, the other side's counts are its finite pairs.

The finite pairs of a binary tile are ``(b0 - 1, b1, b2)`` of its foreground (nothing when empty): the inverted
binary volume's sublevel filtration adds the whole foreground at value 0 and everything else at value 1, where the
box becomes contractible, so every foreground class except the oldest component dies at 1 and the
zero-persistence pairs at value 1 are not reported. All three shortcuts are checked against the engine in
``tests/test_metric_topo.py``. Any other tile goes to the engine: matchings can depend on its tie-breaking.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Sequence

import cc3d
import numpy as np

from nnunetv2_topo.metrics.engine import submit_tile

TOPO_WEIGHTS = (0.34, 0.33, 0.33)


def tile_slices(shape: Sequence[int]) -> list[tuple[slice, slice, slice]]:
    """The 8 tiles: every axis cut in two, the first part taking the extra voxel (97 -> 49 + 48)."""
    cuts = []
    for n in shape:
        half = (int(n) + 1) // 2
        cuts.append((slice(0, half), slice(half, int(n))))
    return [(a, b, c) for a in cuts[0] for b in cuts[1] for c in cuts[2]]


def euler_characteristic(fg: np.ndarray) -> int:
    """Euler characteristic of a 3-D binary mask with 6-connected foreground (voxels as vertices).

    ``χ = V - E + F - C`` over the cubical complex whose vertices are foreground voxels, edges face-adjacent
    pairs, squares 2×2 foreground blocks, cubes 2×2×2 blocks; equals ``skimage.measure.euler_number(fg, 1)``.
    """
    x = np.asarray(fg, dtype=bool)
    v = int(np.count_nonzero(x))
    if v == 0:
        return 0
    e0, e1, e2 = x[1:] & x[:-1], x[:, 1:] & x[:, :-1], x[:, :, 1:] & x[:, :, :-1]
    edges = int(np.count_nonzero(e0)) + int(np.count_nonzero(e1)) + int(np.count_nonzero(e2))
    s01 = e0[:, 1:] & e0[:, :-1]  # squares in the (0, 1) plane
    s02 = e0[:, :, 1:] & e0[:, :, :-1]
    s12 = e1[:, :, 1:] & e1[:, :, :-1]
    squares = int(np.count_nonzero(s01)) + int(np.count_nonzero(s02)) + int(np.count_nonzero(s12))
    cubes = int(np.count_nonzero(s01[:, :, 1:] & s01[:, :, :-1]))
    return v - edges + squares - cubes


def betti_numbers(fg: np.ndarray) -> tuple[int, int, int]:
    """``(b0, b1, b2)`` of a 3-D mask: 6-connected components, tunnels, cavities (26-connected background
    components that do not touch the border)."""
    x = np.ascontiguousarray(fg, dtype=bool)
    if not x.any():
        return 0, 0, 0
    _, b0 = cc3d.connected_components(x, connectivity=6, return_N=True)
    b2 = 0
    if not x.all():
        bg, n_bg = cc3d.connected_components(~x, connectivity=26, return_N=True)
        faces = np.concatenate([f.ravel() for f in (bg[0], bg[-1], bg[:, 0], bg[:, -1], bg[:, :, 0], bg[:, :, -1])])
        touching = np.unique(faces)
        b2 = int(n_bg) - int(np.count_nonzero(touching))
    b1 = int(b0) + b2 - euler_characteristic(x)
    return int(b0), b1, b2


def finite_pairs(fg: np.ndarray) -> np.ndarray:
    """Finite persistence pairs per dimension of a binary tile as the engine reports them: ``(b0 - 1, b1, b2)``."""
    b0, b1, b2 = betti_numbers(fg)
    if b0 == 0:
        return np.zeros(3, dtype=np.int64)
    return np.array([b0 - 1, b1, b2], dtype=np.int64)


def shortcut_counts(pred: np.ndarray, gt: np.ndarray) -> np.ndarray | None:
    """The tile's ``[[m, p, g] per dimension]`` without the engine, or ``None`` when no shortcut applies."""
    pred_any, gt_any = bool(pred.any()), bool(gt.any())
    if not pred_any and not gt_any:
        return np.zeros((3, 3), dtype=np.int64)
    if not pred_any:
        g = finite_pairs(gt)
        return np.stack([np.zeros(3, np.int64), np.zeros(3, np.int64), g], axis=1)
    if not gt_any:
        p = finite_pairs(pred)
        return np.stack([np.zeros(3, np.int64), p, np.zeros(3, np.int64)], axis=1)
    if np.array_equal(pred, gt):
        f = finite_pairs(gt)
        return np.stack([f, f, f], axis=1)
    return None


def tile_counts(pred_tile: np.ndarray, gt_tile: np.ndarray, engine: str = "auto") -> np.ndarray:
    """One tile's ``[[m, p, g] per dimension]`` in this process (stand-in until issue 13's faster version)."""
    from nnunetv2_topo.metrics.engine import engine_counts

    counts = shortcut_counts(pred_tile, gt_tile)
    return engine_counts(pred_tile, gt_tile) if counts is None else counts


def submit_topo_counts(
    pred: np.ndarray, gt: np.ndarray, executor: cf.Executor | None = None, use_shortcuts: bool = True
) -> list[cf.Future]:
    """Start the 8 tiles' counts; each future gives a ``(3, 3)`` array ``[[m, p, g] for k in 0, 1, 2]``.

    Engine tiles run in ``executor`` (a pool from :func:`~nnunetv2_topo.metrics.engine.make_engine_pool`) or
    here, serially, when it is ``None``. Shortcut tiles are answered at once.
    """
    futures = []
    for sl in tile_slices(pred.shape):
        p, g = pred[sl], gt[sl]
        counts = shortcut_counts(p, g) if use_shortcuts else None
        if counts is None and 0 in p.shape:
            counts = np.zeros((3, 3), dtype=np.int64)
        if counts is None:
            futures.append(submit_tile(executor, np.ascontiguousarray(p), np.ascontiguousarray(g)))
        else:
            done: cf.Future = cf.Future()
            done.set_result(counts)
            futures.append(done)
    return futures


def topo_counts(
    pred: np.ndarray, gt: np.ndarray, executor: cf.Executor | None = None, use_shortcuts: bool = True
) -> np.ndarray:
    """Counts summed over the 8 tiles: ``(3, 3)`` int64, row k = ``[m_k, p_k, g_k]``."""
    futures = submit_topo_counts(pred, gt, executor, use_shortcuts)
    return np.sum([f.result() for f in futures], axis=0).astype(np.int64)


def topo_score_from_counts(counts: np.ndarray, weights: Sequence[float] = TOPO_WEIGHTS) -> float:
    """Weighted topological F1 from summed counts; 1.0 when no dimension has any pair."""
    total, weight = 0.0, 0.0
    for k, (m, p, g) in enumerate(np.asarray(counts, dtype=np.int64)):
        if p + g == 0:
            continue
        f1 = 2.0 * m / (p + g) if g > 0 else 0.5 / (p + 0.5)
        total += weights[k] * f1
        weight += weights[k]
    return 1.0 if weight == 0 else total / weight


def topo_score(pred: np.ndarray, gt: np.ndarray, executor: cf.Executor | None = None) -> float:
    """TopoScore of two binary masks (already with the ignore region removed)."""
    return topo_score_from_counts(topo_counts(pred, gt, executor))
