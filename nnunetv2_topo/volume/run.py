"""``predict`` over a whole volume: check everything, scan the volume once (nonzero bounding box, ZScore statistics),
create or resume the output, predict the unfinished chunks (here or on Dask), then finish the volume (global
post-processing, pyramid, OME-Zarr metadata) once every chunk of every part is written.

Work units are slabs (the output chunks that share a z index), so one process walks neighbouring chunks in order and
its tile cache gives each tile of the global grid to every chunk it touches without predicting it again.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nnunetv2_topo.inference.models import ModelFolder
from nnunetv2_topo.postprocessing.steps import PostprocessConfig
from nnunetv2_topo.volume.grid import Box, chunk_boxes, chunk_key
from nnunetv2_topo.volume.source import SourceSpec

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to predict chunks (picklable)."""

    source: SourceSpec
    folders: tuple[ModelFolder, ...]
    weights: tuple[float, ...]
    device: str
    tta: str
    fusion: str
    crop: Box
    zscore: tuple[float, float] | None
    output: str
    chunk: int
    threshold: float
    high: float | None
    classes: bool
    probabilities: bool
    skip_empty: bool
    cache_bytes: int
    tile_cache_bytes: int
    key: str = ""


class Engine:
    """One process's models, caches and writer for a run (see :func:`nnunetv2_topo.volume.cluster.engine_for`)."""

    def __init__(self, run: RunSpec, loaded=None) -> None:
        import torch

        from nnunetv2_topo.inference.models import use_topo_trainers
        from nnunetv2_topo.inference.predict import load_models
        from nnunetv2_topo.volume.blending import ChunkModel, TileCache
        from nnunetv2_topo.volume.source import CachedReader
        from nnunetv2_topo.volume.writer import ChunkWriter

        self.run = run
        if loaded is None:
            use_topo_trainers()
            loaded = load_models(run.folders, run.weights, torch.device(run.device), progress=False)
        self.models = [ChunkModel(m, run.zscore) for m in loaded]
        for m in self.models:
            m.tile_cache = TileCache(run.tile_cache_bytes // len(self.models))
        self.geometries = [m.geometry(run.source.shape, run.crop) for m in self.models]
        self.reader = CachedReader(run.source, run.cache_bytes)
        self.writer = ChunkWriter(run.output, run.chunk, run.threshold, run.high, run.classes, run.probabilities)
        self.chunks = self.skipped = 0

    def process(self, box: Box) -> None:
        from nnunetv2_topo.volume.blending import fused_chunk_probability

        r = self.run
        p = fused_chunk_probability(self.models, self.geometries, box, self.reader, r.tta, r.fusion, r.skip_empty)
        self.writer.write(box, p)
        self.chunks += 1
        self.skipped += p is None

    def counters(self) -> dict:
        return {
            "chunks": self.chunks,
            "skipped": self.skipped,
            "bytes_read": self.reader.bytes_read,
            "tiles_predicted": sum(m.tile_cache.predicted for m in self.models),
            "tiles_reused": sum(m.tile_cache.reused for m in self.models),
            "foreground": self.writer.foreground,
        }


def scan_volume(source: SourceSpec, zscore: bool) -> tuple[Box, tuple[float, float] | None]:
    """The nonzero bounding box (nnU-Net's crop; the whole volume when all zero) and, for ZScore plans, the cropped
    volume's mean and std (float64); one read of the volume (two for ZScore)."""
    import dask

    from nnunetv2_topo.volume.source import dask_array

    arr = dask_array(source)
    nz = arr != 0
    projections = dask.compute(nz.any(axis=(1, 2)), nz.any(axis=(0, 2)), nz.any(axis=(0, 1)))
    if not projections[0].any():
        crop = tuple((0, s) for s in source.shape)
    else:
        crop = tuple((int(np.argmax(p)), int(len(p) - np.argmax(p[::-1]))) for p in projections)
    stats = None
    if zscore:
        sub = arr[tuple(slice(lo, hi) for lo, hi in crop)].astype(np.float64)
        mean = float(sub.mean().compute())
        std = float(np.sqrt(((sub - mean) ** 2).mean().compute()))
        stats = (mean, std)
    return crop, stats  # type: ignore[return-value]


def units_of(shape: Sequence[int], chunk: int) -> list[list[Box]]:
    """Work units: the chunks of each z slab, in C order."""
    units: dict[int, list[Box]] = {}
    for box in chunk_boxes(shape, (chunk,) * 3):
        units.setdefault(box[0][0], []).append(box)
    return [units[z] for z in sorted(units)]


def part_units(units: list, num_parts: int, part_id: int) -> list:
    """Contiguous share ``part_id`` of ``num_parts`` (contiguous slabs keep tile reuse within a part)."""
    n = len(units)
    return units[part_id * n // num_parts : (part_id + 1) * n // num_parts]


@dataclass
class VolumeReport:
    voxels: int = 0
    chunks_total: int = 0
    chunks_before: int = 0
    stats: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    grid_tiles: int = 0
    foreground_share: float | None = None
    complete: bool = False
    finalize: object = None  # the FinalizeReport of nnunetv2_topo.volume.finalize

    def total(self, key: str) -> float:
        return sum(s.get(key, 0) for s in self.stats)

    def summary(self, itemsize: int) -> str:
        done = int(self.total("chunks"))
        rate = self.voxels * done / max(self.chunks_total, 1) / max(self.seconds, 1e-9)
        amp = self.total("bytes_read") / max(self.voxels * itemsize * done / max(self.chunks_total, 1), 1)
        peak = max((s.get("peak_rss_mb", 0) for s in self.stats), default=0)
        fg = "" if self.foreground_share is None else f", foreground {self.foreground_share:.2%}"
        return (
            f"{self.voxels} voxels, {self.chunks_total} chunks: {done} predicted ({int(self.total('skipped'))} empty, "
            f"skipped), {self.chunks_before} done before; {self.seconds:.1f} s ({rate:.3g} voxels/s){fg}; "
            f"read amplification {amp:.2f}x; tiles predicted {int(self.total('tiles_predicted'))} "
            f"(grid {self.grid_tiles} per model and fold), reused {int(self.total('tiles_reused'))}; "
            f"peak memory per worker {peak:.0f} MB; {'complete' if self.complete else 'not complete (other parts)'}"
        )


def settings_of(source, folders, weights, fusion, tta, steps, chunk, pyramid, probabilities, skip_empty) -> dict:
    """What an output is made with; a resumed run must match it exactly."""
    return {
        "version": MANIFEST_VERSION,
        "input": source.to_dict(),
        "models": [
            {"path": str(f.path.resolve()), "folds": list(f.folds), "checkpoint": f.checkpoint, "weight": w}
            for f, w in zip(folders, weights, strict=True)
        ],
        "fusion": fusion,
        "tta": tta,
        "postprocess": None if steps is None else steps.to_dict(),
        "chunk": chunk,
        "pyramid": pyramid,
        "probabilities": probabilities,
        "skip_empty": skip_empty,
    }


def predict_volume(
    source: SourceSpec,
    loaded: Sequence,
    folders: Sequence[ModelFolder],
    weights: Sequence[float],
    device: str,
    tta: str,
    fusion: str,
    steps: PostprocessConfig | None,
    output: str,
    chunk: int,
    pyramid: int = 0,
    probabilities: bool = False,
    skip_empty: bool = True,
    client=None,
    num_parts: int = 1,
    part_id: int = 0,
    cache_mb: int = 1024,
    tile_cache_mb: int = 2048,
    progress: bool = True,
    overwrite: bool = False,
    zarr_format: int = 2,
) -> VolumeReport:
    """Run (or resume) the prediction of ``source`` into ``output``; see the module doc. ``loaded``: the models as
    :func:`~nnunetv2_topo.inference.predict.load_models` gives them (checked, and used when ``client`` is None)."""
    from tqdm import tqdm

    from nnunetv2_topo.volume.blending import ChunkModel, check_spacing, normalization_of
    from nnunetv2_topo.volume.finalize import finalize_volume
    from nnunetv2_topo.volume.writer import existing_output, physical_frame, prepare_output

    for m in loaded:
        normalization_of(m)
        check_spacing(m, source.spacing)
    settings = settings_of(source, folders, weights, fusion, tta, steps, chunk, pyramid, probabilities, skip_empty)
    report = VolumeReport(voxels=int(np.prod(source.shape)))
    t0 = time.monotonic()
    output_meta = {"zarr_format": zarr_format, "frame": physical_frame(source)}
    old = existing_output(output, {"settings": settings, "output": output_meta}, overwrite, num_parts)
    if old is not None:
        if old.get("complete"):
            report.finalize = finalize_volume(output, progress=False)  # ends a clean-up that a kill cut short
            report.complete = True
            report.chunks_total = report.chunks_before = len(chunk_boxes(source.shape, (chunk,) * 3))
            return report
        scan = old["scan"]
    else:
        zscore = any(normalization_of(m)[0] == "ZScoreNormalization" for m in loaded)
        crop, stats = scan_volume(source, zscore)
        scan = {"crop": [list(c) for c in crop], "zscore": None if stats is None else list(stats)}
    crop = tuple(tuple(c) for c in scan["crop"])
    geometries = [
        ChunkModel(m, tuple(scan["zscore"]) if scan["zscore"] else (0.0, 1.0)).geometry(source.shape, crop)
        for m in loaded
    ]
    report.grid_tiles = sum(g.n_tiles for g in geometries)
    manifest = {"settings": settings, "scan": scan, "grid": [g.to_dict() for g in geometries], "output": output_meta}
    classes = steps is not None
    prepare_output(output, manifest, source.shape, chunk, probabilities, classes, overwrite, num_parts)
    threshold = 0.5 if steps is None else steps.threshold
    high = None if steps is None else steps.hysteresis_high
    run = RunSpec(
        source,
        tuple(folders),
        tuple(weights),
        device,
        tta,
        fusion,
        crop,  # type: ignore[arg-type]
        None if scan["zscore"] is None else tuple(scan["zscore"]),
        output,
        chunk,
        threshold,
        high,  # type: ignore[arg-type]
        classes,
        probabilities,
        skip_empty,
        cache_mb << 20,
        tile_cache_mb << 20,
    )
    key = hashlib.sha1(json.dumps([manifest, output, device], sort_keys=True, default=str).encode()).hexdigest()
    run = RunSpec(**{**run.__dict__, "key": key})

    from nnunetv2_topo.volume.writer import done_keys

    all_units = units_of(source.shape, chunk)
    report.chunks_total = sum(len(u) for u in all_units)
    done = done_keys(output)
    mine = part_units(all_units, num_parts, part_id)
    todo = [[b for b in u if chunk_key(b, (chunk,) * 3) not in done] for u in mine]
    todo = [u for u in todo if u]
    report.chunks_before = len(done)
    bar = tqdm(
        total=sum(len(u) for u in todo), desc="predict volume", unit="chunk", disable=not progress, file=sys.stderr
    )
    try:
        if client is None:
            from nnunetv2_topo.volume import cluster

            cluster._ENGINES.clear()
            cluster._ENGINES[run.key] = Engine(run, loaded)
            for u in todo:
                report.stats.append(cluster.process_unit(run, u, on_chunk=bar.update))
        else:
            from distributed import as_completed

            from nnunetv2_topo.volume.cluster import process_unit

            futures = client.map(process_unit, [run] * len(todo), todo, pure=False)
            sizes = {f.key: len(u) for f, u in zip(futures, todo, strict=True)}
            for f in as_completed(futures):
                report.stats.append(f.result())
                bar.update(sizes[f.key])
    finally:
        bar.close()
    report.finalize = finalize_volume(output, client, progress)
    report.complete = report.finalize.complete
    report.foreground_share = report.finalize.foreground_share
    report.seconds = time.monotonic() - t0
    return report
