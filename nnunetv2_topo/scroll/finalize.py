"""Finalize a whole-volume output once every chunk of every part is written: global post-processing, pyramids,
OME-Zarr metadata, clean-up. Exactly one process does it, and a kill at any point followed by a rerun gives the
identical result.

- **One finalizer:** the output's lock (:mod:`nnunetv2_topo.scroll.lock`) is taken without waiting; a part that
  finds it held by a live process leaves the work to that process. The holder checks the lock before every pass.
- **Steps, in this order**, each one rewriting everything it writes (so each can be repeated):
  1. the post-processing passes (:mod:`nnunetv2_topo.scroll.postprocess`) from ``work_classes`` into level ``0``;
  2. the pyramids (levels 1..N of the labels and, with ``--probabilities``, of ``probabilities``);
  3. the OME-Zarr metadata;
  4. the manifest's ``complete`` set to true: level 0 is final from here on;
  5. only then are the work arrays, the faces and the ``.done`` markers deleted (each deletion skips what is gone).
  A rerun before step 4 redoes 1-4 from the untouched inputs; after it, it finishes 5.
- ``nnunetv2_topo finalize OUT.zarr`` runs this alone; ``predict`` runs it when its part finds every chunk done.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from nnunetv2_topo.postprocessing.steps import PostprocessConfig
from nnunetv2_topo.scroll.grid import chunk_boxes, chunk_key
from nnunetv2_topo.scroll.lock import LOCK, TAKEOVER, LockBusyError, StoreLock
from nnunetv2_topo.scroll.postprocess import WorkArrays, _open, _slices, grid_of, postprocess_chunks
from nnunetv2_topo.scroll.writer import (
    CLASSES,
    DONE,
    LABELS,
    MANIFEST_KEY,
    PROBABILITIES,
    ScrollOutputError,
    _down2,
    array_at,
    create_array,
    done_keys,
    read_manifest,
    write_ome_metadata,
)

STEP_HOOK: Callable[[str], None] | None = None
"""Called with the name of every step boundary (tests inject kills here)."""
WORK = (CLASSES, LABELS, "work_mask", "work_faces", DONE)


@dataclass
class FinalizeReport:
    complete: bool = False
    finalized_here: bool = False
    missing: int = 0
    busy: str | None = None
    foreground_share: float | None = None
    driver: dict = field(default_factory=dict)
    seconds: float = 0.0

    def line(self, url: str) -> str:
        if self.busy:
            return f"{url}: another process is finalizing it ({self.busy}); it completes the volume"
        if not self.complete:
            return f"{url}: {self.missing} chunk(s) not predicted yet; run the missing parts, then finalize"
        if not self.finalized_here:
            return f"{url}: complete"
        return (
            f"{url}: finalized in {self.seconds:.1f} s, foreground {self.foreground_share:.2%}; the driver held "
            f"{self.driver.get('border_labels', 0)} border labels and {self.driver.get('pairs', 0)} pairs "
            f"({self.driver.get('bytes', 0) / 2**20:.1f} MiB)"
        )


def _step(name: str, lock) -> None:
    if lock is not None:
        lock.check()
    if STEP_HOOK is not None:
        STEP_HOOK(name)


def make_runner(client=None, progress: bool = True, lock=None, threads: int | None = None):
    """``run(fn, items, desc)``: one task per item on the Dask ``client`` or local threads, results in order, a
    progress bar per pass (chunks, ETA); the lock is checked and the step hook called before and half-way."""

    def run(fn, items: list, desc: str) -> list:
        _step(f"{desc}", lock)
        results: list = [None] * len(items)
        half = len(items) // 2
        bar = tqdm(total=len(items), desc=desc, unit="chunk", disable=not progress, file=sys.stderr)
        done: Iterable[tuple[Any, Any]]  # (future, its result) as they finish
        try:
            if client is not None:
                from distributed import as_completed as dask_completed

                futures = client.map(fn, *zip(*items), pure=False) if items else []
                index = {f.key: i for i, f in enumerate(futures)}
                done = dask_completed(futures, with_results=True)
            else:
                pool = ThreadPoolExecutor(threads or os.cpu_count() or 1)
                futures = [pool.submit(fn, *item) for item in items]
                index = {f: i for i, f in enumerate(futures)}
                done = ((f, f.result()) for f in as_completed(futures))
            try:
                for n, (f, result) in enumerate(done, 1):
                    results[index[f.key if client is not None else f]] = result
                    bar.update()
                    if n == half:
                        _step(f"{desc}:half", lock)
            finally:
                if client is None:
                    pool.shutdown(cancel_futures=True)
        finally:
            bar.close()
        return results

    return run


def _down_chunk(url: str, src: str, dst: str, idx, token: str) -> None:
    a, b = _open(url, src, token), _open(url, dst, token)
    own = _slices(idx, b.chunks, b.shape)
    region = tuple(slice(2 * s.start, min(2 * s.stop, n)) for s, n in zip(own, a.shape, strict=True))
    b[own] = _down2(np.asarray(a[region]))


def _count_chunk(url: str, name: str, idx, token: str) -> int:
    a = _open(url, name, token)
    return int(np.count_nonzero(np.asarray(a[_slices(idx, a.chunks, a.shape)])))


def _blocks(arr) -> list:

    return list(itertools.product(*[range(g) for g in grid_of(arr.shape, arr.chunks)]))


def write_pyramid(url: str, prefix: str, levels: int, chunk: int, run, token: str) -> None:
    """Levels ``prefix1``..``prefixN``: 2x max-downsampling of the level above, one task per output chunk."""
    import zarr

    group = zarr.open_group(url, mode="r+")
    for k in range(1, levels + 1):
        prev = array_at(group, f"{prefix}{k - 1}")
        arr = create_array(group, f"{prefix}{k}", [(s + 1) // 2 for s in prev.shape], chunk)
        items = [(url, f"{prefix}{k - 1}", f"{prefix}{k}", b, token) for b in _blocks(arr)]
        run(_down_chunk, items, f"pyramid {prefix}{k}")


def _setting(manifest: dict, key: str, default=None):
    return manifest.get("settings", {}).get(key, manifest.get(key, default))


def missing_chunks(url: str, manifest: dict) -> int:
    chunk = (int(_setting(manifest, "chunk")),) * 3
    keys = {chunk_key(b, chunk) for b in chunk_boxes(manifest["settings"]["input"]["shape"], chunk)}
    return len(keys - done_keys(url))


def _leftovers(url: str) -> list[str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    return [w for w in (*WORK, TAKEOVER) if fs.exists(f"{root.rstrip('/')}/{w}")]


def _locked(url: str) -> bool:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    return fs.exists(f"{root.rstrip('/')}/{LOCK}")


def _cleanup(url: str, lock) -> None:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    for name in _leftovers(url):
        _step(f"cleanup {name}", lock)
        fs.rm(f"{root.rstrip('/')}/{name}", recursive=True)


def _finish(url: str, manifest: dict, run, lock, report: FinalizeReport) -> None:
    import zarr

    token = uuid.uuid4().hex
    group = zarr.open_group(url, mode="r")
    steps = _setting(manifest, "postprocess")
    if steps is not None:
        work = WorkArrays(url, CLASSES, "0", token)
        result = postprocess_chunks(work, PostprocessConfig.from_dict(steps), run)
        foreground, report.driver = result["foreground"], result["driver"]
    else:
        foreground = sum(run(_count_chunk, [(url, "0", b, token) for b in _blocks(group["0"])], "count foreground"))
    levels, chunk = int(_setting(manifest, "pyramid", 0)), int(_setting(manifest, "chunk"))
    probabilities = bool(_setting(manifest, "probabilities", False))
    write_pyramid(url, "", levels, chunk, run, token)
    if probabilities:
        write_pyramid(url, f"{PROBABILITIES}/", levels, chunk, run, token)
    _step("metadata", lock)
    write_ome_metadata(url, manifest, levels, probabilities)
    voxels = math.prod(array_at(group, "0").shape)
    report.foreground_share = foreground / max(voxels, 1)
    summary = {"voxels": voxels, "foreground_share": report.foreground_share, "driver": report.driver}
    _step("complete", lock)
    group = zarr.open_group(url, mode="r+")
    group.attrs[MANIFEST_KEY] = {**manifest, "complete": True, "summary": summary}


def finalize_volume(
    url: str, client=None, progress: bool = True, wait_s: float = 0.0, pyramid: int | None = None
) -> FinalizeReport:
    """Complete the output at ``url`` if every chunk is done and no live process is finalizing it (see the module
    doc); safe to run any number of times, from any number of processes. ``pyramid``: the finishing run's
    ``--pyramid`` (a finishing setting; None keeps the manifest's), recorded in the completed manifest."""
    t0 = time.monotonic()
    report = FinalizeReport()
    manifest = read_manifest(url)
    if manifest is None:
        raise ScrollOutputError(f"{url} holds no output of 'nnunetv2_topo predict' (no manifest); check the path")
    if not manifest.get("complete"):
        report.missing = missing_chunks(url, manifest)
        if report.missing:
            manifest = read_manifest(url) or manifest  # a finalizer may have completed it and removed the markers
            if not manifest.get("complete"):
                return report
    if manifest.get("complete") and not _leftovers(url) and not _locked(url):
        report.complete, report.missing = True, 0
        return report
    lock = StoreLock(url, "finalize")
    try:
        lock.acquire(wait_s)
    except LockBusyError:
        held = lock.holder() or {}
        report.busy = f"{held.get('owner')}, {held.get('purpose')}"
        return report
    with lock:
        manifest = read_manifest(url) or manifest
        if pyramid is not None and not manifest.get("complete"):
            manifest = {**manifest, "settings": {**manifest.get("settings", {}), "pyramid": int(pyramid)}}
        _step("begin", lock)
        if not manifest.get("complete"):
            _finish(url, manifest, make_runner(client, progress, lock), lock, report)
            report.finalized_here = True
        _cleanup(url, lock)
        _step("end", lock)
    report.complete, report.missing = True, 0
    report.seconds = time.monotonic() - t0
    return report
