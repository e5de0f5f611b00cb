"""The post-processing steps, each a pure function on a boolean mask, and the pipeline that chains them.

Order: threshold -> remove components smaller than ``min_component_size`` (26-connectivity) -> plug 1-voxel holes
-> binary closing of each component on its own (never merges two components) -> optional cavity filling.
Defaults were chosen with ``benchmarks/postprocess_ablation.py`` (see .notes/metric_readme.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import cc3d
import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class PostprocessConfig:
    """Post-processing options (defaults = the measured best on synthetic predictions).

    threshold: float inputs are foreground where ``value > threshold`` (probabilities); integer and bool
        inputs where ``value != 0``.
    hysteresis_high: None = off; else keep only the components of ``value > threshold`` holding a voxel > it.
    min_component_size: drop 26-connected components with fewer voxels (0 = keep all).
    plug_holes: fill background voxels whose two face neighbours are foreground along at least two axes
        (a 1-voxel pinhole in a sheet of any orientation; never thickens a sheet or bridges two sheets).
    closing_radius: radius of a ball for a binary closing applied to each component separately (0 = off);
        closes small gaps and dents inside a sheet but cannot join different components.
    fill_holes: fill enclosed cavities (background not connected to the volume border).
    """

    threshold: float = 0.5
    hysteresis_high: float | None = None
    min_component_size: int = 64
    plug_holes: bool = True
    closing_radius: int = 0
    fill_holes: bool = False

    def __post_init__(self) -> None:
        if not np.isfinite(self.threshold):
            raise ValueError(f"threshold must be a finite number, got {self.threshold}")
        if int(self.min_component_size) != self.min_component_size or self.min_component_size < 0:
            raise ValueError(f"min_component_size must be an integer >= 0, got {self.min_component_size}")
        if int(self.closing_radius) != self.closing_radius or not 0 <= self.closing_radius <= 10:
            raise ValueError(f"closing_radius must be an integer in 0..10, got {self.closing_radius}")
        if self.hysteresis_high is not None and not self.threshold < self.hysteresis_high:
            raise ValueError(f"hysteresis_high must be None or > threshold, got {self.hysteresis_high}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PostprocessConfig:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown post-processing key(s) {', '.join(unknown)}")
        return cls(**d)


STEP_ORDER: tuple[str, ...] = (
    "threshold",
    "hysteresis_high",
    "min_component_size",
    "plug_holes",
    "closing_radius",
    "fill_holes",
)


def binarize(volume: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Foreground mask: ``> threshold`` for float volumes (NaN = background), ``!= 0`` otherwise."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {volume.shape}")
    if np.issubdtype(volume.dtype, np.floating):
        with np.errstate(invalid="ignore"):
            return volume > threshold
    return volume != 0


def remove_small_components(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Drop 26-connected components with fewer than ``min_size`` voxels."""
    if min_size <= 1 or not mask.any():
        return mask.copy()
    labels = cc3d.connected_components(np.ascontiguousarray(mask), connectivity=26)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def plug_pinholes(mask: np.ndarray) -> np.ndarray:
    """Fill background voxels enclosed by foreground face neighbours along two or more axes."""
    padded = np.pad(mask, 1)
    core = (slice(1, -1),) * 3
    enclosed_axes = np.zeros(mask.shape, np.uint8)
    for axis in range(3):
        lo = list(core)
        hi = list(core)
        lo[axis] = slice(0, -2)
        hi[axis] = slice(2, None)
        enclosed_axes += padded[tuple(lo)] & padded[tuple(hi)]
    return mask | (enclosed_axes >= 2)


def _ball(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    z, y, x = np.meshgrid(r, r, r, indexing="ij")
    return z * z + y * y + x * x <= radius * radius


def separated_closing(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary closing with a ball of ``radius`` that never joins two components.

    The voxels a closing adds are grouped into 26-connected patches; a patch is kept only if every component of
    ``mask`` it touches (26-neighbourhood) is the same one, so gaps inside a sheet close while two sheets, however
    near, stay apart.
    """
    if radius <= 0 or not mask.any():
        return mask.copy()
    core = (slice(radius, -radius),) * 3
    closed = ndimage.binary_closing(np.pad(mask, radius), _ball(radius))[core]
    added = closed & ~mask
    if not added.any():
        return mask.copy()
    labels, n = cc3d.connected_components(np.ascontiguousarray(mask), connectivity=26, return_N=True)
    labels = labels.astype(np.int64)
    touch_hi = ndimage.maximum_filter(labels, size=3, mode="constant", cval=0)
    touch_lo = ndimage.minimum_filter(np.where(labels == 0, n + 1, labels), size=3, mode="constant", cval=n + 1)
    patches, m = cc3d.connected_components(added, connectivity=26, return_N=True)
    index = np.arange(1, m + 1)
    hi = np.asarray(ndimage.maximum(touch_hi, patches, index))
    lo = np.asarray(ndimage.minimum(touch_lo, patches, index))
    keep = np.zeros(m + 1, bool)
    keep[1:] = (hi == lo) | (hi == 0)
    return mask | keep[patches]


def fill_cavities(mask: np.ndarray) -> np.ndarray:
    """Fill background regions that do not reach the volume border (3-D cavities)."""
    return ndimage.binary_fill_holes(mask)


def postprocess_volume(volume: np.ndarray, config: PostprocessConfig = PostprocessConfig()) -> np.ndarray:  # noqa: B008
    """Run the configured steps on one volume; returns a uint8 volume of 0/1."""
    mask = binarize(volume, config.threshold)
    if config.hysteresis_high is not None and np.issubdtype(np.asarray(volume).dtype, np.floating):
        labels = cc3d.connected_components(np.ascontiguousarray(mask), connectivity=26)
        seeds = np.unique(labels[binarize(volume, config.hysteresis_high)])
        mask = np.isin(labels, seeds[seeds > 0])
    mask = remove_small_components(mask, int(config.min_component_size))
    if config.plug_holes:
        mask = plug_pinholes(mask)
    if config.closing_radius:
        mask = separated_closing(mask, int(config.closing_radius))
    if config.fill_holes:
        mask = fill_cavities(mask)
    return mask.astype(np.uint8)
