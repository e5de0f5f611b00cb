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
from collections.abc import Sequence
from dataclasses import dataclass

Box = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Geometry:
    shape: tuple[int, int, int]  # image frame
    crop: Box  # nonzero bounding box, image frame, half-open
    transpose: tuple[int, int, int]  # plans' transpose_forward
    patch: tuple[int, int, int]  # t frame
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

    @property
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

    def tiles(self, t_box: Box) -> list[tuple[int, int, int]]:
        """Start corners of the tiles that overlap ``t_box``, in nnU-Net's order (nested over t dims 0, 1, 2)."""
        per_dim = [
            [s for s in steps if s < hi and s + p > lo]
            for steps, (lo, hi), p in zip(self.steps, t_box, self.patch, strict=True)
        ]
        return list(itertools.product(*per_dim))

    def region(self, tiles: Sequence[tuple[int, int, int]]) -> Box:
        """The t-frame union box of ``tiles``."""
        return tuple((min(t[d] for t in tiles), max(t[d] for t in tiles) + self.patch[d]) for d in range(3))

    def image_source(self, t_region: Box) -> tuple[Box, Box]:
        """For a t-frame region: (the image-frame box of real voxels it holds, where they lie inside the region in
        the t frame); the rest of the region is padding (0 after normalisation)."""
        within, img = [], [None, None, None]
        for k, ((lo, hi), pb, n) in enumerate(zip(t_region, self.pad_below, self.cropped_t, strict=True)):
            a_lo, a_hi = max(lo - pb, 0), min(hi - pb, n)
            within.append((a_lo + pb - lo, a_hi + pb - lo))
            axis = self.transpose[k]
            img[axis] = (a_lo + self.crop[axis][0], a_hi + self.crop[axis][0])
        return tuple(img), tuple(within)  # type: ignore[return-value]


def chunk_boxes(shape: Sequence[int], chunk: Sequence[int]) -> list[Box]:
    """The output chunks of an image of ``shape`` (C-order over the chunk grid)."""
    ranges = [[(lo, min(lo + c, s)) for lo in range(0, s, c)] for s, c in zip(shape, chunk, strict=True)]
    return [tuple(b) for b in itertools.product(*ranges)]


def chunk_key(box: Box, chunk: Sequence[int]) -> str:
    return ".".join(str(lo // c) for (lo, _), c in zip(box, chunk, strict=True))
