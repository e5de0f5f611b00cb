"""The input volume: a Zarr array (v2 or v3), or one level of an OME-Zarr group, local or at an fsspec URL.

:func:`open_source` checks everything before any work (a Zarr at all, the level, 3-D, a numeric dtype, the ``--bbox``)
and returns a picklable :class:`SourceSpec`. Workers read through :class:`CachedReader`: whole input chunks, kept in
an LRU cache, so that the halos of neighbouring output chunks do not read the same input chunk again (read
amplification = bytes decoded / bytes of the volume).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from nnunetv2_topo.volume.grid import Box


class VolumeInputError(ValueError):
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
    from pathlib import Path

    if "://" in path or path.rstrip("/").lower().endswith(".zarr"):
        return True
    p = Path(path)
    return p.is_dir() and any((p / m).is_file() for m in ("zarr.json", ".zarray", ".zgroup"))


def parse_bbox(text: str) -> Box:
    """``z0:z1,y0:y1,x0:x1`` -> ((z0, z1), (y0, y1), (x0, x1))."""
    parts = text.split(",")
    if len(parts) != 3 or not all(re.fullmatch(r"\s*\d+\s*:\s*\d+\s*", p) for p in parts):
        raise VolumeInputError(f"--bbox {text!r}: expected z0:z1,y0:y1,x0:x1 with integers, e.g. 0:512,1000:2024,0:512")
    box = tuple(tuple(int(v) for v in p.split(":")) for p in parts)
    for (lo, hi), axis in zip(box, "zyx", strict=True):
        if hi <= lo:
            raise VolumeInputError(f"--bbox {text!r}: {axis} range {lo}:{hi} is empty (end must exceed start)")
    return box  # type: ignore[return-value]


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


def open_source(url: str, level: int | None = None, bbox: Box | None = None) -> SourceSpec:
    """Open and check the input; see the module doc. ``level`` applies to OME-Zarr groups (default 0)."""
    import zarr

    try:
        node = zarr.open(url, mode="r")
    except Exception as exc:  # zarr raises several types for "nothing here"
        raise VolumeInputError(
            f"--input {url} is not a Zarr array or group ({type(exc).__name__}: {exc}); pass a Zarr v2/v3 array or "
            "an OME-Zarr group (a folder with zarr.json or .zarray/.zgroup), or a folder of .tif cases"
        ) from None
    array_path, spacing = "", (1.0, 1.0, 1.0)
    if isinstance(node, zarr.Group):
        ms = _multiscales(dict(node.attrs))
        if ms is None:
            root = url.rstrip("/")
            arrays = ", ".join(f"{root}/{k}" for k, _ in sorted(node.arrays())[:5]) or "it holds none"
            raise VolumeInputError(
                f"--input {url} is a Zarr group without OME-Zarr 'multiscales' metadata; pass one of its arrays "
                f"directly ({arrays})"
            )
        datasets = ms[0].get("datasets", [])
        lvl = 0 if level is None else level
        if not 0 <= lvl < len(datasets):
            raise VolumeInputError(
                f"--level {lvl}: {url} has {len(datasets)} level(s) "
                f"({', '.join(str(d.get('path')) for d in datasets)}); choose 0..{len(datasets) - 1}"
            )
        array_path = str(datasets[lvl]["path"])
        node = node[array_path]
        s0, s = _scale(datasets[0]), _scale(datasets[lvl])
        if s0 and s and len(s0) == len(s):
            spacing = tuple(float(b) / float(a) for a, b in zip(s0[-3:], s[-3:], strict=True))  # type: ignore
    elif level not in (None, 0):
        raise VolumeInputError(f"--level {level}: {url} is a single Zarr array, not an OME-Zarr group with levels")
    shape = tuple(node.shape)
    lead = len(shape) - 3
    if lead < 0 or any(s != 1 for s in shape[:lead]):
        raise VolumeInputError(
            f"--input {url}{'/' + array_path if array_path else ''}: shape {shape} is not a 3-D (Z, Y, X) volume "
            "(leading axes of size 1 are allowed)"
        )
    dtype = np.dtype(node.dtype)
    if dtype.kind not in "uif":
        raise VolumeInputError(f"--input {url}: dtype {dtype} is not a number type; expected an integer or float CT")
    shape3 = shape[lead:]
    if bbox is None:
        bbox = tuple((0, s) for s in shape3)  # type: ignore[assignment]
    outside = [f"{a} {lo}:{hi} (size {s})" for (lo, hi), s, a in zip(bbox, shape3, "zyx", strict=True) if hi > s]
    if outside:
        raise VolumeInputError(f"--bbox lies outside the volume {tuple(shape3)}: {', '.join(outside)}")
    return SourceSpec(
        url=url,
        array_path=array_path,
        lead=lead,
        offset=tuple(lo for lo, _ in bbox),  # type: ignore[arg-type]
        shape=tuple(hi - lo for lo, hi in bbox),
        dtype=dtype.str,
        spacing=spacing,  # type: ignore[arg-type]
        chunks=tuple(node.chunks[lead:]),  # type: ignore[arg-type]
    )


def open_array(spec: SourceSpec):
    import zarr

    node = zarr.open(spec.url, mode="r")
    return node[spec.array_path] if spec.array_path else node


def dask_array(spec: SourceSpec):
    """The region as a dask array (image frame), chunked as stored."""
    import dask.array as da

    arr = da.from_zarr(open_array(spec))
    index = (0,) * spec.lead + tuple(slice(o, o + s) for o, s in zip(spec.offset, spec.shape, strict=True))
    return arr[index]


class CachedReader:
    """Reads image-frame boxes of the region through an LRU cache of whole stored chunks."""

    def __init__(self, spec: SourceSpec, max_bytes: int) -> None:
        self.spec = spec
        self.array = open_array(spec)
        self.max_bytes = max_bytes
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._held = 0
        self.bytes_read = 0
        self.chunks_read = 0
        self.hits = 0

    def _chunk(self, idx: tuple[int, ...]) -> np.ndarray:
        if idx in self._cache:
            self._cache.move_to_end(idx)
            self.hits += 1
            return self._cache[idx]
        c = self.spec.chunks
        sl = (0,) * self.spec.lead + tuple(slice(i * n, (i + 1) * n) for i, n in zip(idx, c, strict=True))
        data = np.asarray(self.array[sl])
        self.bytes_read += data.nbytes
        self.chunks_read += 1
        self._cache[idx] = data
        self._held += data.nbytes
        while self._held > self.max_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._held -= old.nbytes
        return data

    def read(self, box: Box) -> np.ndarray:
        """float32 copy of an image-frame box of the region."""
        out = np.empty(tuple(hi - lo for lo, hi in box), np.float32)
        a_box = [(lo + o, hi + o) for (lo, hi), o in zip(box, self.spec.offset, strict=True)]
        c = self.spec.chunks
        ranges = [range(lo // n, (hi - 1) // n + 1) for (lo, hi), n in zip(a_box, c, strict=True)]
        import itertools

        for idx in itertools.product(*ranges):
            data = self._chunk(idx)
            src, dst = [], []
            for (lo, hi), i, n in zip(a_box, idx, c, strict=True):
                s_lo, s_hi = max(lo, i * n), min(hi, (i + 1) * n)
                src.append(slice(s_lo - i * n, s_hi - i * n))
                dst.append(slice(s_lo - lo, s_hi - lo))
            out[tuple(dst)] = data[tuple(src)]
        return out
