"""Seeded random pairs of binary tiles in the families of the Betti-matching rules' reference checks.

First tile: iid noise, blurred blobs, wavy sheets with holes, solids with cavities and handles, empty or full.
Second tile: voxel flips, dilation or erosion, a shift, or an independent draw. Both optionally transposed.
Used by ``tests/test_metric_rules.py`` (small tiles) and ``benchmarks/metric_rules.py`` (larger runs).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FIRST = ("noise", "blobs", "sheets", "cavities", "empty", "full")
SECOND = ("flip", "dilate", "erode", "shift", "independent")


def _sheets(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    axis = int(rng.integers(3))
    grid = np.indices(shape, dtype=float)
    other = [a for a in range(3) if a != axis]
    wave = rng.uniform(0.5, 2.0) * np.sin(grid[other[0]] * rng.uniform(0.2, 0.9) + rng.uniform(0, 6))
    wave += rng.uniform(0.0, 1.5) * np.cos(grid[other[1]] * rng.uniform(0.2, 0.9))
    n = shape[axis]
    out = np.zeros(shape, bool)
    for _ in range(int(rng.integers(1, 4))):
        centre = rng.uniform(0, n)
        out |= np.abs(grid[axis] - centre - wave) < rng.uniform(0.5, 1.5)
    for _ in range(int(rng.integers(0, 4))):  # holes through the sheets
        c = [int(rng.integers(s)) for s in shape]
        r = int(rng.integers(1, 3))
        out[tuple(slice(max(ci - r, 0), ci + r) for ci in c)] = False
    return out


def _cavities(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, bool)
    lo = [int(rng.integers(0, max(s // 4, 1))) for s in shape]
    hi = [max(int(s - rng.integers(0, max(s // 4, 1))), lo_i + 1) for s, lo_i in zip(shape, lo, strict=True)]
    out[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    for _ in range(int(rng.integers(1, 6))):  # cavities: single voxels or small boxes inside
        c = [int(rng.integers(s)) for s in shape]
        r = int(rng.integers(0, 2))
        out[tuple(slice(max(ci - r, 0), ci + r + 1) for ci in c)] = False
    for _ in range(int(rng.integers(0, 3))):  # handles: tunnels drilled along an axis
        axis = int(rng.integers(3))
        c = [int(rng.integers(s)) for s in shape]
        idx = [slice(ci, ci + 1) for ci in c]
        idx[axis] = slice(None)
        out[tuple(idx)] = False
    return out


def first_tile(rng: np.random.Generator, shape: tuple[int, ...], family: str) -> np.ndarray:
    """One tile of ``family`` (one of :data:`FIRST`)."""
    if family == "noise":
        return rng.random(shape) < rng.uniform(0.2, 0.8)
    if family == "blobs":
        field = ndimage.gaussian_filter(rng.random(shape), rng.uniform(0.5, 2.0))
        return field > np.quantile(field, rng.uniform(0.3, 0.8))
    if family == "sheets":
        return _sheets(rng, shape)
    if family == "cavities":
        return _cavities(rng, shape)
    if family == "empty":
        return np.zeros(shape, bool)
    if family == "full":
        return np.ones(shape, bool)
    raise ValueError(f"unknown first-tile family {family!r}; choose from {FIRST}")


def second_tile(rng: np.random.Generator, first: np.ndarray, family: str, first_family: str) -> np.ndarray:
    """The second tile of a pair made from ``first`` by ``family`` (one of :data:`SECOND`)."""
    if family == "flip":
        return first ^ (rng.random(first.shape) < rng.uniform(0.01, 0.15))
    if family in ("dilate", "erode"):
        structure = ndimage.generate_binary_structure(3, int(rng.integers(1, 4)))
        op = ndimage.binary_dilation if family == "dilate" else ndimage.binary_erosion
        return op(first, structure)
    if family == "shift":
        return np.roll(first, int(rng.choice([-2, -1, 1, 2])), axis=int(rng.integers(3)))
    if family == "independent":
        return first_tile(rng, first.shape, first_family if rng.random() < 0.5 else str(rng.choice(FIRST[:4])))
    raise ValueError(f"unknown second-tile family {family!r}; choose from {SECOND}")


def random_shape(rng: np.random.Generator, low: int, high: int) -> tuple[int, int, int]:
    """Sizes in [low, high] per axis (cubic one time in four); one axis of length 1 or 2 one time in eight."""
    if rng.random() < 0.25:
        shape = [int(rng.integers(low, high + 1))] * 3
    else:
        shape = [int(rng.integers(low, high + 1)) for _ in range(3)]
    if rng.random() < 0.125:
        shape[int(rng.integers(3))] = int(rng.integers(1, 3))
    return tuple(shape)


def random_pair(rng: np.random.Generator, low: int = 4, high: int = 16) -> tuple[np.ndarray, np.ndarray, str]:
    """``(pred, gt, "first/second[/T]")``: a seeded pair of boolean tiles (C-contiguous)."""
    shape = random_shape(rng, low, high)
    f1 = str(rng.choice(FIRST, p=[0.2, 0.25, 0.25, 0.2, 0.05, 0.05]))
    f2 = str(rng.choice(SECOND))
    a = first_tile(rng, shape, f1)
    b = second_tile(rng, a, f2, f1)
    name = f"{f1}/{f2}"
    if rng.random() < 0.5:
        a, b = b, a
        name += "/swapped"
    if rng.random() < 0.3:
        order = tuple(int(i) for i in rng.permutation(3))
        a, b = a.transpose(order), b.transpose(order)
        name += "/T"
    return np.ascontiguousarray(a), np.ascontiguousarray(b), name
