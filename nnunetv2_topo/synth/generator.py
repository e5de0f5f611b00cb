"""Synthetic scroll-CT volumes with Vesuvius-style labels.

A case is a stack of wavy papyrus sheets, 2-5 voxels thick, with varying spacing. As in the scroll CT, where the
papyrus wraps around the scroll's axis (z), the sheets run along z by default: ``y = f(z, x)`` (stacked along
axis 1), so every z-slice cuts them as thin curves, which is what the per-z-slice medial-surface skeleton
expects. ``sheet_axis`` chooses the stacking axis; the generator builds the stack along its first axis and
moves it there. Some neighbouring pairs touch or nearly touch (the merge case that topology metrics punish), some
sheets have holes or end in frayed edges inside the volume. The image is CT-like: bright fibrous sheets with soft
(partial-volume) edges over a darker, noisy background, with a slow intensity drift, faint patches of papyrus and
bright debris, so that a threshold alone does not segment it. Labels follow the real data: 1 = annotated sheet,
0 = annotated background, 2 = unlabeled (ignore): only bands around some sheets are annotated, sheets that are not
annotated are 2, and a 3-voxel border on every face is 2, so label 2 is the majority of voxels.

Everything is drawn from a ``numpy.random.Generator``: the same generator state gives the same case.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from nnunetv2_topo import IGNORE_LABEL
from nnunetv2_topo.errors import TopoError

BORDER = 3
"""Width (voxels) of the unlabeled border on every face, as in the real labels."""


@dataclass(frozen=True)
class ScrollStyle:
    """Per-scroll acquisition look: intensity levels, contrast, noise and how much of it is annotated."""

    background: float = 70.0  # mean background intensity
    contrast: float = 95.0  # sheet minus background, before texture
    noise: float = 18.0  # std of the voxel noise
    drift: float = 15.0  # amplitude of the slow intensity drift
    faint: float = 0.45  # weakest relative contrast inside faint patches
    annotated_fraction: float = 0.6  # share of sheets that are annotated (at least one always is)

    @classmethod
    def for_scroll(cls, scroll_id: int | str, seed: int = 0) -> ScrollStyle:
        """A reproducible style for a scroll id: scrolls differ in brightness, contrast and noise."""
        key = zlib.crc32(str(scroll_id).encode())
        rng = np.random.default_rng([key, int(seed)])
        return cls(
            background=float(rng.uniform(45, 95)),
            contrast=float(rng.uniform(60, 105)),
            noise=float(rng.uniform(16, 28)),
            drift=float(rng.uniform(8, 22)),
            faint=float(rng.uniform(0.25, 0.5)),
            annotated_fraction=float(rng.uniform(0.4, 0.7)),
        )


class SheetTopologyError(TopoError, ValueError):
    """A bad :class:`SheetTopology` knob; ``field`` names it (so a CLI can name its own flag)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class SheetTopology:
    """How often the sheets make the cases that topology metrics punish: touching pairs (a merge if predicted
    as one), narrow gaps (near-touching pairs) and holes (a tunnel if predicted closed).

    The defaults are the generator's nominal data. ``SheetTopology.crowded()`` is the regime where topology
    matters: most gaps narrow, many touching pairs, most sheets holed.
    """

    touch_rate: float = 0.15  # chance that a gap above the first touching pair is another touching pair
    gap: tuple[float, float] = (5.0, 16.0)  # range (voxels) of an ordinary gap between neighbouring sheets
    hole_rate: float = 0.4  # chance that a sheet has holes
    max_holes: int = 3  # a holed sheet has 1..max_holes holes

    def __post_init__(self) -> None:
        for name in ("touch_rate", "hole_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SheetTopologyError(name, f"{name} must be in [0, 1], got {value!r}")
        lo, hi = self.gap
        if not 0.0 <= lo <= hi:
            raise SheetTopologyError("gap", f"gap must be (min, max) with 0 <= min <= max voxels, got {self.gap!r}")
        if self.max_holes < 1:
            raise SheetTopologyError("max_holes", f"max_holes must be >= 1, got {self.max_holes!r}")

    @classmethod
    def crowded(cls) -> SheetTopology:
        """Near-touching sheets and holes: half the gaps touch, the others are 1.5-6 voxels, 90 % of the sheets
        have 1-5 holes."""
        return cls(touch_rate=0.5, gap=(1.5, 6.0), hole_rate=0.9, max_holes=5)


@dataclass
class SynthCase:
    """A synthetic case with the ground truth of how it was made."""

    image: np.ndarray  # uint8 (Z, Y, X)
    label: np.ndarray  # uint8 (Z, Y, X), values {0, 1, 2}
    sheets: np.ndarray  # uint8 (Z, Y, X): 0 = no sheet, k = voxels of sheet k (1-based, counted along sheet_axis)
    annotated: list[int] = field(default_factory=list)  # 1-based ids of annotated sheets
    touching: list[tuple[int, int]] = field(default_factory=list)  # sheet pairs made to touch (gap 0 somewhere)
    sheet_axis: int = 0  # the axis along which the sheets are stacked

    def moved_to(self, sheet_axis: int) -> SynthCase:
        """The same case with its stacking axis moved from ``self.sheet_axis`` to ``sheet_axis``."""

        def move(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(np.moveaxis(a, self.sheet_axis, sheet_axis))

        return SynthCase(
            move(self.image), move(self.label), move(self.sheets), self.annotated, self.touching, sheet_axis
        )


def smooth_field(shape: tuple[int, int], rng: np.random.Generator, cells: float) -> np.ndarray:
    """A smooth random 2-D field scaled to [-1, 1]; ``cells`` = roughly how many bumps across the larger side."""
    n = max(2, int(round(cells)) + 2)
    coarse = rng.standard_normal((n, n))
    out = ndimage.zoom(coarse, (shape[0] / n, shape[1] / n), order=3, grid_mode=True, mode="grid-wrap")
    out = out[: shape[0], : shape[1]]
    if out.shape != shape:  # zoom may round one short
        out = np.pad(out, [(0, shape[0] - out.shape[0]), (0, shape[1] - out.shape[1])], mode="edge")
    span = np.abs(out).max()
    return (out / span if span > 0 else out).astype(np.float32)


def _fibre_texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Papyrus fibres: horizontal plus vertical streaks, mean 1, spread about +-25%."""
    a = ndimage.gaussian_filter(rng.standard_normal(shape), (0.7, 5.0), mode="wrap")
    b = ndimage.gaussian_filter(rng.standard_normal(shape), (5.0, 0.7), mode="wrap")
    t = a / (a.std() + 1e-6) + b / (b.std() + 1e-6)
    return (1.0 + 0.12 * t).astype(np.float32)


def _ellipse_mask(shape: tuple[int, int], rng: np.random.Generator, radius: tuple[float, float]) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
    ry, rx = rng.uniform(*radius), rng.uniform(*radius)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _coverage(shape: tuple[int, int], rng: np.random.Generator, lateral: int, topology: SheetTopology) -> np.ndarray:
    """Where a sheet exists in (y, x): whole plane, or ending in a frayed edge, minus occasional holes."""
    cover = np.ones(shape, dtype=bool)
    if rng.random() < 0.3:  # the sheet ends inside the volume with a ragged edge
        yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * (yy - shape[0] / 2) + np.sin(angle) * (xx - shape[1] / 2)) / lateral
        edge = ramp + rng.uniform(0.15, 0.35) + 0.12 * smooth_field(shape, rng, 3)
        fray = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.0)
        edge += 0.1 * fray / (fray.std() + 1e-6)  # ragged fibres at the edge
        cover &= edge > 0
        parts, count = ndimage.label(cover)  # drop fibre crumbs cut off from the sheet
        if count > 1:
            sizes = np.bincount(parts.ravel())
            sizes[0] = 0
            cover = parts == sizes.argmax()
    if rng.random() < topology.hole_rate:
        for _ in range(rng.integers(1, topology.max_holes + 1)):
            cover &= ~_ellipse_mask(shape, rng, (0.04 * lateral + 1.5, 0.12 * lateral + 2))
    return cover


def synthesize_case(
    shape: tuple[int, int, int],
    rng: np.random.Generator,
    scroll_style: ScrollStyle | None = None,
    sheet_axis: int = 1,
    topology: SheetTopology | None = None,
) -> SynthCase:
    """Make one case of ``shape`` (Z, Y, X) with sheets stacked along ``sheet_axis`` (default 1: sheets run along
    z and cross every z-slice) and touching pairs, gaps and holes as ``topology`` says (default: nominal); see the
    module docstring for what it holds."""
    if sheet_axis not in (0, 1, 2):
        raise ValueError(f"sheet_axis must be 0, 1 or 2, got {sheet_axis!r}")
    shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    if min(shape) < 2 * BORDER + 4:
        raise ValueError(f"shape {shape} too small: every axis needs at least {2 * BORDER + 4} voxels")
    if sheet_axis != 0:
        rest = [s for a, s in enumerate(shape) if a != sheet_axis]
        stacked = (shape[sheet_axis], rest[0], rest[1])
        return _synthesize_stacked(stacked, rng, scroll_style, topology).moved_to(sheet_axis)
    return _synthesize_stacked(shape, rng, scroll_style, topology)


@dataclass
class _Stack:
    """The sheets' geometry along axis 0: thickness and first voxel per (y, x) column of every sheet."""

    depth: int
    thick: list[int]
    starts: list[np.ndarray]
    touching: list[tuple[int, int]]  # 1-based sheet pairs made to touch (gap 0 somewhere)

    def slab(self, k: int, pad: int) -> tuple[slice, np.ndarray]:
        """The z-range around sheet k (so per-sheet work touches only its slab) and its z coordinates."""
        lo = max(0, int(self.starts[k].min()) - pad)
        hi = min(self.depth, int(self.starts[k].max()) + self.thick[k] + pad)
        return slice(lo, max(lo, hi)), np.arange(lo, max(lo, hi), dtype=np.int32)[:, None, None]


def _stack_sheets(depth: int, plane: tuple[int, int], rng: np.random.Generator, topology: SheetTopology) -> _Stack:
    """Sheet centres ``c_k(y, x)`` stacked from the bottom with gaps >= 0, some pairs touching."""
    warp = rng.uniform(0.03, 0.08) * depth * smooth_field(plane, rng, rng.uniform(1.5, 3))  # shared by all sheets
    thick: list[int] = []
    centres: list[np.ndarray] = []
    touching: list[tuple[int, int]] = []
    c = rng.uniform(2.0, 9.0) + warp
    t = int(rng.integers(2, 6))
    first_touch = int(rng.integers(1, 3))  # the gap above sheet 1 or 2 always touches; later ones sometimes
    while float(c.min()) < depth + 3 and len(centres) < 64:
        thick.append(t)
        centres.append(c.astype(np.float32))
        t_next = int(rng.integers(2, 6))
        f = smooth_field(plane, rng, 2.5)
        if len(centres) == first_touch or (len(centres) > first_touch and rng.random() < topology.touch_rate):
            # touching pair: gap 0 (face contact) over part of the plane, 1-3 voxels elsewhere
            gap = rng.uniform(1.0, 2.0) * (f - f.min()) - rng.uniform(0.3, 1.5)
            touching.append((len(centres), len(centres) + 1))
        else:
            gap = rng.uniform(*topology.gap) + rng.uniform(0.5, 3.5) * f
        c = c + t / 2 + t_next / 2 + np.maximum(gap, 0.0)
        t = t_next
    n = len(centres)
    # integer first voxel of each sheet per column; never overlapping the sheet below (touching = gap 0)
    starts: list[np.ndarray] = []
    for k in range(n):
        s = np.floor(centres[k] - thick[k] / 2 + 0.5).astype(np.int32)
        if k:
            s = np.maximum(s, starts[-1] + thick[k - 1])
        starts.append(s)
    return _Stack(depth, thick, starts, [p for p in touching if p[1] <= n])


def _choose_annotated(stack: _Stack, rng: np.random.Generator, style: ScrollStyle) -> set[int]:
    """0-based indices of the annotated sheets: a random share of the visible ones, always both of a touching pair."""
    depth, starts, thick = stack.depth, stack.starts, stack.thick
    visible = [k for k in range(len(starts)) if (starts[k] < depth).any() and (starts[k] + thick[k] > 0).any()]
    annotated = {k for k in visible if rng.random() < style.annotated_fraction}
    for a, b in stack.touching:  # the merge case must be in the labels
        if a - 1 in visible and b - 1 in visible:
            annotated |= {a - 1, b - 1}
    if not annotated and visible:
        annotated.add(visible[len(visible) // 2])
    return annotated


def _draw_sheets(
    shape: tuple[int, int, int], stack: _Stack, rng: np.random.Generator, style: ScrollStyle, topology: SheetTopology
) -> tuple[np.ndarray, np.ndarray]:
    """The sheet instance map (1-based) and the image signal: a soft profile around each sheet's centre with fibre
    texture, faint patches, holes and frayed edges."""
    plane = shape[1:]
    lateral = max(plane)
    sheets = np.zeros(shape, dtype=np.uint8)
    signal = np.zeros(shape, dtype=np.float32)
    for k, (start, thick) in enumerate(zip(stack.starts, stack.thick, strict=True)):
        cover = _coverage(plane, rng, lateral, topology)
        zs, z = stack.slab(k, 2)
        inside = (z >= start) & (z < start + thick) & cover
        sheets[zs][inside] = k + 1
        amp = _fibre_texture(plane, rng)
        if rng.random() < 0.7:
            fade = np.clip(smooth_field(plane, rng, 2.0) * 1.5 + 0.5, 0, 1)
            amp *= style.faint + (1 - style.faint) * fade
        amp *= ndimage.gaussian_filter(cover.astype(np.float32), 0.8)
        centre = (start + thick / 2 - 0.5).astype(np.float32)
        prof = np.abs(z - centre) - (thick / 2 - 0.5)
        np.clip(1.0 - prof, 0.0, 1.0, out=prof)
        prof *= amp
        np.maximum(signal[zs], prof, out=signal[zs])
    return sheets, signal


def _labels(sheets: np.ndarray, stack: _Stack, annotated: set[int], rng: np.random.Generator) -> np.ndarray:
    """0 / 1 in a band around each annotated sheet (sometimes over part of the plane only), 2 elsewhere and on a
    ``BORDER``-voxel frame."""
    plane = sheets.shape[1:]
    label = np.full(sheets.shape, IGNORE_LABEL, dtype=np.uint8)
    for k in sorted(annotated):  # annotated band: background around the sheet, then the sheet itself
        margin = int(rng.integers(3, 8))
        lat = np.ones(plane, dtype=bool)
        if rng.random() < 0.35:  # only part of the plane annotated
            lat = smooth_field(plane, rng, 1.5) > rng.uniform(-0.6, 0.2)
        zs, z = stack.slab(k, margin)
        band = (z >= stack.starts[k] - margin) & (z < stack.starts[k] + stack.thick[k] + margin) & lat
        label[zs][band] = 0
    lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)  # sheet id -> label where the band made it 0
    lut[0] = 0
    lut[[k + 1 for k in annotated]] = 1
    in_band = label == 0
    label[in_band] = lut[sheets[in_band]]  # unannotated sheets crossing a band stay unlabeled (2), not background
    label[:BORDER] = label[-BORDER:] = IGNORE_LABEL
    label[:, :BORDER] = label[:, -BORDER:] = IGNORE_LABEL
    label[:, :, :BORDER] = label[:, :, -BORDER:] = IGNORE_LABEL
    return label


def _render_image(signal: np.ndarray, rng: np.random.Generator, style: ScrollStyle) -> np.ndarray:
    """uint8 CT-like image: background + slow drift + sheets + bright debris + short-range correlated noise.
    Consumes ``signal``."""
    shape = signal.shape
    img = signal
    img *= style.contrast
    img += style.background
    for axis, length in enumerate(shape):
        curve = style.drift / 3 * np.sin(np.linspace(0, rng.uniform(1, 3) * np.pi, length) + rng.uniform(0, 6.3))
        img += curve.astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
    for _ in range(int(rng.integers(2, 6))):  # bright debris / inclusions, not papyrus
        r = rng.uniform(1.5, 4.0, size=3)
        cz, cy, cx = (rng.uniform(0, s) for s in shape)
        sl = tuple(
            slice(max(0, int(cc - rr - 1)), min(s, int(cc + rr + 2))) for cc, rr, s in zip((cz, cy, cx), r, shape)
        )
        gz, gy, gx = np.ogrid[sl]
        blob = ((gz - cz) / r[0]) ** 2 + ((gy - cy) / r[1]) ** 2 + ((gx - cx) / r[2]) ** 2 <= 1
        img[sl][blob] += style.contrast * rng.uniform(0.6, 1.1)
    noise = rng.standard_normal(shape, dtype=np.float32)
    for axis in range(3):  # short-range correlation, like reconstructed CT noise
        noise += np.roll(noise, 1, axis=axis)
    noise *= style.noise / np.sqrt(8.0)
    img += noise
    np.clip(img, 0, 255, out=img)
    return np.rint(img).astype(np.uint8)


def _synthesize_stacked(
    shape: tuple[int, int, int],
    rng: np.random.Generator,
    scroll_style: ScrollStyle | None,
    topology: SheetTopology | None,
) -> SynthCase:
    """The generator proper: sheets ``z = f(y, x)`` stacked along axis 0 (the random draws happen in this order, so
    a seed gives the same volumes)."""
    style = scroll_style or ScrollStyle()
    topology = topology or SheetTopology()
    stack = _stack_sheets(shape[0], (shape[1], shape[2]), rng, topology)
    annotated = _choose_annotated(stack, rng, style)
    sheets, signal = _draw_sheets(shape, stack, rng, style, topology)
    label = _labels(sheets, stack, annotated, rng)
    image = _render_image(signal, rng, style)
    return SynthCase(
        image=image,
        label=label,
        sheets=sheets,
        annotated=sorted(k + 1 for k in annotated),
        touching=[p for p in stack.touching if p[0] - 1 in annotated and p[1] - 1 in annotated],
    )


def make_case(shape: tuple[int, int, int], rng: np.random.Generator, **options) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic (image, label) pair, both uint8 of ``shape``; labels 0 / 1 / 2 (ignore). ``options``:
    ``scroll_style``, ``sheet_axis``, ``topology`` of :func:`synthesize_case`."""
    case = synthesize_case(shape, rng, **options)
    return case.image, case.label
