"""Component-level mask operations: binarize, hysteresis, dust removal, cavity filling, and the join guard.

Components are 26-connected (as the metric's VOI counts them). :func:`add_without_joining` is the guard every
step that adds voxels goes through: no step may join two 26-separated components.
"""

from __future__ import annotations

import itertools

import cc3d
import numpy as np

_OFFSETS_26 = [o for o in itertools.product((-1, 0, 1), repeat=3) if o != (0, 0, 0)]


def binarize(volume: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Foreground mask: ``> threshold`` for float volumes (NaN = background), ``!= 0`` otherwise."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {volume.shape}")
    if np.issubdtype(volume.dtype, np.floating):
        with np.errstate(invalid="ignore"):
            return volume > threshold
    return volume != 0


def hysteresis(probability: np.ndarray, low: float, high: float) -> np.ndarray:
    """Components (26-connected) of ``p > low`` that contain at least one voxel with ``p > high``."""
    if not low < high:
        raise ValueError(f"hysteresis needs low < high, got low={low}, high={high}")
    candidate = binarize(probability, low)
    if not candidate.any():
        return candidate
    labels = cc3d.connected_components(candidate, connectivity=26)
    keep = np.zeros(int(labels.max()) + 1, bool)
    with np.errstate(invalid="ignore"):
        keep[np.unique(labels[probability > high])] = True
    keep[0] = False
    return keep[labels]


def remove_small_components(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Drop 26-connected components with fewer than ``min_size`` voxels."""
    if min_size <= 1 or not mask.any():
        return mask.copy()
    labels = cc3d.connected_components(np.ascontiguousarray(mask), connectivity=26)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def add_without_joining(mask: np.ndarray, added: np.ndarray) -> np.ndarray:
    """``mask`` plus the voxels of ``added`` that join no two components of ``mask``.

    ``added & ~mask`` is split into 26-connected patches; a patch is kept when the components of ``mask`` it
    touches (26-neighbourhood) are at most one, so components may grow (or a new one appear) but never merge.
    """
    added = added & ~mask
    if not added.any():
        return mask.copy()
    labels = cc3d.connected_components(np.ascontiguousarray(mask), connectivity=26)
    big = np.iinfo(labels.dtype).max
    padded = np.pad(labels, 1)
    coords = np.nonzero(added)
    hi = np.zeros(coords[0].size, labels.dtype)
    lo = np.full(coords[0].size, big, labels.dtype)
    for dz, dy, dx in _OFFSETS_26:
        v = padded[coords[0] + 1 + dz, coords[1] + 1 + dy, coords[2] + 1 + dx]
        np.maximum(hi, v, out=hi)
        np.minimum(lo, np.where(v == 0, big, v), out=lo)
    patches = cc3d.connected_components(added, connectivity=26)
    pid = patches[coords].astype(np.int64)
    n = int(pid.max()) + 1
    patch_hi = np.zeros(n, labels.dtype)
    patch_lo = np.full(n, big, labels.dtype)
    np.maximum.at(patch_hi, pid, hi)
    np.minimum.at(patch_lo, pid, lo)
    ok = (patch_hi == 0) | (patch_hi == patch_lo)
    keep = ok[pid]
    out = mask.copy()
    out[tuple(c[keep] for c in coords)] = True
    return out


def fill_cavities(mask: np.ndarray) -> np.ndarray:
    """Fill background regions that are not 26-connected to the volume border (the metric's H2 cavities).

    A cavity enclosed by two different components together is left open (filling it would join them).
    """
    background = cc3d.connected_components(np.ascontiguousarray(~mask), connectivity=26)
    faces = [
        background[0],
        background[-1],
        background[:, 0],
        background[:, -1],
        background[:, :, 0],
        background[:, :, -1],
    ]
    reaches_border = np.zeros(int(background.max()) + 1, bool)
    for face in faces:
        reaches_border[np.unique(face)] = True
    cavity = ~reaches_border
    cavity[0] = False  # label 0 = the foreground itself
    return add_without_joining(mask, cavity[background])
