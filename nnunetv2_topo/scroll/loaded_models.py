"""What one process predicts chunks with: the run's settings (:class:`RunSpec`, picklable, sent to every Dask
worker) and the process's loaded models, input cache, tile caches and writer (:class:`LoadedModels`), which
:func:`nnunetv2_topo.scroll.cluster.process_unit` keeps across the work units of a run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from nnunetv2_topo.inference.models import ModelFolder, use_topo_trainers
from nnunetv2_topo.inference.predict import load_models
from nnunetv2_topo.scroll.blending import ChunkModel, TileCache, fused_chunk_probability
from nnunetv2_topo.scroll.grid import Box
from nnunetv2_topo.scroll.source import CachedReader, SourceSpec
from nnunetv2_topo.scroll.writer import ChunkWriter


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
    mask: SourceSpec | None = None
    deterministic: bool = False


def set_deterministic(on: bool) -> None:
    """``--deterministic``: cuDNN picks deterministic kernels and no autotuning (bit-identical tiles on a GPU
    from run to run and worker to worker; slower). nnU-Net's predictor turns ``cudnn.benchmark`` on."""
    import torch

    if on:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


class LoadedModels:
    """One process's loaded models, caches and writer for a run (see
    :func:`nnunetv2_topo.scroll.cluster.loaded_models_for`)."""

    def __init__(self, run: RunSpec, loaded=None) -> None:
        import torch

        self.run = run
        if loaded is None:
            use_topo_trainers()
            loaded = load_models(run.folders, run.weights, torch.device(run.device), progress=False)
        set_deterministic(run.deterministic)
        self.models = [ChunkModel(m, run.zscore) for m in loaded]
        for m in self.models:
            m.tile_cache = TileCache(run.tile_cache_bytes // len(self.models))
        self.geometries = [m.geometry(run.source.shape, run.crop) for m in self.models]
        self.reader = CachedReader(run.source, run.cache_bytes)
        self.mask = None if run.mask is None else CachedReader(run.mask, run.cache_bytes // 4)
        self.writer = ChunkWriter(run.output, run.chunk, run.threshold, run.high, run.classes, run.probabilities)
        self.chunks = self.skipped = 0

    def _tiles(self, g, box: Box) -> list:
        t_box = g.t_box(box)
        return [] if t_box is None else g.tiles(t_box)

    def masked_out(self, box: Box) -> bool:
        return self.mask is not None and not self.mask.read(box).any()

    def begin_unit(self, boxes: Sequence[Box]) -> None:
        """Tell each model's tile cache which tiles the unit's chunks (in this order) need, and how often."""
        needed = [b for b in boxes if not self.masked_out(b)]
        for m, g in zip(self.models, self.geometries, strict=True):
            m.tile_cache.expect(Counter(t for b in needed for t in self._tiles(g, b)))

    def prefetch(self, box: Box) -> None:
        """Start reading the input (and mask) of ``box``'s tiles while the current chunk computes."""
        if self.mask is not None:
            self.mask.prefetch(box)
        for g in self.geometries:
            tiles = self._tiles(g, box)
            if tiles:
                self.reader.prefetch(g.image_source(g.region(tiles))[0])

    def process(self, box: Box, next_box: Box | None = None) -> None:
        if next_box is not None:
            self.prefetch(next_box)
        r = self.run
        if self.masked_out(box):
            p = None
        else:
            p = fused_chunk_probability(self.models, self.geometries, box, self.reader, r.tta, r.fusion, r.skip_empty)
            if p is not None and self.mask is not None:
                p[self.mask.read(box) == 0] = 0.0
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
