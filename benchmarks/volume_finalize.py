"""Finalize alone, at growing chunk counts: is its cost linear in the chunks?

Whole-volume ``predict`` ends with the finalize step (global post-processing across chunk borders, pyramid, OME-Zarr
metadata, clean-up; ``nnunetv2_topo/scroll/finalize.py``). This script writes precomputed class codes (blobs that
cross many chunk borders, some holding a class-2 voxel) into an output as ``predict`` leaves it, with tiny chunks so
that thousands of chunks stay cheap, and times ``finalize_volume`` at each chunk count: time per chunk, CPU per
chunk, and what the driver held (border labels and touching pairs) per chunk. Target: time per chunk within 1.5x
across the range. ``--old`` also times the previous implementation's label-equivalence step (one dict of all chunks
passed to every task) where it is affordable.

    python benchmarks/volume_finalize.py [--chunk 16] [--counts 512 2048 8192] [--old 512 1024]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GRIDS = {512: (8, 8, 8), 1024: (8, 8, 16), 2048: (8, 16, 16), 4096: (16, 16, 16), 8192: (16, 16, 32)}


def classes_for(shape, seed: int = 0) -> np.ndarray:
    """0/1/2 class codes from smooth noise (the config's thresholds do not matter: the codes are given): 1 above
    its mean + 0.5 std (about 30 % of the voxels: blobs from a few voxels to a network spanning the volume), 2 above
    mean + 2 std; the same density at every size."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    p = gaussian_filter(rng.random(shape, dtype=np.float32), 2.5)
    mean, std = float(p.mean()), float(p.std())
    return ((p > mean + 0.5 * std).astype(np.uint8) + (p > mean + 2 * std)).astype(np.uint8)


def prepared(url: str, classes: np.ndarray, chunk: int) -> None:
    """An output as ``predict`` leaves it once every chunk is written."""
    import fsspec

    from nnunetv2_topo.postprocessing.steps import PostprocessConfig
    from nnunetv2_topo.scroll.grid import chunk_boxes, chunk_key
    from nnunetv2_topo.scroll.writer import CLASSES, DONE, prepare_output

    config = PostprocessConfig(threshold=0.5, hysteresis_high=0.9, min_component_size=100, patch_holes=0)
    settings = {"input": {"shape": list(classes.shape)}, "chunk": chunk, "pyramid": 1, "probabilities": False}
    settings["postprocess"] = config.to_dict()
    manifest = {"settings": settings, "scan": {}, "grid": [], "output": {"zarr_format": 2}}
    prepare_output(url, manifest, classes.shape, chunk, False, True)
    import zarr

    zarr.open_group(url, mode="r+")[CLASSES][...] = classes
    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(f"{root}/{DONE}", exist_ok=True)
    for box in chunk_boxes(classes.shape, (chunk,) * 3):
        fs.pipe_file(f"{root}/{DONE}/{chunk_key(box, (chunk,) * 3)}", b"")


def one(count: int, chunk: int) -> dict:
    """Time one finalize in this process (the output is prepared by a child process, so that the peak RSS is the
    finalize's own); returns the row."""
    from nnunetv2_topo.scroll.finalize import finalize_volume

    shape = tuple(g * chunk for g in GRIDS[count])
    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "out.zarr")
        subprocess.run([sys.executable, __file__, "--chunk", str(chunk), "--prepare", str(count), url], check=True)
        cpu0, t0 = time.process_time(), time.perf_counter()
        report = finalize_volume(url, progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert report.finalized_here
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"count": count, "voxels": int(np.prod(shape)), "wall": wall, "cpu": cpu, "driver": report.driver,
            "rss": rss}  # fmt: skip


def old_equivalence(count: int, chunk: int) -> tuple[float, float]:
    """Wall and CPU seconds of main's ``kept_components`` (label + join + solve) at ``count`` chunks."""
    import importlib.util

    import zarr

    from nnunetv2_topo.postprocessing.steps import PostprocessConfig

    source = subprocess.run(["git", "show", "main:nnunetv2_topo/scroll/postprocess.py"], capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "old_postprocess.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("old_postprocess", path)
        assert spec is not None and spec.loader is not None  # a .py file has a source loader
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        shape = tuple(g * chunk for g in GRIDS[count])
        group = zarr.open_group(str(Path(tmp) / "o.zarr"), mode="w")
        classes = group.create_array("c", shape=shape, chunks=(chunk,) * 3, dtype="uint8")
        classes[...] = classes_for(shape)
        labels = group.create_array("l", shape=shape, chunks=(chunk,) * 3, dtype="uint32", fill_value=0)
        config = PostprocessConfig(threshold=0.5, hysteresis_high=0.9, min_component_size=100, patch_holes=0)
        t0, c0 = time.perf_counter(), time.process_time()
        old.kept_components(classes, labels, config)
        return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunk", type=int, default=16, help="chunk edge in voxels (default 16)")
    ap.add_argument("--counts", type=int, nargs="+", default=[512, 2048, 8192], choices=sorted(GRIDS))
    ap.add_argument("--old", type=int, nargs="*", default=[], choices=sorted(GRIDS), help="also time main's step")
    ap.add_argument("--row", type=int, help=argparse.SUPPRESS)  # one row in a fresh process (peak RSS per row)
    ap.add_argument("--prepare", nargs=2, help=argparse.SUPPRESS)  # COUNT URL: write the output to finalize
    args = ap.parse_args(argv)
    if args.prepare is not None:
        count, url = int(args.prepare[0]), args.prepare[1]
        prepared(url, classes_for(tuple(g * args.chunk for g in GRIDS[count])), args.chunk)
        return 0
    if args.row is not None:
        print(repr(one(args.row, args.chunk)))
        return 0
    print(f"load: {os.getloadavg()}; chunk {args.chunk}³; cpu count {os.cpu_count()}\n")
    rows = []
    for count in args.counts:  # each row in its own process: peak RSS per row, no warm caches
        out = subprocess.run([sys.executable, __file__, "--chunk", str(args.chunk), "--row", str(count)],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        rows.append(eval(out.strip().splitlines()[-1]))
    base = rows[0]
    print("| chunks | voxels | wall s | wall ms / chunk | ratio | CPU ms / chunk | ratio | driver: border labels,"
          " pairs (bytes / chunk) | peak RSS MB (finalize process) |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        per, cpu = 1000 * r["wall"] / r["count"], 1000 * r["cpu"] / r["count"]
        ratio = per / (1000 * base["wall"] / base["count"])
        cratio = cpu / (1000 * base["cpu"] / base["count"])
        d = r["driver"]
        print(f"| {r['count']} | {r['voxels']} | {r['wall']:.1f} | {per:.2f} | {ratio:.2f} | {cpu:.2f} | "
              f"{cratio:.2f} | {d['border_labels']}, {d['pairs']} ({d['bytes'] / r['count']:.0f}) | "
              f"{r['rss']:.0f} |")  # fmt: skip
    for count in args.old:
        wall, cpu = old_equivalence(count, args.chunk)
        print(f"\nmain's label equivalence alone (kept_components), {count} chunks: wall {wall:.1f} s, CPU {cpu:.1f} s")
    print(f"\nload after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
