"""Simulated foreground probability maps of synthetic cases, with the failure modes of a real network's output.

One simulator for the post-processing benchmarks (``benchmarks/postprocess_ablation.py``,
``benchmarks/postprocess_cost.py``, ``benchmarks/tune_gain.py``) and the tests. Ground truth: a synthetic case of
:mod:`nnunetv2_topo.synth` (its ``label``; the map is made from *all* of its ``sheets``, annotated or not, as a
network sees them). The map, built in this order:

- **confidence per sheet**: each sheet gets a level (``sheet_level``) plus a smooth spatial variation
  (``confidence_wobble``), so confidence drifts along a sheet as it does in a network's output;
- **under-confident thin sheets**: a share (``under_confident_fraction``) of the sheets sits at
  ``under_confident_level`` instead, around or below 0.5: the argmax drops them, or parts of them;
- **halo**: the voxels next to a sheet get a faint probability (``halo_level``): a low threshold thickens the
  sheets (SurfaceDice barely changes, VOI and TopoScore do);
- **weak bridges between near-touching sheets**: where two different sheets come within ``bridge_distance``
  voxels, spots of ``bridge_level`` fill the gap: a low threshold merges the sheets (VOI merge, H0/H1 errors);
- **holes**: discs of ``hole_radius`` through one sheet (along the stacking axis), probability scaled by
  ``hole_factor``: the sheet gets a tunnel unless the hole is patched;
- **pinholes**: single voxel columns through the sheets, scaled by ``pinhole_factor``: 1-voxel tunnels;
- **dust**: confident blobs (``dust_level``) of 1 to ``dust_max_side``³ voxels away from the sheets: extra
  components (H0 and VOI split) unless removed by size;
- **noise**: spatially correlated noise of amplitude ``noise``;
- **calibration**: finally ``p' = sigmoid(calibration_scale · logit(p) + calibration_shift)``: the same model
  over-confident (shift > 0: the halo and bridges rise above common thresholds) or under-confident (shift < 0:
  sheets sink below them), so the best threshold moves with the model, as it does between real models.

``CALIBRATIONS`` names three such models; :func:`simulated_case` gives ``(probability, label)`` for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from nnunetv2_topo.synth.generator import synthesize_case


@dataclass(frozen=True)
class FailureModes:
    """How a simulated probability map departs from the true sheets (see the module docstring)."""

    sheet_level: tuple[float, float] = (0.55, 0.95)
    confidence_wobble: float = 0.25
    under_confident_fraction: float = 0.35
    under_confident_level: tuple[float, float] = (0.38, 0.55)
    halo_level: tuple[float, float] = (0.1, 0.3)
    bridge_distance: int = 2
    bridge_level: tuple[float, float] = (0.45, 0.7)
    holes_per_voxel_of_side: float = 1 / 12
    hole_radius: tuple[float, float] = (2.0, 5.0)
    hole_factor: tuple[float, float] = (0.1, 0.5)
    pinholes_per_voxel_of_side: float = 1 / 2
    pinhole_factor: float = 0.2
    dust_per_voxel_of_side: float = 1 / 3
    dust_max_side: int = 8
    dust_level: tuple[float, float] = (0.55, 0.95)
    noise: float = 0.08
    calibration_scale: float = 1.0
    calibration_shift: float = 0.0


CALIBRATIONS: dict[str, FailureModes] = {
    "nominal": FailureModes(),
    "over-confident": FailureModes(calibration_shift=1.5),
    "under-confident": FailureModes(calibration_shift=-1.2),
}
"""Three models with the same failure modes and different calibration (their best thresholds differ)."""

ENSEMBLE_MODELS: dict[str, FailureModes] = {
    "good": FailureModes(),
    "good-other": FailureModes(calibration_shift=1.0),
    "weak": FailureModes(
        sheet_level=(0.45, 0.8),
        under_confident_fraction=0.6,
        holes_per_voxel_of_side=1 / 4,
        pinholes_per_voxel_of_side=2.0,
        dust_per_voxel_of_side=1.5,
        bridge_level=(0.55, 0.85),
        noise=0.2,
        calibration_shift=0.5,
    ),
}
"""Three models of one case for ensemble tuning: a good one; one as good with independent errors (its own draw of
holes, dust, bridges, noise) and another calibration; a weak one (more under-confident sheets, holes, pinholes,
dust, stronger bridges and noise)."""


def _smooth(shape: tuple[int, ...], rng: np.random.Generator, sigma: float) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return f / (np.abs(f).max() + 1e-6)


def _calibrate(p: np.ndarray, scale: float, shift: float) -> np.ndarray:
    if scale == 1.0 and shift == 0.0:
        return p
    q = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    logit = scale * (np.log(q) - np.log1p(-q)) + shift
    return (0.5 * (1.0 + np.tanh(0.5 * logit))).astype(np.float32)


def simulate_probability(
    sheets: np.ndarray, sheet_axis: int, rng: np.random.Generator, modes: FailureModes | None = None
) -> np.ndarray:
    """float32 foreground probability map in [0, 1] of ``sheets`` (0 = none, k = sheet k), stacked along
    ``sheet_axis``, with the failure modes of ``modes`` (default ``FailureModes()``)."""
    modes = FailureModes() if modes is None else modes
    shape = sheets.shape
    size = min(shape)
    n = int(sheets.max())
    fg = sheets > 0
    level = rng.uniform(*modes.sheet_level, n + 1)
    under = rng.random(n + 1) < modes.under_confident_fraction
    level[under] = rng.uniform(*modes.under_confident_level, int(under.sum()))
    conf = level[sheets] + modes.confidence_wobble * _smooth(shape, rng, 6.0)
    p = np.where(fg, conf, 0.0).astype(np.float32)
    halo = ndimage.binary_dilation(fg) & ~fg
    p[halo] = rng.uniform(*modes.halo_level) * (1 + 0.5 * _smooth(shape, rng, 4.0)[halo])
    # weak bridges: gap voxels within bridge_distance of two different sheets
    near = np.zeros(shape, np.uint16)
    both = np.zeros(shape, bool)
    for k in range(1, n + 1):
        grown = ndimage.binary_dilation(sheets == k, iterations=modes.bridge_distance)
        both |= grown & (near > 0) & (near != k)
        near[grown & (near == 0)] = k
    spots = both & ~fg & (_smooth(shape, rng, 2.0) > 0.35)
    p[spots] = np.maximum(p[spots], rng.uniform(*modes.bridge_level, int(spots.sum())))
    # holes and pinholes: columns along the stacking axis
    plane = [s for a, s in enumerate(shape) if a != sheet_axis]
    yy, xx = np.ogrid[: plane[0], : plane[1]]
    for _ in range(int(size * modes.holes_per_voxel_of_side)):
        cy, cx = rng.integers(0, plane[0]), rng.integers(0, plane[1])
        r = rng.uniform(*modes.hole_radius)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        column = np.expand_dims(disc, sheet_axis) & (sheets == rng.integers(1, n + 1))
        p[column] *= rng.uniform(*modes.hole_factor)
    for _ in range(int(size * modes.pinholes_per_voxel_of_side)):
        dot = np.zeros(plane, bool)
        dot[rng.integers(0, plane[0]), rng.integers(0, plane[1])] = True
        p[np.expand_dims(dot, sheet_axis) & fg] *= modes.pinhole_factor
    # dust: confident blobs away from the sheets
    free = ~ndimage.binary_dilation(fg, iterations=3)
    top = max(1, size - modes.dust_max_side)
    for z, y, x in rng.integers(0, top, (int(size * modes.dust_per_voxel_of_side), 3)):
        s = rng.integers(1, modes.dust_max_side + 1, 3)
        box = (slice(z, z + s[0]), slice(y, y + s[1]), slice(x, x + s[2]))
        p[box] = np.where(free[box], rng.uniform(*modes.dust_level), p[box])
    p += modes.noise * _smooth(shape, rng, 1.0)
    p = np.clip(p, 0, 1).astype(np.float32)
    return _calibrate(p, modes.calibration_scale, modes.calibration_shift)


def simulated_case(
    size: int | tuple[int, int, int], seed: int | tuple[int, ...], modes: FailureModes | str = "nominal"
) -> tuple[np.ndarray, np.ndarray]:
    """``(foreground probability float32, label uint8)`` of one synthetic case; ``modes`` or a
    ``CALIBRATIONS`` name. Same ``seed``, same case; the label does not depend on ``modes``."""
    if isinstance(modes, str):
        if modes not in CALIBRATIONS:
            raise ValueError(f"unknown calibration {modes!r}; known: {', '.join(CALIBRATIONS)}")
        modes = CALIBRATIONS[modes]
    shape = (size, size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    case = synthesize_case(shape, rng)
    return simulate_probability(case.sheets, case.sheet_axis, rng, modes), case.label


def simulated_models(
    size: int | tuple[int, int, int], seed: int | tuple[int, ...], models: list[FailureModes | str]
) -> tuple[list[np.ndarray], np.ndarray]:
    """``([probability of each model], label)`` of one synthetic case: the models see the same sheets, each with
    its own failure modes (a ``CALIBRATIONS`` or ``ENSEMBLE_MODELS`` name, or ``FailureModes``) and its own random
    draw of them (independent errors). Same ``seed``, same case and maps."""
    named = {**CALIBRATIONS, **ENSEMBLE_MODELS}
    for m in models:
        if isinstance(m, str) and m not in named:
            raise ValueError(f"unknown model {m!r}; known: {', '.join(named)}")
    shape = (size, size, size) if isinstance(size, int) else size
    seeds = (seed,) if isinstance(seed, int) else tuple(seed)
    case = synthesize_case(shape, np.random.default_rng(seeds))
    maps = [
        simulate_probability(
            case.sheets,
            case.sheet_axis,
            np.random.default_rng((*seeds, 1000 + k)),
            named[m] if isinstance(m, str) else m,
        )
        for k, m in enumerate(models)
    ]
    return maps, case.label
