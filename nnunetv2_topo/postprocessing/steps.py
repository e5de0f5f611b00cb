"""The post-processing pipeline: ``postprocess_volume(volume, PostprocessConfig())`` runs the steps in ``STEP_ORDER``.

Each step is a pure function on a boolean mask (modules ``components``, ``plugging``, ``height_map``, ``closing``);
none joins two 26-separated components. The order is fixed (the Vesuvius 1st place's order, with hysteresis as
the threshold step):

1. ``threshold``     ``p > threshold``; with ``hysteresis_high``: components of ``p > threshold`` holding a voxel
                     ``> hysteresis_high``. Integer/bool inputs: ``!= 0``.
2. ``remove_dust``   drop 26-connected components smaller than ``min_component_size``.
3. ``plug_holes``    1-voxel holes: the 2×2×2 watertight lookup table (``lut``), the axis test (``axis``) or both.
4. ``patch_holes``   height-map patches for holes up to ``patch_holes`` pixels per hole.
5. ``closing``       anisotropic closing with radii ``closing_radius`` = (z, yx) that never joins components.
6. ``fill_holes``    fill enclosed cavities.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.postprocessing.closing import separated_closing
from nnunetv2_topo.postprocessing.components import binarize, fill_cavities, hysteresis, remove_small_components
from nnunetv2_topo.postprocessing.height_map import patch_holes
from nnunetv2_topo.postprocessing.plugging import plug_holes_lut, plug_pinholes


class PostprocessConfigError(TopoError, ValueError):
    """A post-processing setting or ``postprocess.json`` that cannot be used (names the key, the value and the fix)."""


STEP_ORDER: tuple[str, ...] = ("threshold", "remove_dust", "plug_holes", "patch_holes", "closing", "fill_holes")
STEP_FIELDS: dict[str, tuple[str, ...]] = {
    "threshold": ("threshold", "hysteresis_high"),
    "remove_dust": ("min_component_size",),
    "plug_holes": ("plug_holes", "plug_method"),
    "patch_holes": ("patch_holes",),
    "closing": ("closing_radius",),
    "fill_holes": ("fill_holes",),
}
"""The :class:`PostprocessConfig` fields of each step, in ``STEP_ORDER`` (every field belongs to one step)."""
PLUG_METHODS = ("lut", "axis", "both")
MAX_CLOSING_RADIUS = 10


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class PostprocessConfig:
    """Post-processing options; the defaults are the measured best on simulated probability maps
    (``benchmarks/postprocess_ablation.py``, see benchmarks/results/postprocessing.md).

    threshold: foreground where ``p > threshold`` (the hysteresis low threshold when ``hysteresis_high`` is set).
    hysteresis_high: None = off; else keep only components of ``p > threshold`` that contain a voxel ``> high``.
    min_component_size: dust removal: drop 26-connected components with fewer voxels (0 = keep all).
    plug_holes: plug 1-voxel holes with ``plug_method``: ``lut`` (every 2×2×2 neighbourhood made 6-connected),
        ``axis`` (background voxels enclosed along two axes: pinholes in flat sheets) or ``both``.
    closing_radius: (z, yx) radii of an ellipsoid closing that never joins two components; (0, 0) = off.
    patch_holes: height-map patching of holes up to this many pixels (in the sheet's projection); 0 = off.
    fill_holes: fill enclosed cavities.
    """

    threshold: float = 0.3
    hysteresis_high: float | None = None
    min_component_size: int = 500
    plug_holes: bool = False
    plug_method: str = "lut"
    closing_radius: tuple[int, int] = (0, 0)
    patch_holes: int = 25
    fill_holes: bool = False

    def __post_init__(self) -> None:
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float, np.number)) or not 0 <= float(t) < 1:
            raise PostprocessConfigError(f"threshold must be a number in [0, 1), got {t!r}")
        object.__setattr__(self, "threshold", float(t))
        h = self.hysteresis_high
        if h is not None:
            if isinstance(h, bool) or not isinstance(h, (int, float, np.number)) or not math.isfinite(float(h)):
                raise PostprocessConfigError(f"hysteresis_high must be null/None or a number, got {h!r}")
            if not self.threshold < float(h) < 1:
                raise PostprocessConfigError(
                    f"hysteresis_high must lie between threshold ({self.threshold}) and 1, got {h!r}"
                )
            object.__setattr__(self, "hysteresis_high", float(h))
        for name in ("min_component_size", "patch_holes"):
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
                raise PostprocessConfigError(f"{name} must be an integer >= 0, got {v!r}")
            object.__setattr__(self, name, int(v))
        for name in ("plug_holes", "fill_holes"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise PostprocessConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
            object.__setattr__(self, name, bool(getattr(self, name)))
        if self.plug_method not in PLUG_METHODS:
            raise PostprocessConfigError(
                f"plug_method must be one of {', '.join(PLUG_METHODS)}, got {self.plug_method!r}"
            )
        r = self.closing_radius
        if (
            isinstance(r, (str, bytes))
            or not hasattr(r, "__len__")
            or len(r) != 2
            or not all(_is_int(v) and 0 <= v <= MAX_CLOSING_RADIUS for v in r)
        ):
            raise PostprocessConfigError(
                f"closing_radius must be two integers (z, yx) in 0..{MAX_CLOSING_RADIUS}, got {r!r}"
            )
        object.__setattr__(self, "closing_radius", (int(r[0]), int(r[1])))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``closing_radius`` as a list)."""
        d = dataclasses.asdict(self)
        d["closing_radius"] = list(self.closing_radius)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PostprocessConfig:
        """From a dict such as :meth:`to_dict` gives; missing keys take the defaults, unknown keys are refused."""
        if not isinstance(d, Mapping):
            raise PostprocessConfigError(f"post-processing steps must be a JSON object, got {type(d).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise PostprocessConfigError(
                f"unknown post-processing key(s) {', '.join(unknown)}; known keys: {', '.join(known)}"
            )
        return cls(**d)


def _threshold(volume: np.ndarray, config: PostprocessConfig) -> np.ndarray:
    if config.hysteresis_high is not None and np.issubdtype(volume.dtype, np.floating):
        return hysteresis(volume, config.threshold, config.hysteresis_high)
    return binarize(volume, config.threshold)


def _plug(mask: np.ndarray, method: str) -> np.ndarray:
    if method in ("lut", "both"):
        mask = plug_holes_lut(mask)
    if method in ("axis", "both"):
        mask = plug_pinholes(mask)
    return mask


def configured_steps(config: PostprocessConfig) -> list[tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """The steps ``config`` runs, in ``STEP_ORDER``, as ``(name, function)``: the first takes the volume, each
    later one the mask of the step before."""
    c = config
    steps = [
        ("threshold" + (" (hysteresis)" if c.hysteresis_high is not None else ""), lambda v: _threshold(v, c)),
        ("remove_dust", lambda m: remove_small_components(m, c.min_component_size)),
    ]
    if c.plug_holes:
        steps.append((f"plug_holes ({c.plug_method})", lambda m: _plug(m, c.plug_method)))
    if c.patch_holes:
        steps.append(("patch_holes", lambda m: patch_holes(m, c.patch_holes)))
    if c.closing_radius != (0, 0):
        steps.append(("closing", lambda m: separated_closing(m, c.closing_radius)))
    if c.fill_holes:
        steps.append(("fill_holes", fill_cavities))
    return steps


def postprocess_volume(
    volume: np.ndarray,
    config: PostprocessConfig = PostprocessConfig(),  # noqa: B008
    timings: list[tuple[str, float]] | None = None,
) -> np.ndarray:
    """Run the configured steps (:func:`configured_steps`) on one volume; returns a uint8 volume of 0/1.

    ``timings``, when given, receives ``(step name, seconds)`` for each step run (``benchmarks/postprocess_cost.py``).
    """
    mask = np.asarray(volume)
    for name, step in configured_steps(config):
        start = time.perf_counter()
        mask = step(mask)
        if timings is not None:
            timings.append((name, time.perf_counter() - start))
    return mask.astype(np.uint8)
