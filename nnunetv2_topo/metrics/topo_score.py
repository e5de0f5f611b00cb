"""TopoScore: Betti matching per 2×2×2 tile, F1 per homology dimension, weighted mean.

Per tile the counts ``[[m_k, p_k, g_k] for k]`` are exactly the Betti-Matching-3D engine's. Where a shortcut that
provably gives the engine's numbers applies, no matching is computed:

* both tiles empty: no finite pairs at all;
* identical tiles: every pair is matched, ``m_k = p_k = g_k`` = the tile's finite pairs;
* one tile empty: nothing is matched, the other side's counts are its finite pairs.

The finite pairs of a binary tile are ``(b0 - 1, b1, b2)`` of its foreground (nothing when empty): the inverted
binary volume's sublevel filtration adds the whole foreground at value 0 and everything else at value 1, where the
box becomes contractible, so every foreground class except the oldest component dies at 1 and the
zero-persistence pairs at value 1 are not reported. All three shortcuts are checked against the engine in
``tests/test_metric_topo.py``. Any other tile is matched by the engine's own rules for binary tiles
(:mod:`nnunetv2_topo.metrics.betti_rules`, ``engine="rules"``; ``p_k``/``g_k`` are the finite pairs above) or by the
engine itself (``engine="betti-matching-3d"``). The default ``engine="auto"`` runs the rules with a bound on the m_1
reduction's work and hands a tile past that bound to the engine, so every count stays the engine's.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cc3d
import numpy as np

from nnunetv2_topo.metrics.engine import engine_counts, submit_tile

TOPO_WEIGHTS = (0.34, 0.33, 0.33)

ENGINES = ("auto", "rules", "betti-matching-3d")
"""``auto``: the rules, past their bound the engine; ``rules``: the rules without a bound; ``betti-matching-3d``:
the engine on every tile that no shortcut answers."""

RULES_MAX_STEPS_PER_VOXEL = 32
"""Bound on the m_1 reductions' work (steps per tile voxel) under ``engine="auto"``: an iid 50 % noise 160³ tile,
the hardest family measured, needs 14.5 (~12 s); past 32 (~25 s at 160³) the engine takes the tile
(benchmarks/metric_rules.py)."""

RULES_MAX_STORED_PER_VOXEL = 8
"""Bound on the reduced columns kept (int32 entries per tile voxel: 128 MB at 160³) under ``engine="auto"``."""


def check_engine(engine: str) -> str:
    """``engine`` if it is one of :data:`ENGINES`, else a ``ValueError`` naming the choices."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINES))}, got {engine!r}")
    return engine


TILES_PER_VOLUME = 8
"""The metric cuts every axis of a volume in two: 2×2×2 tiles (:func:`tile_slices`)."""

COMPETITION_TILE_VOXELS = 160**3
"""Voxels of one tile of a 320³ competition volume (for sizing worker pools before the volumes are read)."""


def largest_tile_voxels(shape: Sequence[int]) -> int:
    """Voxels of the largest of a volume's :data:`TILES_PER_VOLUME` tiles (the first: it takes the extra voxels)."""
    return int(np.prod([(int(n) + 1) // 2 for n in shape]))


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


def needs_matching(pred: np.ndarray, gt: np.ndarray) -> bool:
    """Whether a tile needs a Betti matching: both sides non-empty and different (no shortcut applies)."""
    return 0 not in pred.shape and bool(pred.any()) and bool(gt.any()) and not np.array_equal(pred, gt)


def shortcut_counts(pred: np.ndarray, gt: np.ndarray) -> np.ndarray | None:
    """The tile's ``[[m, p, g] per dimension]`` without the engine, or ``None`` when no shortcut applies
    (:func:`needs_matching`)."""
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


def rules_tile_counts(pred: np.ndarray, gt: np.ndarray, bounded: bool = True) -> np.ndarray | None:
    """A tile's counts by the rules, or ``None`` when ``bounded`` and the m_1 reduction went past its bound."""
    from nnunetv2_topo.metrics.betti_rules import rules_matched  # numba: loaded with the first tile the rules match

    voxels = int(pred.size)
    big = np.iinfo(np.int64).max // 4
    max_steps = RULES_MAX_STEPS_PER_VOXEL * voxels if bounded else big
    max_stored = RULES_MAX_STORED_PER_VOXEL * voxels if bounded else big
    matched, _ = rules_matched(pred, gt, max_steps, max_stored)
    if matched is None:
        return None
    return np.stack([matched, finite_pairs(pred), finite_pairs(gt)], axis=1)


def tile_counts(pred_tile: np.ndarray, gt_tile: np.ndarray, engine: str = "auto") -> np.ndarray:
    """The ``(3, 3)`` int64 ``[[m, p, g] for k in 0, 1, 2]`` of one tile, computed in this process: a shortcut where
    one applies, else the rules (``auto``: past their bound the engine; ``rules``: unbounded) or the engine."""
    check_engine(engine)
    pred = np.ascontiguousarray(pred_tile, dtype=bool)
    gt = np.ascontiguousarray(gt_tile, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"tile_counts needs two 3-D tiles of equal shape, got {pred.shape} and {gt.shape}")
    if 0 in pred.shape:
        return np.zeros((3, 3), dtype=np.int64)
    counts = shortcut_counts(pred, gt)
    if counts is not None:
        return counts
    if engine != "betti-matching-3d":
        counts = rules_tile_counts(pred, gt, bounded=engine == "auto")
    return engine_counts(pred, gt) if counts is None else counts


@dataclass
class TileJob:
    """One tile on its way: ``future`` gives its counts, or ``None`` when the rules handed it to the engine."""

    pred: np.ndarray
    gt: np.ndarray
    future: cf.Future
    source: str  # "shortcut", "rules" or "engine"
    counts: np.ndarray | None = None  # the tile's (3, 3) counts, once collected


def _done(counts: np.ndarray) -> cf.Future:
    future: cf.Future = cf.Future()
    future.set_result(counts)
    return future


def _run_here(fn, *args) -> cf.Future:
    future: cf.Future = cf.Future()
    try:
        future.set_result(fn(*args))
    except BaseException as exc:  # delivered through the future like an executor would
        future.set_exception(exc)
    return future


def submit_topo_counts(
    pred: np.ndarray,
    gt: np.ndarray,
    executor: cf.Executor | None = None,
    use_shortcuts: bool = True,
    engine: str = "auto",
    rules_executor: cf.Executor | None = None,
) -> list[TileJob]:
    """Start the 8 tiles; collect them with :func:`collect_tile_counts`.

    Rules tiles run in ``rules_executor`` (threads: the compiled rules release the GIL) or here, serially, when it
    is ``None``. Engine tiles (``engine="betti-matching-3d"``) run in ``executor`` (a pool from
    :func:`~nnunetv2_topo.metrics.engine.make_engine_pool`) or here. Shortcut tiles are answered at once.
    """
    check_engine(engine)
    jobs = []
    for sl in tile_slices(pred.shape):
        p, g = np.ascontiguousarray(pred[sl]), np.ascontiguousarray(gt[sl])
        counts = shortcut_counts(p, g) if use_shortcuts else None
        if counts is None and 0 in p.shape:
            counts = np.zeros((3, 3), dtype=np.int64)
        if counts is not None:
            jobs.append(TileJob(p, g, _done(counts), "shortcut"))
        elif engine == "betti-matching-3d":
            jobs.append(TileJob(p, g, submit_tile(executor, p, g), "engine"))
        else:
            bounded = engine == "auto"
            if rules_executor is None:
                future = _run_here(rules_tile_counts, p, g, bounded)
            else:
                future = rules_executor.submit(rules_tile_counts, p, g, bounded)
            jobs.append(TileJob(p, g, future, "rules"))
    return jobs


def collect_tile_counts(
    jobs: Sequence[TileJob], engine_executor: Callable[[], cf.Executor | None] | None = None
) -> tuple[np.ndarray, int]:
    """``(counts summed over the tiles, tiles that fell back to the engine)``; each job's :attr:`TileJob.counts`
    then holds its own tile's counts.

    Tiles the rules handed back go to the engine, all at once, in ``engine_executor()`` (called only when a tile
    falls back, so a pool is started only then) or here when that is ``None``.
    """
    results = [job.future.result() for job in jobs]
    fallback = [i for i, r in enumerate(results) if r is None]
    if fallback:
        executor = engine_executor() if engine_executor is not None else None
        futures = {i: submit_tile(executor, jobs[i].pred, jobs[i].gt) for i in fallback}
        for i, future in futures.items():
            results[i] = future.result()
            jobs[i].source = "engine"
    for job, counts in zip(jobs, results):
        job.counts = counts
    return np.sum(results, axis=0).astype(np.int64), len(fallback)


def topo_counts(pred: np.ndarray, gt: np.ndarray, executor: cf.Executor | None = None, **options) -> np.ndarray:
    """Counts summed over the 8 tiles: ``(3, 3)`` int64, row k = ``[m_k, p_k, g_k]``; fallback tiles run in
    ``executor`` (or here). ``options``: ``use_shortcuts``, ``engine``, ``rules_executor`` of
    :func:`submit_topo_counts`."""
    jobs = submit_topo_counts(pred, gt, executor, **options)
    return collect_tile_counts(jobs, lambda: executor)[0]


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


def topo_score(pred: np.ndarray, gt: np.ndarray, executor: cf.Executor | None = None, engine: str = "auto") -> float:
    """TopoScore of two binary masks (already with the ignore region removed)."""
    return topo_score_from_counts(topo_counts(pred, gt, executor, engine=engine))
