"""The input volume: a Zarr array (v2 or v3), or one level of an OME-Zarr group, local or at an fsspec URL.

:func:`open_source` checks everything before any work (a Zarr at all, the level, 3-D, a numeric dtype, the ``--bbox``)
and returns a picklable :class:`SourceSpec`. Workers read through :class:`CachedReader`: whole input chunks, kept in
an LRU cache, so that the halos of neighbouring output chunks do not read the same input chunk again (read
amplification = bytes decoded / bytes of the volume).
"""

from __future__ import annotations

import itertools
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm import tqdm

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.scroll.grid import Box

T = TypeVar("T")


def _zyx(values: Iterable[T]) -> tuple[T, T, T]:
    """The three (Z, Y, X) entries of ``values`` (checked to be three before)."""
    z, y, x = values
    return z, y, x


class ScrollInputError(TopoError, ValueError):
    """The input volume cannot be used; the message names it and the fix."""


@dataclass(frozen=True)
class SourceSpec:
    url: str  # the store (local path or fsspec URL)
    array_path: str  # the array inside it ("" for a bare array)
    lead: int  # leading singleton axes (OME-Zarr t, c) dropped
    offset: tuple[int, int, int]  # --bbox start in the array
    shape: tuple[int, int, int]  # the region's shape
    dtype: str
    spacing: tuple[float, float, float]
    chunks: tuple[int, int, int]

    def to_dict(self) -> dict:
        return {
            "url": self.url,
            "array": self.array_path,
            "offset": list(self.offset),
            "shape": list(self.shape),
            "dtype": self.dtype,
            "spacing": list(self.spacing),
        }


def looks_like_zarr(path: str) -> bool:
    """True when ``path`` names a Zarr store (a URL, a ``.zarr`` name, or a folder with Zarr metadata)."""
    if "://" in path or path.rstrip("/").lower().endswith(".zarr"):
        return True
    p = Path(path)
    return p.is_dir() and any((p / m).is_file() for m in ("zarr.json", ".zarray", ".zgroup"))


def parse_bbox(text: str) -> Box:
    """``z0:z1,y0:y1,x0:x1`` -> ((z0, z1), (y0, y1), (x0, x1))."""
    parts = text.split(",")
    if len(parts) != 3 or not all(re.fullmatch(r"\s*\d+\s*:\s*\d+\s*", p) for p in parts):
        raise ScrollInputError(f"--bbox {text!r}: expected z0:z1,y0:y1,x0:x1 with integers, e.g. 0:512,1000:2024,0:512")
    box = tuple((int(lo), int(hi)) for lo, hi in (p.split(":") for p in parts))
    for (lo, hi), axis in zip(box, "zyx", strict=True):
        if hi <= lo:
            raise ScrollInputError(f"--bbox {text!r}: {axis} range {lo}:{hi} is empty (end must exceed start)")
    return box


def _multiscales(attrs: dict) -> list | None:
    if "ome" in attrs and isinstance(attrs["ome"], dict):
        attrs = attrs["ome"]
    ms = attrs.get("multiscales")
    return ms if isinstance(ms, list) and ms else None


def _scale(dataset: dict) -> list[float] | None:
    for t in dataset.get("coordinateTransformations", []):
        if t.get("type") == "scale":
            return [float(s) for s in t["scale"]]
    return None


def canonical_url(url: str) -> str:
    """One spelling per store: a local path (or ``file://`` URL) absolute, without a trailing slash; other URLs
    without a trailing slash. A resumed run compares these, so ``in.zarr/`` and ``/abs/in.zarr`` are the same input."""
    if url.startswith("file://"):
        url = url[len("file://") :]
    if "://" in url:
        return url.rstrip("/")
    return str(Path(url).expanduser().resolve())


def open_source(
    url: str, level: int | None = None, bbox: Box | None = None, flag: str = "--input", kinds: str = "uif"
) -> SourceSpec:
    """Open and check the input; see the module doc. ``level`` applies to OME-Zarr groups (default 0). ``flag``
    names the option in messages; ``kinds``: the accepted dtype kinds (``--mask`` also takes bool)."""
    import zarr

    url = canonical_url(url)
    try:
        node = zarr.open(url, mode="r")
    except Exception as exc:  # zarr raises several types for "nothing here"
        raise ScrollInputError(
            f"{flag} {url} is not a Zarr array or group ({type(exc).__name__}: {exc}); pass a Zarr v2/v3 array or "
            "an OME-Zarr group (a folder with zarr.json or .zarray/.zgroup), or a folder of .tif cases"
        ) from None
    array_path, spacing = "", (1.0, 1.0, 1.0)
    if isinstance(node, zarr.Group):
        ms = _multiscales(dict(node.attrs))
        if ms is None:
            root = url.rstrip("/")
            arrays = ", ".join(f"{root}/{k}" for k, _ in sorted(node.arrays())[:5]) or "it holds none"
            raise ScrollInputError(
                f"{flag} {url} is a Zarr group without OME-Zarr 'multiscales' metadata; pass one of its arrays "
                f"directly ({arrays})"
            )
        datasets = ms[0].get("datasets", [])
        lvl = 0 if level is None else level
        if not 0 <= lvl < len(datasets):
            raise ScrollInputError(
                f"--level {lvl}: {url} has {len(datasets)} level(s) "
                f"({', '.join(str(d.get('path')) for d in datasets)}); choose 0..{len(datasets) - 1}"
            )
        array_path = str(datasets[lvl]["path"])
        node = node[array_path]
        s0, s = _scale(datasets[0]), _scale(datasets[lvl])
        if s0 and s and len(s0) == len(s) >= 3:
            spacing = _zyx(float(b) / float(a) for a, b in zip(s0[-3:], s[-3:], strict=True))
    elif level not in (None, 0):
        raise ScrollInputError(f"--level {level}: {url} is a single Zarr array, not an OME-Zarr group with levels")
    if not isinstance(node, zarr.Array):
        raise ScrollInputError(f"{flag} {url}/{array_path}: a Zarr group, not an array; check the OME-Zarr metadata")
    shape = tuple(node.shape)
    lead = len(shape) - 3
    if lead < 0 or any(s != 1 for s in shape[:lead]):
        raise ScrollInputError(
            f"{flag} {url}{'/' + array_path if array_path else ''}: shape {shape} is not a 3-D (Z, Y, X) volume "
            "(leading axes of size 1 are allowed)"
        )
    dtype = np.dtype(node.dtype)
    if dtype.kind not in kinds:
        raise ScrollInputError(f"{flag} {url}: dtype {dtype} is not a number type; expected an integer or float CT")
    shape3 = shape[lead:]
    if bbox is None:
        bbox = tuple((0, s) for s in shape3)
    outside = [f"{a} {lo}:{hi} (size {s})" for (lo, hi), s, a in zip(bbox, shape3, "zyx", strict=True) if hi > s]
    if outside:
        raise ScrollInputError(f"--bbox lies outside the volume {tuple(shape3)}: {', '.join(outside)}")
    return SourceSpec(
        url=url,
        array_path=array_path,
        lead=lead,
        offset=_zyx(lo for lo, _ in bbox),
        shape=_zyx(hi - lo for lo, hi in bbox),
        dtype=dtype.str,
        spacing=spacing,
        chunks=_zyx(node.chunks[lead:]),
    )


def open_array(spec: SourceSpec):
    import zarr

    node = zarr.open(spec.url, mode="r")
    return node[spec.array_path] if spec.array_path and isinstance(node, zarr.Group) else node


def dask_array(spec: SourceSpec):
    """The region as a dask array (image frame), chunked as stored."""
    import dask.array as da

    arr = da.from_zarr(open_array(spec))
    index = (0,) * spec.lead + tuple(slice(o, o + s) for o, s in zip(spec.offset, spec.shape, strict=True))
    return arr[index]


class CachedReader:
    """Reads image-frame boxes of the region through an LRU cache of whole stored chunks; :meth:`prefetch` loads
    the stored chunks of a box in a background thread, so the next chunk's input is read while this one computes."""

    def __init__(self, spec: SourceSpec, max_bytes: int) -> None:
        self.spec = spec
        self.array = open_array(spec)
        self.max_bytes = max_bytes
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._pending: dict = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._held = 0
        self.bytes_read = 0
        self.chunks_read = 0
        self.hits = 0

    def _load(self, idx: tuple[int, ...]) -> np.ndarray:
        c = self.spec.chunks
        sl = (0,) * self.spec.lead + tuple(slice(i * n, (i + 1) * n) for i, n in zip(idx, c, strict=True))
        data = np.asarray(self.array[sl])
        with self._lock:
            self.bytes_read += data.nbytes
            self.chunks_read += 1
            self._cache[idx] = data
            self._held += data.nbytes
            self._pending.pop(idx, None)
            while self._held > self.max_bytes and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._held -= old.nbytes
        return data

    def _chunk(self, idx: tuple[int, ...]) -> np.ndarray:
        with self._lock:
            data = self._cache.get(idx)
            if data is not None:
                self._cache.move_to_end(idx)
                self.hits += 1
                return data
            future = self._pending.get(idx)
            if future is None:  # load it here; a prefetch of the same chunk waits for this one
                future = self._pending[idx] = Future()
                mine = True
            else:
                mine = False
        if not mine:
            return future.result()
        try:
            data = self._load(idx)
        except BaseException as exc:
            with self._lock:
                self._pending.pop(idx, None)
            future.set_exception(exc)
            raise
        future.set_result(data)
        return data

    def _indices(self, box: Box) -> tuple[list, itertools.product]:
        a_box = [(lo + o, hi + o) for (lo, hi), o in zip(box, self.spec.offset, strict=True)]
        ranges = [range(lo // n, (hi - 1) // n + 1) for (lo, hi), n in zip(a_box, self.spec.chunks, strict=True)]
        return a_box, itertools.product(*ranges)

    def prefetch(self, box: Box) -> None:
        """Start loading the stored chunks of ``box`` that are not cached (one background thread)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="volume-prefetch")
        for idx in self._indices(box)[1]:
            with self._lock:
                if idx in self._cache or idx in self._pending:
                    continue
                self._pending[idx] = self._pool.submit(self._load, idx)

    def read(self, box: Box) -> np.ndarray:
        """float32 copy of an image-frame box of the region."""
        out = np.empty(tuple(hi - lo for lo, hi in box), np.float32)
        a_box, indices = self._indices(box)
        c = self.spec.chunks
        for idx in indices:
            data = self._chunk(idx)
            src, dst = [], []
            for (lo, hi), i, n in zip(a_box, idx, c, strict=True):
                s_lo, s_hi = max(lo, i * n), min(hi, (i + 1) * n)
                src.append(slice(s_lo - i * n, s_hi - i * n))
                dst.append(slice(s_lo - lo, s_hi - lo))
            out[tuple(dst)] = data[tuple(src)]
        return out


def scan_boxes(spec: SourceSpec, target_bytes: int = 64 << 20) -> list[Box]:
    """The region cut along the stored chunks into boxes of about ``target_bytes`` (whole chunks in x, then y)."""
    itemsize = np.dtype(spec.dtype).itemsize
    c = spec.chunks
    edges = []
    for o, s, n in zip(spec.offset, spec.shape, c, strict=True):  # cuts at stored-chunk borders, region frame
        cuts = [0, *range(n - o % n if o % n else n, s, n), s]
        edges.append(sorted(set(cuts)))
    per_chunk = max(1, int(np.prod(c)) * itemsize)
    gx = max(1, min(len(edges[2]) - 1, target_bytes // per_chunk))
    gy = max(1, min(len(edges[1]) - 1, target_bytes // (per_chunk * gx)))
    out: list[Box] = []
    for z0, z1 in itertools.pairwise(edges[0]):
        for y in range(0, len(edges[1]) - 1, gy):
            for x in range(0, len(edges[2]) - 1, gx):
                ys, xs = edges[1][y : y + gy + 1], edges[2][x : x + gx + 1]
                out.append(((z0, z1), (ys[0], ys[-1]), (xs[0], xs[-1])))
    return out


def _scan_box(spec: SourceSpec, box: Box) -> tuple:
    data = CachedReader(spec, 0).read(box)
    nz = data != 0
    return box, nz.any(axis=(1, 2)), nz.any(axis=(0, 2)), nz.any(axis=(0, 1)), float(data.min()), float(data.max())


def scan_volume(spec: SourceSpec, zscore: bool, client=None, progress: bool = True) -> dict:
    """One read of the region (stored chunks in parallel: on ``client``'s workers, or 4 threads here, with a
    progress bar): nnU-Net's crop (the nonzero bounding box; the whole region when all zero), the value range (for
    the intensity check) and, for ZScore plans, the cropped region's mean and std (float64; one more read)."""

    boxes = scan_boxes(spec)
    proj = [np.zeros(s, bool) for s in spec.shape]
    low, high = np.inf, -np.inf
    chunks = int(np.prod([-(-s // c) for s, c in zip(spec.shape, spec.chunks, strict=True)]))
    with tqdm(total=chunks, desc="scan", unit="chunk", disable=not progress, file=sys.stderr) as bar:
        if client is not None:
            from distributed import as_completed as done_first

            futures = done_first(client.map(_scan_box, [spec] * len(boxes), boxes, pure=False))
            results = (f.result() for f in futures)
        else:
            pool = ThreadPoolExecutor(4, thread_name_prefix="volume-scan")
            results = (f.result() for f in as_completed([pool.submit(_scan_box, spec, b) for b in boxes]))
        for box, pz, py, px, lo, hi in results:
            for axis, p in enumerate((pz, py, px)):
                proj[axis][box[axis][0] : box[axis][1]] |= p
            low, high = min(low, lo), max(high, hi)
            bar.update(chunks * int(np.prod([hi - lo for lo, hi in box])) // int(np.prod(spec.shape)))
        bar.n = chunks
        bar.refresh()
    if not proj[0].any():
        crop = tuple((0, s) for s in spec.shape)
    else:
        crop = tuple((int(np.argmax(p)), int(len(p) - np.argmax(p[::-1]))) for p in proj)
    stats = None
    if zscore:
        sub = dask_array(spec)[tuple(slice(lo, hi) for lo, hi in crop)].astype(np.float64)
        mean = float(sub.mean().compute())
        std = float(np.sqrt(((sub - mean) ** 2).mean().compute()))
        stats = [mean, std]
    return {"crop": [list(c) for c in crop], "zscore": stats, "range": [low, high]}


def sample_range(spec: SourceSpec, per_axis: int = 3) -> tuple[float, float]:
    """The value range of up to ``per_axis``³ stored chunks spread over the region (a cheap look before the scan)."""
    starts = [
        sorted({int(v) for v in np.linspace(0, max(s - 1, 0), per_axis)}) for s in spec.shape
    ]  # region voxels whose stored chunk is read
    reader = CachedReader(spec, 0)
    low, high = np.inf, -np.inf
    for corner in itertools.product(*starts):
        box = tuple(
            (max(0, (v + o) // n * n - o), min(s, ((v + o) // n + 1) * n - o))
            for v, o, n, s in zip(corner, spec.offset, spec.chunks, spec.shape, strict=True)
        )
        data = reader.read(box)
        low, high = min(low, float(data.min())), max(high, float(data.max()))
    return low, high
