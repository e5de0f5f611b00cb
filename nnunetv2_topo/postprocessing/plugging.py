"""Plugging 1-voxel holes: the 2×2×2 watertight lookup table, and the older axis test.

The metric's foreground is 6-connected, so two foreground voxels that touch only at an edge or a corner are
separate components with a background leak between them (a tunnel through a thin tilted sheet). The lookup table
lists, for each of the 256 configurations of a 2×2×2 neighbourhood, the fewest voxels to add so that the
neighbourhood's foreground is 6-connected; applying it everywhere (until nothing changes) makes every
neighbourhood 6-connected watertight. It never joins two 26-separated components (all voxels of a 2×2×2
neighbourhood are 26-neighbours; added voxels also pass :func:`add_without_joining`).
"""

from __future__ import annotations

import itertools

import numpy as np

from nnunetv2_topo.postprocessing.components import add_without_joining

# voxel i of a 2x2x2 neighbourhood sits at (i >> 2 & 1, i >> 1 & 1, i & 1); 6-neighbours differ in one bit
_CUBE = [(i >> 2 & 1, i >> 1 & 1, i & 1) for i in range(8)]
_MAX_PASSES = 8


def _six_connected(code: int) -> bool:
    voxels = [i for i in range(8) if code >> i & 1]
    if len(voxels) <= 1:
        return True
    seen, stack = {voxels[0]}, [voxels[0]]
    while stack:
        i = stack.pop()
        for bit in (1, 2, 4):
            j = i ^ bit
            if code >> j & 1 and j not in seen:
                seen.add(j)
                stack.append(j)
    return len(seen) == len(voxels)


def _build_watertight_lut() -> np.ndarray:
    """``lut[code]`` = bit mask of the fewest voxels to add (first in index order) to make ``code`` 6-connected."""
    lut = np.zeros(256, np.uint8)
    for code in range(256):
        if _six_connected(code):
            continue
        background = [i for i in range(8) if not code >> i & 1]
        for k in range(1, len(background) + 1):
            extra = next(
                (
                    sum(1 << i for i in c)
                    for c in itertools.combinations(background, k)
                    if _six_connected(code | sum(1 << i for i in c))
                ),
                None,
            )
            if extra is not None:
                lut[code] = extra
                break
    return lut


WATERTIGHT_LUT = _build_watertight_lut()


def _lut_additions(padded: np.ndarray) -> np.ndarray:
    z, y, x = (s - 1 for s in padded.shape)
    code = np.zeros((z, y, x), np.uint8)
    for i, (a, b, c) in enumerate(_CUBE):
        code |= padded[a : a + z, b : b + y, c : c + x].view(np.uint8) << np.uint8(i)
    add = WATERTIGHT_LUT[code]
    out = np.zeros_like(padded)
    for i, (a, b, c) in enumerate(_CUBE):
        out[a : a + z, b : b + y, c : c + x] |= (add >> np.uint8(i) & np.uint8(1)).view(bool)
    return out & ~padded


def plug_holes_lut(mask: np.ndarray) -> np.ndarray:
    """Make every 2×2×2 neighbourhood's foreground 6-connected (see the module docstring)."""
    padded = np.pad(np.ascontiguousarray(mask, bool), 1)
    core = (slice(1, -1),) * 3
    for _ in range(_MAX_PASSES):
        add = _lut_additions(padded)
        add[0] = add[-1] = False
        add[:, 0] = add[:, -1] = False
        add[:, :, 0] = add[:, :, -1] = False
        if not add.any():
            break
        padded |= add
    return add_without_joining(mask, padded[core])


def plug_pinholes(mask: np.ndarray) -> np.ndarray:
    """Axis test: fill background voxels whose two face neighbours are foreground along two or more axes.

    Plugs a 1-voxel hole in a flat sheet of any orientation (which the lookup table leaves open: its
    neighbourhoods are already 6-connected); never thickens a flat sheet or bridges two sheets.
    """
    padded = np.pad(mask, 1)
    core = (slice(1, -1),) * 3
    enclosed_axes = np.zeros(mask.shape, np.uint8)
    for axis in range(3):
        lo = list(core)
        hi = list(core)
        lo[axis] = slice(0, -2)
        hi[axis] = slice(2, None)
        enclosed_axes += padded[tuple(lo)] & padded[tuple(hi)]
    return add_without_joining(mask, mask | (enclosed_axes >= 2))
