"""Target-derived maps for the topology loss terms, as plain numpy functions (one sample, no batch axis).

Both maps are computed from integer labels ``0 = background, 1 = foreground, ignore_label = unlabeled``; any
other value (nnU-Net's padding value ``-1`` included) counts as background, exactly as nnU-Net's
``RemoveLabelTansform(-1, 0)`` does. The ignore label is set to background *before* the map is computed and the
map is zero on ignore voxels, so label 2 is never treated as foreground.

- :func:`compute_skeleton` — the medial surface of a sheet: a 2-D skeleton of every slice along the first axis
  (per z-slice, as the Vesuvius host did: a 3-D skeleton collapses a sheet to curves), optionally thickened into
  a tube.
- :func:`compute_band` — the boundary band weight of the boundary loss: 1 within ``inner`` voxels of the target
  boundary, falling linearly to 0 at ``outer`` voxels, from the exact Euclidean signed distance.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

from nnunetv2_topo import IGNORE_LABEL
from nnunetv2_topo.setting_checks import Param, band_pair, integer, non_negative

FOREGROUND_LABEL = 1

SKELETON_TUBE = Param(
    "skeleton_tube", "tube", 0, "int >= 0", "dilation (voxels) of the skeleton target for skeleton recall", integer,
    non_negative,
)  # fmt: skip
"""Parameter of the skeleton target (:func:`compute_skeleton`)."""

BOUNDARY_BAND = Param(
    "boundary_band", "band", (3.0, 5.0), "[float, float]", "boundary weight 1 within |d| <= inner, linear to 0 at "
    "outer", band_pair,
)  # fmt: skip
"""Parameter of the band target (:func:`compute_band`)."""


def foreground_mask(labels: np.ndarray, ignore_label: int | None = IGNORE_LABEL) -> np.ndarray:
    """Boolean foreground: label 1. Ignore, background, padding (-1) and anything else are False."""
    del ignore_label  # label 1 is the only foreground; the argument documents that ignore is excluded
    return np.asarray(labels) == FOREGROUND_LABEL


def valid_mask(labels: np.ndarray, ignore_label: int | None = IGNORE_LABEL) -> np.ndarray:
    """Boolean mask of annotated voxels (everything but ``ignore_label``)."""
    labels = np.asarray(labels)
    if ignore_label is None:
        return np.ones(labels.shape, dtype=bool)
    return labels != ignore_label


def _check_spatial(labels: np.ndarray, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(
            f"{name}: labels must be one sample's spatial array (Z, Y, X) or (Y, X), got shape {labels.shape}; "
            "loop over the batch and channel axes yourself"
        )
    return labels


def compute_skeleton(
    labels: np.ndarray, ignore_label: int | None = IGNORE_LABEL, tube: int = SKELETON_TUBE.default
) -> np.ndarray:
    """Medial-surface target of one sample: the 2-D skeleton of every slice along axis 0, as ``uint8`` 0/1.

    ``labels`` is ``(Z, Y, X)`` (each z-slice is skeletonised on its own) or ``(Y, X)``. Label ``ignore_label`` is
    set to background first. ``tube > 0`` dilates the skeleton within each slice by ``tube`` steps of a 3×3
    cross and keeps only foreground voxels, so the tube never leaves the sheet nor enters the ignore region.
    """
    labels = _check_spatial(labels, "compute_skeleton")
    tube = SKELETON_TUBE.checked(tube)
    fg = foreground_mask(labels, ignore_label)
    fg3 = fg[None] if fg.ndim == 2 else fg
    skel = np.zeros(fg3.shape, dtype=bool)
    for z in np.flatnonzero(fg3.reshape(fg3.shape[0], -1).any(axis=1)):
        skel[z] = skeletonize(fg3[z])
    if tube > 0 and skel.any():
        cross = ndimage.generate_binary_structure(2, 1)[None]  # (1, 3, 3): dilate within each slice only
        skel = ndimage.binary_dilation(skel, structure=cross, iterations=int(tube)) & fg3
    skel = skel[0] if fg.ndim == 2 else skel
    return skel.astype(np.uint8)


def _truncated_squared_distance(features: np.ndarray, radius: int) -> np.ndarray:
    """Squared Euclidean distance of every voxel to the nearest True voxel of ``features``, exact wherever it is
    ``<= radius**2``; every other voxel gets a value ``> radius**2`` (it is capped, never underestimated).

    Separable min-plus passes over a window of ``±radius`` per axis: a feature within distance ``radius`` differs
    by at most ``radius`` along every axis, so it is inside every window. About 10× faster than a full EDT here.
    """
    cap = (radius + 1) ** 2
    dtype = np.int16 if cap + radius**2 < np.iinfo(np.int16).max else np.int32
    d = np.where(features, dtype(0), dtype(cap))
    for axis in range(d.ndim):
        out = d.copy()
        for k in range(1, min(radius, d.shape[axis] - 1) + 1):
            k2 = dtype(k * k)
            hi = [slice(None)] * d.ndim
            lo = [slice(None)] * d.ndim
            hi[axis] = slice(k, None)
            lo[axis] = slice(None, -k)
            up, down = tuple(hi), tuple(lo)
            np.minimum(out[up], d[down] + k2, out=out[up])
            np.minimum(out[down], d[up] + k2, out=out[down])
        np.minimum(out, dtype(cap), out=out)
        d = out
    return d


def signed_distance(
    labels: np.ndarray, ignore_label: int | None = IGNORE_LABEL, max_distance: float = 5.0
) -> np.ndarray:
    """Signed Euclidean distance ``φ`` of one sample's target (ignore set to background), in voxels:
    ``+`` distance to the nearest foreground voxel outside, ``−`` distance to the nearest background voxel inside.

    Exact where ``|φ| <= max_distance`` (scipy's ``distance_transform_edt`` gives the same numbers there); farther
    voxels, and all voxels when the sample has no foreground (or no background), get ``±inf``.
    """
    labels = _check_spatial(labels, "signed_distance")
    fg = foreground_mask(labels, ignore_label)
    radius = int(math.floor(max_distance))
    out = np.full(fg.shape, np.inf, dtype=np.float32)
    if fg.any():
        d_out = _truncated_squared_distance(fg, radius)
        near = ~fg & (d_out <= max_distance**2)
        out[near] = np.sqrt(d_out[near])
    if (~fg).any():
        d_in = _truncated_squared_distance(~fg, radius)
        near = fg & (d_in <= max_distance**2)
        out[near] = -np.sqrt(d_in[near])
    out[fg & np.isinf(out)] = -np.inf
    return out


def compute_band(
    labels: np.ndarray, ignore_label: int | None = IGNORE_LABEL, band: tuple[float, float] = BOUNDARY_BAND.default
) -> np.ndarray:
    """Boundary-band weight of one sample, ``float32`` in [0, 1]: ``clip((outer − |φ|) / (outer − inner), 0, 1)``
    with ``φ`` the signed distance of the target (:func:`signed_distance`): 1 for ``|φ| <= inner``, linear to 0 at
    ``|φ| = outer``. Zero on ignore voxels and everywhere when the sample has no foreground/background boundary.
    """
    inner, outer = BOUNDARY_BAND.checked(band)
    phi = signed_distance(labels, ignore_label, outer)
    w = np.clip((outer - np.abs(phi)) / (outer - inner), 0.0, 1.0).astype(np.float32)
    w[~valid_mask(labels, ignore_label)] = 0.0
    return w
