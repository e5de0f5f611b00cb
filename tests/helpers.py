"""Shared test data and independent references (not a test module)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

IGNORE = 2


def scipy_band(lab: np.ndarray, inner: float = 3.0, outer: float = 5.0, ignore: int = IGNORE) -> np.ndarray:
    """Independent reference of the boundary band: scipy's exact EDT inside and outside the foreground (ignore →
    background), ``clip((outer − |φ|) / (outer − inner), 0, 1)``, 0 on ignore voxels and without a boundary."""
    fg = lab == 1
    if fg.all() or not fg.any():
        w = np.zeros(lab.shape)
    else:
        phi = np.where(fg, -ndimage.distance_transform_edt(fg), ndimage.distance_transform_edt(~fg))
        w = np.clip((outer - np.abs(phi)) / (outer - inner), 0, 1)
    w[lab == ignore] = 0
    return w
