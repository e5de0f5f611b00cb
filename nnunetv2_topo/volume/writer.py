"""The output OME-Zarr: arrays, the manifest that makes a run resumable, per-chunk completion markers, and the
multiscales metadata written when the volume is complete.

Layout of ``OUT.zarr`` (a Zarr v3 group):
  ``0``              uint8 labels 0/1 in the input's geometry (chunks ``--chunk``), then ``1``..``N`` (``--pyramid``),
                     each a 2x max-downsampling of the level above (a one-voxel sheet stays visible)
  ``probabilities``  uint8 ``round(p * 255)`` (``--probabilities``)
  ``work_classes``   during a run with post-processing: 0, 1 = ``p > threshold``, 2 = also ``p > hysteresis_high``;
                     the exact input of the global steps, removed when the volume is complete
  ``work_labels``    int32 component labels while the global steps run (removed with ``work_classes``)
  ``.done/<key>``    one empty marker per finished output chunk, written after its data (zarr writes every chunk
                     atomically): a chunk without a marker is recomputed by the next run
The group attribute ``nnunetv2_topo`` holds the manifest (models, folds, fusion, TTA, post-processing, input, grid,
chunking) and ``complete``; OME-Zarr ``multiscales`` metadata (written by ``ome-zarr``) appears once complete.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnunetv2_topo.volume.grid import Box, chunk_key

MANIFEST_KEY = "nnunetv2_topo"
CLASSES = "work_classes"
LABELS = "work_labels"
PROBABILITIES = "probabilities"
DONE = ".done"


class OutputError(ValueError):
    """The output cannot be used for this run; the message names it, what differs and the fix."""


def _fs(url: str):
    import fsspec

    return fsspec.core.url_to_fs(url)


def read_manifest(url: str) -> dict | None:
    """The manifest of an existing output, None when nothing is there; :class:`OutputError` for a foreign store."""
    import zarr

    fs, root = _fs(url)
    if not fs.exists(root):
        return None
    try:
        group = zarr.open_group(url, mode="r")
    except Exception:
        raise OutputError(f"--output {url} exists and is not a Zarr group; choose another --output") from None
    manifest = dict(group.attrs).get(MANIFEST_KEY)
    if not isinstance(manifest, dict):
        raise OutputError(
            f"--output {url} exists and was not written by 'nnunetv2_topo predict'; choose another "
            "--output or remove it"
        )
    return manifest


def manifest_differences(old: dict, new: dict) -> list[str]:
    """Human-readable ``key: old -> new`` for every setting that differs (``complete`` ignored)."""
    keys = sorted((set(old) | set(new)) - {"complete"})
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def prepare_output(url: str, manifest: dict, shape: Sequence[int], chunk: int, probabilities: bool, classes: bool):
    """Create the output (or check an existing one against ``manifest``); returns the existing manifest or None."""
    import zarr

    old = read_manifest(url)
    if old is not None:
        diff = manifest_differences(old["settings"], manifest["settings"])
        if diff:
            raise OutputError(
                f"--output {url} was made with other settings ({'; '.join(diff)}); resume with the same settings, "
                "or choose another --output"
            )
        return old
    group = zarr.open_group(url, mode="a")
    chunks = (chunk,) * 3
    group.create_array("0", shape=tuple(shape), chunks=chunks, dtype="uint8", fill_value=0, overwrite=True)
    if probabilities:
        group.create_array(
            PROBABILITIES, shape=tuple(shape), chunks=chunks, dtype="uint8", fill_value=0, overwrite=True
        )
    if classes:
        group.create_array(CLASSES, shape=tuple(shape), chunks=chunks, dtype="uint8", fill_value=0, overwrite=True)
    group.attrs[MANIFEST_KEY] = {**manifest, "complete": False}
    return None


def done_keys(url: str) -> set[str]:
    fs, root = _fs(url)
    path = f"{root}/{DONE}"
    if not fs.exists(path):
        return set()
    return {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)}


class ChunkWriter:
    """Writes finished chunks (labels or post-processing classes, optional probabilities) and their markers."""

    def __init__(self, url: str, chunk: int, threshold: float, high: float | None, classes: bool, probs: bool):
        import zarr

        self.url, self.chunk = url, chunk
        group = zarr.open_group(url, mode="r+")
        self.target = group[CLASSES if classes else "0"]
        self.probs = group[PROBABILITIES] if probs else None
        self.threshold, self.high, self.classes = threshold, high, classes
        self.fs, self.root = _fs(url)
        self.fs.makedirs(f"{self.root}/{DONE}", exist_ok=True)
        self.foreground = 0

    def is_done(self, box: Box) -> bool:
        """The chunk's marker exists (a retried work unit skips it)."""
        return self.fs.exists(f"{self.root}/{DONE}/{chunk_key(box, (self.chunk,) * 3)}")

    def write(self, box: Box, probability: np.ndarray | None) -> None:
        from nnunetv2_topo.postprocessing.components import binarize

        sl = tuple(slice(lo, hi) for lo, hi in box)
        shape = tuple(hi - lo for lo, hi in box)
        if probability is None:
            values = np.zeros(shape, np.uint8)
        else:
            values = binarize(probability, self.threshold).astype(np.uint8)
            if self.classes and self.high is not None:
                values[probability > self.high] = 2
            self.foreground += int(np.count_nonzero(values))
        self.target[sl] = values
        if self.probs is not None:
            p = np.zeros(shape, np.uint8) if probability is None else np.rint(probability * 255).astype(np.uint8)
            self.probs[sl] = p
        self.fs.pipe_file(f"{self.root}/{DONE}/{chunk_key(box, (self.chunk,) * 3)}", b"")


def _down2(block: np.ndarray) -> np.ndarray:
    b = np.pad(block, [(0, s % 2) for s in block.shape])
    z, y, x = b.shape
    return b.reshape(z // 2, 2, y // 2, 2, x // 2, 2).max(axis=(1, 3, 5))


def write_pyramid(url: str, levels: int, chunk: int) -> None:
    """Levels ``1``..``levels``: 2x max-downsampling of the level above (chunk edges must be even)."""
    import dask.array as da
    import zarr

    group = zarr.open_group(url, mode="r+")
    for k in range(1, levels + 1):
        prev = da.from_zarr(group[str(k - 1)])
        down = prev.map_blocks(
            _down2, chunks=tuple(tuple((c + 1) // 2 for c in cs) for cs in prev.chunks), dtype=np.uint8
        )
        arr = group.create_array(
            str(k), shape=down.shape, chunks=(chunk,) * 3, dtype="uint8", fill_value=0, overwrite=True
        )
        da.store(down.rechunk((chunk,) * 3), arr, lock=False)


def finish_metadata(url: str, levels: int, spacing: Sequence[float], summary: dict) -> None:
    """OME-Zarr multiscales metadata (by ``ome-zarr``), the manifest marked complete, work arrays and markers gone."""
    import zarr
    from ome_zarr.writer import write_multiscales_metadata

    group = zarr.open_group(url, mode="r+")
    datasets = [
        {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": [float(s) * 2**k for s in spacing]}]}
        for k in range(levels + 1)
    ]
    write_multiscales_metadata(group, datasets, axes=["z", "y", "x"], name="nnunetv2_topo predict")
    for work in (CLASSES, LABELS):
        if work in group:
            del group[work]
    manifest = dict(group.attrs[MANIFEST_KEY])
    group.attrs[MANIFEST_KEY] = {**manifest, "complete": True, "summary": summary}
    fs, root = _fs(url)
    if fs.exists(f"{root}/{DONE}"):
        fs.rm(f"{root}/{DONE}", recursive=True)
