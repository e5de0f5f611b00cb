"""``predict`` over a whole volume: check everything, scan the volume once (nonzero bounding box, value range, ZScore
statistics), create or resume the output, predict the unfinished chunks (here or on Dask), then finish the volume
(global post-processing, pyramid, OME-Zarr metadata) once every chunk of every part is written.

Work units are blocks of chunks (:func:`~nnunetv2_topo.scroll.grid.plan_block`): as wide in y and x as the tile cache
allows while a worker walks the block's chunks in C order, keeping each tile from the first chunk that needs it to
the last (:class:`~nnunetv2_topo.scroll.blending.TileCache`), so a tile is predicted once inside a block and again
only on a block's border. The manifest records what the output is made of (the models' file contents, the device,
AMP and the library versions, the input and the settings that change a chunk); a resumed run that differs is refused.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from nnunetv2_topo.inference.models import ModelFolder
from nnunetv2_topo.postprocessing.steps import PostprocessConfig
from nnunetv2_topo.scroll.grid import Box, chunk_blocks, chunk_boxes, chunk_key, plan_block
from nnunetv2_topo.scroll.source import SourceSpec

MANIFEST_VERSION = 2


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

        from nnunetv2_topo.inference.models import use_topo_trainers
        from nnunetv2_topo.inference.predict import load_models
        from nnunetv2_topo.scroll.blending import ChunkModel, TileCache
        from nnunetv2_topo.scroll.source import CachedReader
        from nnunetv2_topo.scroll.writer import ChunkWriter

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
        from nnunetv2_topo.scroll.blending import fused_chunk_probability

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


def part_units(units: list, num_parts: int, part_id: int) -> list:
    """Contiguous share ``part_id`` of ``num_parts`` (neighbouring blocks stay in one part)."""
    n = len(units)
    return units[part_id * n // num_parts : (part_id + 1) * n // num_parts]


def input_fits(geometries, source: SourceSpec, cache_bytes: int) -> Callable[[list[Box]], bool]:
    """Whether the stored input chunks under a layer of chunks (their tiles' regions, every model) fit the input
    cache, so that a block's walk reads each of them once."""
    itemsize = np.dtype(source.dtype).itemsize * math.prod(source.chunks)

    def fits(boxes: list[Box]) -> bool:
        total = 0
        for g in geometries:
            t_boxes = [t for t in (g.t_box(b) for b in boxes) if t is not None]
            if not t_boxes:
                continue
            union = tuple((min(t[d][0] for t in t_boxes), max(t[d][1] for t in t_boxes)) for d in range(3))
            img, _ = g.image_source(g.region(g.tiles(union)))
            total += math.prod(
                (hi + o - 1) // n - (lo + o) // n + 1 if hi > lo else 0
                for (lo, hi), o, n in zip(img, source.offset, source.chunks, strict=True)
            )
        return total * itemsize <= cache_bytes

    return fits


def split_units(units: list[list[Box]], at_least: int, chunk: int) -> list[list[Box]]:
    """Each unit cut into equal runs of its z layers of chunks so that there are ``at_least`` units (as far as the
    layers allow); the tiles on a cut are predicted on both sides."""
    if not units or len(units) >= at_least:
        return units
    pieces = -(-at_least // len(units))
    out = []
    for unit in units:
        layers = sorted({b[0][0] for b in unit})
        n = min(pieces, len(layers))
        for i in range(n):
            keep = set(layers[i * len(layers) // n : (i + 1) * len(layers) // n])
            out.append([b for b in unit if b[0][0] in keep])
    return out


@dataclass
class ScrollReport:
    voxels: int = 0
    chunks_total: int = 0
    chunks_before: int = 0
    stats: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    grid_tiles: int = 0
    foreground_share: float | None = None
    complete: bool = False
    stages: dict = field(default_factory=dict)  # seconds of scan, predict, finalize
    block: tuple = ()
    finalize: object = None  # the FinalizeReport of nnunetv2_topo.scroll.finalize

    def total(self, key: str) -> float:
        return sum(s.get(key, 0) for s in self.stats)

    def summary(self, itemsize: int) -> str:
        done = int(self.total("chunks"))
        share = done / max(self.chunks_total, 1)  # of the volume this run predicted
        rate = self.voxels * share / max(self.stages.get("predict", self.seconds), 1e-9)
        amp = self.total("bytes_read") / max(self.voxels * itemsize * share, 1)
        tiles = self.total("tiles_predicted") / max(self.grid_tiles * share, 1)
        peak = max((s.get("peak_rss_mb", 0) for s in self.stats), default=0)
        fg = "" if self.foreground_share is None else f", foreground {self.foreground_share:.2%}"
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in self.stages.items())
        return (
            f"{self.voxels} voxels, {self.chunks_total} chunks: {done} predicted ({int(self.total('skipped'))} empty "
            f"or masked, skipped), {self.chunks_before} done before; {self.seconds:.1f} s ({stages}; "
            f"{rate:.3g} voxels/s){fg}; tiles predicted / grid tiles {tiles:.2f} "
            f"({int(self.total('tiles_predicted'))} of {self.grid_tiles} with every fold and model, reused "
            f"{int(self.total('tiles_reused'))}); bytes read / input bytes {amp:.2f} (read amplification); "
            f"work units of {'x'.join(map(str, self.block))} chunks; peak memory per worker {peak:.0f} MB; "
            f"{'complete' if self.complete else 'not complete (other parts)'}"
        )


_DIGESTS: dict = {}


def file_digest(path) -> str:
    """sha256 of a file's content (remembered per path, size and mtime within this process)."""
    import os

    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        with open(path, "rb") as f:
            _DIGESTS[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _DIGESTS[key]


def model_identity(folder: ModelFolder) -> dict:
    """The content hashes of what a model folder predicts with: plans.json, dataset.json, each fold's checkpoint."""
    names = ["plans.json", "dataset.json", *(f"fold_{f}/{folder.checkpoint}" for f in folder.folds)]
    return {name: file_digest(folder.path / name) for name in names}


def runtime_identity(device: str) -> dict:
    """The device type, AMP (on for CUDA, as nnU-Net predicts) and the versions that shape the numbers."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    import nnunetv2_topo

    try:
        nnunet = version("nnunetv2")
    except PackageNotFoundError:  # pragma: no cover - nnU-Net is a dependency
        nnunet = "unknown"
    return {"device": device, "amp": device == "cuda", "nnunetv2_topo": nnunetv2_topo.__version__,
            "nnunetv2": nnunet, "torch": torch.__version__}  # fmt: skip


def settings_of(
    source, folders, weights, fusion, tta, steps, chunk, pyramid, probabilities, skip_empty, device="cpu", mask=None
) -> dict:
    """What an output is made with; a resumed run must match it (``pyramid``, a finishing setting, may differ)."""
    return {
        "version": MANIFEST_VERSION,
        "input": source.to_dict(),
        "mask": None if mask is None else mask.to_dict(),
        "models": [
            {"files": model_identity(f), "folds": list(f.folds), "checkpoint": f.checkpoint, "weight": w}
            for f, w in zip(folders, weights, strict=True)
        ],
        "runtime": runtime_identity(device),
        "fusion": fusion,
        "tta": tta,
        "postprocess": None if steps is None else steps.to_dict(),
        "chunk": chunk,
        "pyramid": pyramid,
        "probabilities": probabilities,
        "skip_empty": skip_empty,
    }


def settings_differences(old: dict, new: dict) -> list[str]:
    """What differs between a stored manifest's settings and this run's, named for a person: the model file whose
    content changed, the library whose version differs, the setting and its two values (``pyramid`` ignored)."""
    from nnunetv2_topo.scroll.writer import manifest_differences

    out = []
    old_models, new_models = old.get("models") or [], new.get("models") or []
    if len(old_models) != len(new_models):
        out.append(f"models: {len(old_models)} -> {len(new_models)}")
    for i, (a, b) in enumerate(zip(old_models, new_models)):
        for k in sorted(set(a) | set(b)):
            if k == "files" and isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
                changed = sorted(n for n in set(a[k]) | set(b[k]) if a[k].get(n) != b[k].get(n))
                if changed:
                    out.append(f"model {i + 1}: {', '.join(changed)} changed (content hash)")
            elif a.get(k) != b.get(k):
                out.append(f"model {i + 1} {k}: {a.get(k)!r} -> {b.get(k)!r}")
    for group in ("runtime", "input", "mask"):
        a, b = old.get(group), new.get(group)
        if isinstance(a, dict) and isinstance(b, dict):
            keys = sorted(set(a) | set(b))
            out += [f"{group} {k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
        elif a != b:
            out.append(f"{group}: {a!r} -> {b!r}")
    skip = ("models", "runtime", "input", "mask", "pyramid")
    rest_old, rest_new = ({k: v for k, v in d.items() if k not in skip} for d in (old, new))
    return out + manifest_differences(rest_old, rest_new)


def _progress_topic(key: str) -> str:
    return f"nnunetv2_topo-progress-{key[:12]}"


def predict_scroll(
    source: SourceSpec,
    loaded: list,
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
    mask: SourceSpec | None = None,
    deterministic: bool = False,
    intensity_check: Callable[[float, float], None] | None = None,
    overwrite: bool = False,
    zarr_format: int = 2,
) -> ScrollReport:
    """Run (or resume) the prediction of ``source`` into ``output``; see the module doc. ``loaded``: the models as
    :func:`~nnunetv2_topo.inference.predict.load_models` gives them: checked, and used when ``client`` is None; with
    a ``client`` the list is emptied once checked (this process keeps no model copy). ``intensity_check(low, high)``
    is given the region's value range from the scan (it raises to refuse)."""
    from tqdm import tqdm

    from nnunetv2_topo.scroll.blending import ChunkModel, check_spacing, normalization_of
    from nnunetv2_topo.scroll.finalize import finalize_volume
    from nnunetv2_topo.scroll.source import scan_volume
    from nnunetv2_topo.scroll.writer import done_keys, existing_output, physical_frame, prepare_output

    for m in loaded:
        normalization_of(m)
        check_spacing(m, source.spacing)
    settings = settings_of(
        source, folders, weights, fusion, tta, steps, chunk, pyramid, probabilities, skip_empty, device, mask
    )
    report = ScrollReport(voxels=int(np.prod(source.shape)))
    t0 = time.monotonic()
    output_meta = {"zarr_format": zarr_format, "frame": physical_frame(source)}
    new = {"settings": settings, "output": output_meta}
    old = existing_output(output, new, overwrite, num_parts, differences=settings_differences)
    if old is not None:
        if old.get("complete"):
            report.finalize = finalize_volume(output, progress=False)  # ends a clean-up that a kill cut short
            report.complete = True
            report.chunks_total = report.chunks_before = len(chunk_boxes(source.shape, (chunk,) * 3))
            return report
        scan = old["scan"]
        settings["pyramid"] = old["settings"].get("pyramid")  # kept; finalize_volume is given this run's value
    else:
        zscore = any(normalization_of(m)[0] == "ZScoreNormalization" for m in loaded)
        scan = scan_volume(source, zscore, client, progress)
        report.stages["scan"] = time.monotonic() - t0
    if intensity_check is not None and scan.get("range"):
        intensity_check(*scan["range"])
    crop = tuple(tuple(c) for c in scan["crop"])
    chunk_models = [ChunkModel(m, tuple(scan["zscore"]) if scan["zscore"] else (0.0, 1.0)) for m in loaded]
    geometries = [cm.geometry(source.shape, crop) for cm in chunk_models]
    folds = [len(m.predictor.list_of_parameters) for m in loaded]
    report.grid_tiles = sum(g.n_tiles * f for g, f in zip(geometries, folds, strict=True))
    itemsize = 2 if device == "cuda" else 4  # a tile prediction: AMP's half precision on CUDA, else float32
    heads = [m.predictor.label_manager.num_segmentation_heads for m in loaded]
    budgets = [
        (tile_cache_mb << 20) // len(loaded) // (h * math.prod(g.patch) * itemsize * f)
        for g, h, f in zip(geometries, heads, folds, strict=True)
    ]
    # the blocks are planned once, by the run that creates the output, so that every part splits them alike
    block = old.get("block") if old is not None else None
    if block is None:
        fits = input_fits(geometries, source, cache_mb << 20)
        block = plan_block(geometries, source.shape, chunk, budgets, min_units=num_parts, input_fits=fits)
    report.block = tuple(block)
    manifest = {"settings": settings, "scan": scan, "grid": [g.to_dict() for g in geometries], "block": report.block}
    manifest["output"] = output_meta
    classes = steps is not None
    existing = prepare_output(
        output, manifest, source.shape, chunk, probabilities, classes, overwrite, num_parts,
        differences=settings_differences,
    )  # fmt: skip
    if existing is not None and existing.get("block"):  # another part created the output meanwhile: its plan
        manifest["block"] = report.block = tuple(existing["block"])
    threshold = 0.5 if steps is None else steps.threshold
    high = None if steps is None else steps.hysteresis_high
    run = RunSpec(
        source, tuple(folders), tuple(weights), device, tta, fusion, crop,  # type: ignore[arg-type]
        None if scan["zscore"] is None else tuple(scan["zscore"]), output, chunk, threshold, high,  # type: ignore
        classes, probabilities, skip_empty, cache_mb << 20, tile_cache_mb << 20, mask=mask,
        deterministic=deterministic,
    )  # fmt: skip
    key = hashlib.sha1(json.dumps([manifest, output, device], sort_keys=True, default=str).encode()).hexdigest()
    run = RunSpec(**{**run.__dict__, "key": key})
    if client is not None:  # the workers load their own models; this process keeps none
        del chunk_models
        loaded.clear()
        gc.collect()

    all_units = chunk_blocks(source.shape, chunk, report.block)
    report.chunks_total = sum(len(u) for u in all_units)
    done = done_keys(output)
    mine = part_units(all_units, num_parts, part_id)
    if client is not None:  # at least two units per worker thread: split this part's blocks in z
        info = client.scheduler_info(n_workers=-1).get("workers", {})
        mine = split_units(mine, 2 * max(1, sum(int(w.get("nthreads", 1)) for w in info.values())), chunk)
    todo = [[b for b in u if chunk_key(b, (chunk,) * 3) not in done] for u in mine]
    todo = [u for u in todo if u]
    report.chunks_before = len(done)
    if done and progress:
        print(
            f"resuming {output}: {len(done)} of {report.chunks_total} chunks already done, "
            f"{sum(len(u) for u in todo)} to predict in this part",
            file=sys.stderr,
        )
    t1 = time.monotonic()
    bar = tqdm(
        total=sum(len(u) for u in todo), desc="predict volume", unit="chunk", disable=not progress, file=sys.stderr
    )
    try:
        if client is None:
            from nnunetv2_topo.scroll import cluster

            with cluster._MODELS_LOCK:
                cluster._LOADED_MODELS.clear()
                cluster._LOADED_MODELS[run.key] = LoadedModels(run, loaded)
            for u in todo:
                report.stats.append(cluster.process_unit(run, u, on_chunk=bar.update))
        else:
            from distributed import as_completed

            from nnunetv2_topo.scroll.cluster import process_unit

            topic = _progress_topic(run.key)
            client.subscribe_topic(topic, lambda event: bar.update(int(event[1])))
            try:
                futures = client.map(process_unit, [run] * len(todo), todo, [topic] * len(todo), pure=False)
                for f in as_completed(futures):
                    report.stats.append(f.result())
            finally:
                client.unsubscribe_topic(topic)
    finally:
        bar.close()
    report.stages["predict"] = time.monotonic() - t1
    report.finalize = finalize_volume(output, client, progress, pyramid=pyramid)
    if report.finalize.finalized_here:
        report.stages["finalize"] = report.finalize.seconds
    report.complete = report.finalize.complete
    report.foreground_share = report.finalize.foreground_share
    report.seconds = time.monotonic() - t0
    return report
