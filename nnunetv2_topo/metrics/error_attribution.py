"""The score terms an error costs: Betti features per component and octant tile, unmatched surface per component.

Two pieces of :mod:`nnunetv2_topo.metrics.error_map`, kept apart for size:

* :func:`label_betti` — the Betti numbers ``(b0, b1, b2)`` of every 26-connected component of a mask inside one tile,
  all at once (TopoScore's 6-connected foreground: b0 = 6-connected pieces, b2 = enclosed 26-connected background
  pieces, b1 = b0 + b2 − χ). Different 26-components never touch, so every cell of the cubical complex belongs to
  one component and the Euler characteristic splits by component.
* :func:`topo_feature_costs` and :func:`surface_costs` — what one unmatched feature of each dimension and each
  unmatched surface element cost, so that the sums are exactly ``1 - TopoScore`` and ``1 - SurfaceDice``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cc3d
import numpy as np

from nnunetv2_topo.metrics.jit_cache import configure_numba_cache
from nnunetv2_topo.metrics.topo_score import TOPO_WEIGHTS

configure_numba_cache()

from numba import njit  # noqa: E402  (the cache folder must be set before numba reads its configuration)

__all__ = ["corner_blocks", "label_betti", "topo_feature_costs"]


def _count(labels: np.ndarray, n_labels: int) -> np.ndarray:
    return np.bincount(labels.ravel(), minlength=n_labels + 1).astype(np.int64)


@njit(cache=True, nogil=True)
def _euler_by_label(x, lab, n_labels):  # pragma: no cover - compiled (tested through label_betti)
    """χ = V − E + F − C of the voxels of each label (6-connected cubical complex), one pass: every cell is counted
    at its lowest voxel."""
    n0, n1, n2 = x.shape
    chi = np.zeros(n_labels + 1, np.int64)
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                if not x[i, j, k]:
                    continue
                a = i + 1 < n0 and x[i + 1, j, k]
                b = j + 1 < n1 and x[i, j + 1, k]
                d = k + 1 < n2 and x[i, j, k + 1]
                ab = a and b and x[i + 1, j + 1, k]
                ad = a and d and x[i + 1, j, k + 1]
                bd = b and d and x[i, j + 1, k + 1]
                cube = ab and ad and bd and x[i + 1, j + 1, k + 1]
                chi[lab[i, j, k]] += 1 - (a + b + d) + (ab + ad + bd) - cube
    return chi


def label_betti(mask: np.ndarray, labels: np.ndarray, n_labels: int) -> np.ndarray:
    """``(n_labels + 1, 3)`` int64: row ``i`` = ``(b0, b1, b2)`` of the voxels of ``mask`` labelled ``i``.

    ``labels`` holds the 26-connected component of every voxel of ``mask`` (any value outside it). A cavity (a
    26-connected background piece not touching the tile border) counts for the component of the voxel just before
    its first voxel in raster order (that voxel is foreground: nothing earlier belongs to the cavity).
    """
    x = np.ascontiguousarray(mask, dtype=bool)
    out = np.zeros((n_labels + 1, 3), np.int64)
    if not x.any():
        return out
    lab = np.ascontiguousarray(labels)
    chi = _euler_by_label(x, lab, n_labels)
    l6, n6 = cc3d.connected_components(x, connectivity=6, return_N=True)
    owner = np.zeros(int(n6) + 1, np.int64)
    owner[l6[x]] = lab[x]
    out[:, 0] = _count(owner[1:], n_labels)
    if not x.all():
        bg, n_bg = cc3d.connected_components(~x, connectivity=26, return_N=True)
        enclosed = np.ones(int(n_bg) + 1, bool)
        enclosed[0] = False
        for face in (bg[0], bg[-1], bg[:, 0], bg[:, -1], bg[:, :, 0], bg[:, :, -1]):
            enclosed[face.ravel()] = False
        if enclosed.any():
            flat = bg.ravel()
            idx = np.flatnonzero(enclosed[flat])
            _, first = np.unique(flat[idx], return_index=True)
            out[:, 2] = _count(lab.ravel()[idx[first] - 1].astype(np.int64), n_labels)
    out[:, 1] = out[:, 0] + out[:, 2] - chi
    out[0] = 0
    return out


def topo_feature_costs(counts: np.ndarray, weights: Sequence[float] = TOPO_WEIGHTS) -> np.ndarray:
    """What one unmatched finite pair of dimension k costs TopoScore, so that ``Σ_k unmatched_k · cost_k`` is exactly
    ``1 - TopoScore`` (unmatched_k = ``(p_k − m_k) + (g_k − m_k)``, counts summed over the tiles).

    ``1 - F1_k = unmatched_k / (p_k + g_k)`` when ``g_k > 0`` and ``p_k / (p_k + 0.5)`` (every pair unmatched) when
    ``g_k = 0``; each dimension is weighted by its weight renormalised over the active dimensions.
    """
    counts = np.asarray(counts, np.int64)
    active = counts[:, 1] + counts[:, 2] > 0
    total = float(sum(w for w, a in zip(weights, active) if a))
    cost = np.zeros(3)
    for k, (_, p, g) in enumerate(counts):
        if active[k]:
            cost[k] = weights[k] / total / ((p + g) if g > 0 else (p + 0.5))
    return cost


def corner_blocks(corners: np.ndarray, shape: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """For surface corners ``(n, 3)``: the 8 voxels of each corner's 2×2×2 block as ``(flat index, inside)`` pairs
    (``inside`` False where the voxel lies outside the volume; its index is then 0)."""
    shape_arr = np.asarray(shape, np.int64)
    blocks = []
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                v = corners - 1 + np.array([a, b, c], np.int64)
                inside = np.all((v >= 0) & (v < shape_arr), axis=1)
                v = np.where(inside[:, None], v, 0)
                blocks.append((np.ravel_multi_index(tuple(v.T), tuple(shape)), inside))
    return blocks
