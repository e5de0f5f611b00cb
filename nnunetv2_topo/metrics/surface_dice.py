"""SurfaceDice@τ with the DeepMind ``surface-distance`` definition, vectorised and NumPy-2 safe.

Surface elements live on the voxel corners: each corner gets the 8-bit code of its 2×2×2 neighbourhood
(bit ``7 - (4a + 2b + c)`` for the voxel at offset ``(a - 1, b - 1, c - 1)``); codes 0 and 255 are not surface.
Every surface corner carries the area of its code from :data:`SURFEL_AREA`. A surface element counts as
overlapping when the Euclidean distance to the nearest surface corner of the other mask is ≤ τ, and

    SD = (Σ area_gt[overlapping] + Σ area_pred[overlapping]) / (Σ area_gt + Σ area_pred).

Instead of two float distance transforms the overlap test dilates each surface with the exact digital ball
``{d ∈ Z³ : sqrt(|d|²) ≤ τ}``, which decides ``EDT ≤ τ`` identically (EDT values are square roots of integers).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Area of every 2×2×2 neighbourhood code, as integer multiples (a, b, c) of the three triangle areas that occur:
# a corner triangle sqrt(3)/8, half of a diagonal quad sqrt(2)/4 and half of a unit square 1/2. The area is that
# of the classic (Lorensen-Cline) marching-cubes triangulation with edge-midpoint vertices, taken on the minority
# side of the cube (≤ 4 corners set; the complement otherwise), which is the table that `surface-distance` uses.
# One code is three characters: a (hex digit), b, c. Derived, and re-derived in tests/test_metric_surface_dice.py
# with skimage's marching cubes.
_AREA_CODES = (
    "000100100020100020200301100200020301020301301002"
    "100020200301200301300600200120120420120420401301"
    "100200020301200120120420200300301600120401420301"
    "020301301002120420401301120401420301040120120020"
    "100200200120020301120420200300120401301600420301"
    "020301120420301002401301120401040120420301120020"
    "200300120401120401040120300400401300401300120200"
    "301600420301420301120020401300120200120200200100"
    "100200200120200120300401020120301420301420600301"
    "200120300401300401400300120040401120401120300200"
    "020120301420120040401120301401002301420120301020"
    "301420600301401120300200420120301020120200200100"
    "020120120040301420401120301401420120002301301020"
    "301420401120600301300200420120120200301020200100"
    "301401420120420120120200600300301200301200020100"
    "002301301020301020200100301200020100020100100000"
)


def _build_surfel_area() -> np.ndarray:
    units = (math.sqrt(3.0) / 8.0, math.sqrt(2.0) / 4.0, 0.5)
    table = np.zeros(256, dtype=np.float64)
    for code in range(256):
        a, b, c = _AREA_CODES[3 * code], _AREA_CODES[3 * code + 1], _AREA_CODES[3 * code + 2]
        table[code] = int(a, 16) * units[0] + int(b) * units[1] + int(c) * units[2]
    return table


SURFEL_AREA: np.ndarray = _build_surfel_area()
"""Surface area (voxel spacing 1) of each of the 256 neighbourhood codes."""
SURFEL_AREA.flags.writeable = False


def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """uint8 code of every corner of ``mask`` (shape + 1 per axis); corner ``i`` sits between voxels i-1 and i."""
    x = np.pad(np.asarray(mask, dtype=np.uint8), 1)
    n0, n1, n2 = (s - 1 for s in x.shape)
    code = np.zeros((n0, n1, n2), dtype=np.uint8)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                bit = 7 - (4 * a + 2 * b + c)
                code |= x[a : a + n0, b : b + n1, c : c + n2] << np.uint8(bit)
    return code


def ball_offsets(tau: float) -> list[tuple[int, int, int]]:
    """Integer offsets ``d`` with ``sqrt(|d|²) <= tau`` (the same float test as a distance transform)."""
    r = int(math.floor(tau))
    out = []
    for i in range(-r, r + 1):
        for j in range(-r, r + 1):
            for k in range(-r, r + 1):
                if math.sqrt(i * i + j * j + k * k) <= tau:
                    out.append((i, j, k))
    return out


def dilate_ball(mask: np.ndarray, tau: float) -> np.ndarray:
    """Binary dilation of ``mask`` with the digital ball of radius ``tau`` (same shape, no wrap-around)."""
    offsets = ball_offsets(tau)
    r = int(math.floor(tau))
    if r == 0:
        return mask.copy()
    n0, n1, n2 = mask.shape
    padded = np.pad(mask, r)
    # Group offsets by their in-plane part: for (dj, dk) every di in [-h, h] is allowed.
    heights: dict[tuple[int, int], int] = {}
    for i, j, k in offsets:
        heights[(j, k)] = max(heights.get((j, k), 0), abs(i))
    # columns[h][z, y, x] = any(padded[z + di, y, x] for |di| <= h), on the unshifted grid along axis 0
    columns = {0: padded[r : r + n0]}
    acc = padded[r : r + n0].copy()
    for h in range(1, max(heights.values()) + 1):
        acc |= padded[r - h : r - h + n0]
        acc |= padded[r + h : r + h + n0]
        columns[h] = acc.copy()
    out = np.zeros(mask.shape, dtype=bool)
    for (j, k), h in heights.items():
        out |= columns[h][:, r + j : r + j + n1, r + k : r + k + n2]
    return out


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    sl = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        sl.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(sl)


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"surface_dice needs two 3-D masks of equal shape, got {pred.shape} and {gt.shape}")
    return pred, gt


def _surfaces(pred: np.ndarray, gt: np.ndarray, tau: float) -> tuple:
    """``(box, (code, border, near_other) of gt, same of pred)`` on the crop to the bounding box of the union."""
    box = _bbox(pred | gt)
    code_gt = neighbour_codes(gt[box])
    code_pr = neighbour_codes(pred[box])
    border_gt = (code_gt != 0) & (code_gt != 255)
    border_pr = (code_pr != 0) & (code_pr != 255)
    near_pr = dilate_ball(border_pr, tau)
    near_gt = dilate_ball(border_gt, tau)
    return box, (code_gt, border_gt, near_pr), (code_pr, border_pr, near_gt)


def surface_dice(pred: np.ndarray, gt: np.ndarray, tau: float = 2.0) -> float:
    """Surface Dice at tolerance ``tau`` (voxels) of two 3-D binary masks; 1 if both empty, 0 if one is."""
    pred, gt = _check_pair(pred, gt)
    pred_any, gt_any = bool(pred.any()), bool(gt.any())
    if not pred_any and not gt_any:
        return 1.0
    if not pred_any or not gt_any:
        return 0.0
    _, (code_gt, border_gt, near_pr), (code_pr, border_pr, near_gt) = _surfaces(pred, gt, tau)
    area_gt = SURFEL_AREA[code_gt[border_gt]]
    area_pr = SURFEL_AREA[code_pr[border_pr]]
    overlap_gt = float(area_gt[near_pr[border_gt]].sum())
    overlap_pr = float(area_pr[near_gt[border_pr]].sum())
    total = float(area_gt.sum()) + float(area_pr.sum())
    return (overlap_gt + overlap_pr) / total


def surface_misses(pred: np.ndarray, gt: np.ndarray, tau: float = 2.0) -> dict:
    """The surface elements farther than ``tau`` from the other mask's surface: what ``1 - surface_dice`` is made of.

    Returns ``{"total": Σ area_gt + Σ area_pred, "gt": (corners, areas), "pred": (corners, areas)}``: ``corners``
    an ``(n, 3)`` int64 array of corner positions in volume coordinates (corner ``c`` sits between voxels ``c - 1``
    and ``c``), ``areas`` their surfel areas. ``1 - surface_dice = (Σ gt areas + Σ pred areas) / total`` (also when
    one mask is empty: every surface element of the other misses). Both empty: total 0, nothing misses.
    """
    pred, gt = _check_pair(pred, gt)
    empty = (np.zeros((0, 3), np.int64), np.zeros(0))
    if not pred.any() and not gt.any():
        return {"total": 0.0, "gt": empty, "pred": empty}
    box, (code_gt, border_gt, near_pr), (code_pr, border_pr, near_gt) = _surfaces(pred, gt, tau)
    start = np.array([s.start for s in box], np.int64)
    out: dict[str, Any] = {
        "total": float(SURFEL_AREA[code_gt[border_gt]].sum()) + float(SURFEL_AREA[code_pr[border_pr]].sum())
    }
    for side, code, border, near in (("gt", code_gt, border_gt, near_pr), ("pred", code_pr, border_pr, near_gt)):
        miss = border & ~near
        corners = np.stack(np.nonzero(miss), axis=1).astype(np.int64) + start
        out[side] = (corners, SURFEL_AREA[code[miss]])
    return out
