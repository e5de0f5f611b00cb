"""Binary closing with anisotropic radii (z, yx) that never joins two components."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from nnunetv2_topo.postprocessing.components import add_without_joining


def ellipsoid(radius_z: int, radius_yx: int) -> np.ndarray:
    """Boolean structuring element: ``(z/rz)² + (r/ryx)² <= 1``; a zero radius gives no extent on that axis."""
    z = np.arange(-radius_z, radius_z + 1, dtype=float)[:, None, None]
    yx = np.arange(-radius_yx, radius_yx + 1, dtype=float)
    y, x = yx[None, :, None], yx[None, None, :]
    dz = (z / radius_z) ** 2 if radius_z else z * 0
    dyx = (y * y + x * x) / radius_yx**2 if radius_yx else y * 0 + x * 0
    return (dz + dyx) <= 1 + 1e-9


def separated_closing(mask: np.ndarray, radius: tuple[int, int]) -> np.ndarray:
    """Closing with an ellipsoid of radii ``(z, yx)`` whose added voxels never join two components.

    The closing runs on the mask's bounding box; the voxels it adds pass :func:`add_without_joining`, so gaps
    and dents inside a sheet close while two sheets, however near, stay apart.
    """
    rz, ryx = (int(r) for r in radius)
    if (rz == 0 and ryx == 0) or not mask.any():
        return mask.copy()
    nz = np.nonzero(mask.any(axis=(1, 2)))[0]
    ny = np.nonzero(mask.any(axis=(0, 2)))[0]
    nx = np.nonzero(mask.any(axis=(0, 1)))[0]
    box = (slice(nz[0], nz[-1] + 1), slice(ny[0], ny[-1] + 1), slice(nx[0], nx[-1] + 1))
    pad = ((rz, rz), (ryx, ryx), (ryx, ryx))
    crop = np.pad(mask[box], pad)
    closed = ndimage.binary_closing(crop, ellipsoid(rz, ryx))
    closed = closed[rz : closed.shape[0] - rz, ryx : closed.shape[1] - ryx, ryx : closed.shape[2] - ryx]
    added = np.zeros_like(mask)
    added[box] = closed
    return add_without_joining(mask, added)
