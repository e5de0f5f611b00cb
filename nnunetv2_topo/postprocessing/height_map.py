"""Patching holes in a sheet with a height map (the Vesuvius 1st place's large-hole step).

Per 26-connected component (sheet): project it on the axis where its footprint is largest; holes in that
footprint (background not connected to the footprint's outside) up to ``max_hole`` pixels are candidates. The
sheet's height (mid-point of each column) is interpolated linearly across a hole along each in-plane axis, and
the two estimates averaged with weights 1/distance to the nearest hole edge; the patch is the sheet's median
column thickness centred on that height. A patch is kept only if it does not increase the sheet's hole count:
its Euler number (6-connected foreground, as the metric) must not drop. No patch joins two components.
"""

from __future__ import annotations

import cc3d
import numpy as np
from scipy import ndimage
from skimage.measure import euler_number

from nnunetv2_topo.postprocessing.components import add_without_joining


def _interpolate_along(height: np.ndarray, foot: np.ndarray, axis: int):
    """Linear interpolation of ``height`` between the nearest footprint pixels before and after, along ``axis``."""
    n = foot.shape[axis]
    shape = [1, 1]
    shape[axis] = n
    idx = np.arange(n).reshape(shape)
    before = np.maximum.accumulate(np.where(foot, idx, -1), axis=axis)
    after = np.flip(np.minimum.accumulate(np.flip(np.where(foot, idx, n), axis), axis=axis), axis)
    valid = (before >= 0) & (after < n)
    b, a = np.clip(before, 0, n - 1), np.clip(after, 0, n - 1)
    hb, ha = np.take_along_axis(height, b, axis), np.take_along_axis(height, a, axis)
    t = (idx - b) / np.maximum(a - b, 1)
    return hb + (ha - hb) * t, np.maximum(np.minimum(idx - b, a - idx), 1), valid


def _sheet_patch(comp: np.ndarray, max_hole: int) -> np.ndarray | None:
    """New voxels for the accepted hole patches of one component (same shape as ``comp``), or None."""
    axis = int(np.argmax([comp.any(axis=a).sum() for a in range(3)]))
    c = np.moveaxis(comp, axis, 0)
    depth = c.shape[0]
    foot = np.asarray(c.any(axis=0))
    holes = ndimage.binary_fill_holes(foot) & ~foot
    if not holes.any():
        return None
    hole_labels, n_holes = ndimage.label(holes)
    sizes = np.bincount(hole_labels.ravel())
    wanted = [h for h in range(1, n_holes + 1) if sizes[h] <= max_hole]
    if not wanted:
        return None
    first = c.argmax(axis=0)
    last = depth - 1 - c[::-1].argmax(axis=0)
    height = (first + last) / 2.0
    thickness = max(1, int(round(float(np.median(c.sum(axis=0)[foot])))))
    rows, d_rows, ok_rows = _interpolate_along(height, foot, 1)
    cols, d_cols, ok_cols = _interpolate_along(height, foot, 0)
    w_rows, w_cols = ok_rows / d_rows, ok_cols / d_cols
    estimate = (w_rows * rows + w_cols * cols) / np.maximum(w_rows + w_cols, 1e-12)
    patch = np.zeros_like(c)
    boxes = ndimage.find_objects(hole_labels)
    for h in wanted:
        bu, bv = boxes[h - 1]
        us, vs = np.nonzero(hole_labels[bu, bv] == h)
        us, vs = us + bu.start, vs + bv.start
        start = np.rint(estimate[us, vs] - (thickness - 1) / 2).astype(int)
        zs = (start[:, None] + np.arange(thickness)[None, :]).ravel()
        uu, vv = np.repeat(us, thickness), np.repeat(vs, thickness)
        inside = (zs >= 0) & (zs < depth)
        zs, uu, vv = zs[inside], uu[inside], vv[inside]
        if zs.size == 0:
            continue
        win = tuple(
            slice(max(int(p.min()) - 1, 0), int(p.max()) + 2) for p in (zs, uu, vv)
        )  # every 2x2x2 cell the patch changes lies inside: the window's Euler change is the sheet's
        before = c[win] | patch[win]
        after = before.copy()
        after[zs - win[0].start, uu - win[1].start, vv - win[2].start] = True
        if euler_number(after, connectivity=1) >= euler_number(before, connectivity=1):
            patch[zs, uu, vv] = True
    patch &= ~c
    return np.moveaxis(patch, 0, axis) if patch.any() else None


def patch_holes(mask: np.ndarray, max_hole: int) -> np.ndarray:
    """Patch holes of up to ``max_hole`` pixels (in the projection) in every sheet; see the module docstring."""
    if max_hole <= 0 or not mask.any():
        return mask.copy()
    labels, n = cc3d.connected_components(np.ascontiguousarray(mask), connectivity=26, return_N=True)
    boxes = cc3d.statistics(labels)["bounding_boxes"]
    added = np.zeros_like(mask)
    for k in range(1, n + 1):
        box = boxes[k]
        patch = _sheet_patch(labels[box] == k, max_hole)
        if patch is not None:
            added[box] |= patch
    return add_without_joining(mask, added)
