"""The one global sliding-window grid of a volume, and which of its tiles each output chunk needs.

Frames: the *image* frame is the volume as read (Z, Y, X, after ``--bbox``); nnU-Net's preprocessing crops it to the
nonzero bounding box ``crop``, transposes it by the plans' ``transpose_forward`` and pads it (centred, with zeros
after normalisation) up to the patch size where it is smaller: that is the *t* frame, where nnU-Net's predictor lays
its tiles (``compute_steps_for_sliding_window``, in its own nested order). A chunk of the output (an image-frame box)
maps to a t-frame box; every tile that overlaps it is predicted and blended over the union of those tiles, so each of
the chunk's voxels receives exactly the tiles (and in the same order) that a prediction of the whole volume gives it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

Box = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Geometry:
    shape: tuple[int, ...]  # image frame (Z, Y, X)
    crop: Box  # nonzero bounding box, image frame, half-open
    transpose: tuple[int, ...]  # plans' transpose_forward
    patch: tuple[int, ...]  # t frame
    step: float = 0.5

    @property
    def cropped_t(self) -> tuple[int, ...]:
        return tuple(self.crop[a][1] - self.crop[a][0] for a in self.transpose)

    @property
    def padded_t(self) -> tuple[int, ...]:
        return tuple(max(s, p) for s, p in zip(self.cropped_t, self.patch, strict=True))

    @property
    def pad_below(self) -> tuple[int, ...]:
        return tuple((p - s) // 2 for s, p in zip(self.cropped_t, self.padded_t, strict=True))

    @cached_property
    def steps(self) -> list[list[int]]:
        from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

        return compute_steps_for_sliding_window(self.padded_t, self.patch, self.step)

    @property
    def n_tiles(self) -> int:
        n = 1
        for s in self.steps:
            n *= len(s)
        return n

    def to_dict(self) -> dict:
        return {
            "shape": list(self.shape),
            "crop": [list(c) for c in self.crop],
            "transpose": list(self.transpose),
            "patch": list(self.patch),
            "step": self.step,
        }

    def t_box(self, image_box: Box) -> Box | None:
        """The t-frame box of an image-frame box (its part inside the crop); None when it lies outside the crop."""
        inner = []
        for (lo, hi), (clo, chi) in zip(image_box, self.crop, strict=True):
            lo, hi = max(lo, clo), min(hi, chi)
            if lo >= hi:
                return None
            inner.append((lo - clo, hi - clo))
        return tuple((inner[a][0] + pb, inner[a][1] + pb) for a, pb in zip(self.transpose, self.pad_below, strict=True))

    def tiles(self, t_box: Box) -> list[tuple[int, ...]]:
        """Start corners of the tiles that overlap ``t_box``, in nnU-Net's order (nested over t dims 0, 1, 2)."""
        per_dim = [
            [s for s in steps if s < hi and s + p > lo]
            for steps, (lo, hi), p in zip(self.steps, t_box, self.patch, strict=True)
        ]
        return list(itertools.product(*per_dim))

    def region(self, tiles: Sequence[tuple[int, ...]]) -> Box:
        """The t-frame union box of ``tiles``."""
        return tuple((min(t[d] for t in tiles), max(t[d] for t in tiles) + self.patch[d]) for d in range(3))

    def image_source(self, t_region: Box) -> tuple[Box, Box]:
        """For a t-frame region: (the image-frame box of real voxels it holds, where they lie inside the region in
        the t frame); the rest of the region is padding (0 after normalisation)."""
        within: list[tuple[int, int]] = []
        img: list[tuple[int, int]] = [(0, 0)] * 3  # every axis is set below (transpose is a permutation)
        for k, ((lo, hi), pb, n) in enumerate(zip(t_region, self.pad_below, self.cropped_t, strict=True)):
            a_lo, a_hi = max(lo - pb, 0), min(hi - pb, n)
            within.append((a_lo + pb - lo, a_hi + pb - lo))
            axis = self.transpose[k]
            img[axis] = (a_lo + self.crop[axis][0], a_hi + self.crop[axis][0])
        return tuple(img), tuple(within)


def chunk_boxes(shape: Sequence[int], chunk: Sequence[int]) -> list[Box]:
    """The output chunks of an image of ``shape`` (C-order over the chunk grid)."""
    ranges = [[(lo, min(lo + c, s)) for lo in range(0, s, c)] for s, c in zip(shape, chunk, strict=True)]
    return [tuple(b) for b in itertools.product(*ranges)]


def chunk_key(box: Box, chunk: Sequence[int]) -> str:
    return ".".join(str(lo // c) for (lo, _), c in zip(box, chunk, strict=True))


def chunk_blocks(shape: Sequence[int], chunk: int, block: Sequence[int]) -> list[list[Box]]:
    """Work units: blocks of ``block`` (z, y, x) chunks, in C order over the blocks, each a list of its chunks in C
    order (the order a worker predicts them in)."""
    grid = [-(-s // chunk) for s in shape]
    units = []
    for corner in itertools.product(*[range(0, g, b) for g, b in zip(grid, block, strict=True)]):
        ranges = [range(c, min(c + b, g)) for c, b, g in zip(corner, block, grid, strict=True)]
        units.append(
            [
                tuple((i * chunk, min((i + 1) * chunk, s)) for i, s in zip(idx, shape, strict=True))
                for idx in itertools.product(*ranges)
            ]
        )
    return units


def peak_tiles(geometry: Geometry, boxes: Sequence[Box]) -> tuple[int, int]:
    """(the most tiles a :class:`TileCache` holds at once while ``boxes`` are predicted in this order, the tiles
    predicted in all) for one fold: each tile is kept from the first chunk that needs it to the last."""
    first: dict = {}
    last: dict = {}
    for i, box in enumerate(boxes):
        t_box = geometry.t_box(box)
        for t in () if t_box is None else geometry.tiles(t_box):
            first.setdefault(t, i)
            last[t] = i
    delta = [0] * (len(boxes) + 1)
    for t, i in first.items():
        if last[t] > i:
            delta[i] += 1
            delta[last[t]] -= 1
    peak = held = 0
    for d in delta:
        held += d
        peak = max(peak, held)
    return peak, len(first)


def plan_block(
    geometries: Sequence[Geometry],
    shape: Sequence[int],
    chunk: int,
    budgets: Sequence[int],
    min_units: int = 1,
    input_fits: Callable[[list[Box]], bool] | None = None,
) -> tuple[int, int, int]:
    """The work unit, in chunks (z, y, x): the widest square block in y and x whose walk keeps at most ``budgets[i]``
    tiles of model ``i`` at once (so each tile inside a block is predicted once; only tiles on a block's border are
    predicted again by its neighbour) and whose one layer of chunks passes ``input_fits`` (its input fits the input
    cache), as deep in z as the volume, then split in z until there are ``min_units`` units (for parallel workers).
    The peak is found on a three-layer block (it recurs at every layer boundary)."""
    grid = [-(-s // chunk) for s in shape]
    widest = max(grid[1], grid[2])

    def sample(dims: Sequence[int]) -> list[Box]:  # a block one chunk in from the volume's corner (if it fits)
        corner = [min(1, max(g - d, 0)) for g, d in zip(grid, dims, strict=True)]
        ranges = [range(c, min(c + d, g)) for c, d, g in zip(corner, dims, grid, strict=True)]
        return [
            tuple((i * chunk, min((i + 1) * chunk, s)) for i, s in zip(idx, shape, strict=True))
            for idx in itertools.product(*ranges)
        ]

    def fits(k: int) -> bool:  # with a tenth to spare: blocks at the volume's faces may differ a little
        if input_fits is not None and not input_fits(sample((1, k, k))):
            return False
        three = sample((3, k, k))
        return all(peak_tiles(g, three)[0] <= 0.9 * n for g, n in zip(geometries, budgets, strict=True))

    lo, hi = 1, widest  # largest k in [1, widest] that fits (monotone); 1 when none does
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    k = lo
    blocks_yx = -(-grid[1] // k) * -(-grid[2] // k)
    depth = -(-grid[0] // max(1, -(-min_units // blocks_yx)))
    return depth, min(k, grid[1]), min(k, grid[2])
