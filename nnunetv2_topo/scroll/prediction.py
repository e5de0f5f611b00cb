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
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

import numpy as np
from tqdm import tqdm

import nnunetv2_topo
from nnunetv2_topo.inference.models import ModelFolder
from nnunetv2_topo.postprocessing.steps import PostprocessConfig
from nnunetv2_topo.scroll import cluster
from nnunetv2_topo.scroll.blending import ChunkModel, check_spacing, normalization_of
from nnunetv2_topo.scroll.finalize import FinalizeReport, finalize_volume
from nnunetv2_topo.scroll.grid import Box, chunk_blocks, chunk_boxes, chunk_key, plan_block
from nnunetv2_topo.scroll.loaded_models import RunSpec
from nnunetv2_topo.scroll.source import SourceSpec, scan_volume
from nnunetv2_topo.scroll.writer import done_keys, existing_output, manifest_differences, physical_frame, prepare_output

MANIFEST_VERSION = 2


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
    finalize: FinalizeReport | None = None

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
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):  # (hashlib.file_digest is Python >= 3.11)
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def model_identity(folder: ModelFolder) -> dict:
    """The content hashes of what a model folder predicts with: plans.json, dataset.json, each fold's checkpoint."""
    names = ["plans.json", "dataset.json", *(f"fold_{f}/{folder.checkpoint}" for f in folder.folds)]
    return {name: file_digest(folder.path / name) for name in names}


def runtime_identity(device: str) -> dict:
    """The device type, AMP (on for CUDA, as nnU-Net predicts) and the versions that shape the numbers."""
    import torch

    try:
        nnunet = version("nnunetv2")
    except PackageNotFoundError:  # pragma: no cover - nnU-Net is a dependency
        nnunet = "unknown"
    return {"device": device, "amp": device == "cuda", "nnunetv2_topo": nnunetv2_topo.__version__,
            "nnunetv2": nnunet, "torch": torch.__version__}  # fmt: skip


def settings_of(source: SourceSpec, o: ScrollOptions) -> dict:
    """What an output is made with; a resumed run must match it (``pyramid``, a finishing setting, may differ)."""
    return {
        "version": MANIFEST_VERSION,
        "input": source.to_dict(),
        "mask": None if o.mask is None else o.mask.to_dict(),
        "models": [
            {"files": model_identity(f), "folds": list(f.folds), "checkpoint": f.checkpoint, "weight": w}
            for f, w in zip(o.folders, o.weights, strict=True)
        ],
        "runtime": runtime_identity(o.device),
        "fusion": o.fusion,
        "tta": o.tta,
        "postprocess": None if o.steps is None else o.steps.to_dict(),
        "chunk": o.chunk,
        "pyramid": o.pyramid,
        "probabilities": o.probabilities,
        "skip_empty": o.skip_empty,
    }


def settings_differences(old: dict, new: dict) -> list[str]:
    """What differs between a stored manifest's settings and this run's, named for a person: the model file whose
    content changed, the library whose version differs, the setting and its two values (``pyramid`` ignored)."""
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


@dataclass(frozen=True)
class ScrollOptions:
    """What :func:`predict_scroll` is asked for (``predict``'s flags for a Zarr input): the models and how their
    maps are fused, the output and its layout, this part's share, the caches and the progress bar."""

    folders: Sequence[ModelFolder]
    weights: Sequence[float]
    device: str
    tta: str
    fusion: str
    steps: PostprocessConfig | None
    output: str
    chunk: int
    pyramid: int = 0
    probabilities: bool = False
    skip_empty: bool = True
    num_parts: int = 1
    part_id: int = 0
    cache_mb: int = 1024
    tile_cache_mb: int = 2048
    progress: bool = True
    mask: SourceSpec | None = None
    deterministic: bool = False
    overwrite: bool = False
    zarr_format: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "folders", tuple(self.folders))
        object.__setattr__(self, "weights", tuple(self.weights))


def predict_scroll(
    source: SourceSpec,
    loaded: list,
    options: ScrollOptions,
    client=None,
    intensity_check: Callable[[float, float], None] | None = None,
) -> ScrollReport:
    """Run (or resume) the prediction of ``source`` into ``options.output``; see the module doc. ``loaded``: the
    models as :func:`~nnunetv2_topo.inference.predict.load_models` gives them: checked, and used when ``client`` is
    None; with a ``client`` the list is emptied once checked (this process keeps no model copy).
    ``intensity_check(low, high)`` is given the region's value range from the scan (it raises to refuse)."""
    o = options
    for m in loaded:
        normalization_of(m)
        check_spacing(m, source.spacing)
    settings = settings_of(source, o)
    report = ScrollReport(voxels=int(np.prod(source.shape)))
    t0 = time.monotonic()
    output_meta = {"zarr_format": o.zarr_format, "frame": physical_frame(source)}
    new = {"settings": settings, "output": output_meta}
    old = existing_output(o.output, new, o.overwrite, o.num_parts, differences=settings_differences)
    if old is not None and old.get("complete"):
        report.finalize = finalize_volume(o.output, progress=False)  # ends a clean-up that a kill cut short
        report.complete = True
        report.chunks_total = report.chunks_before = len(chunk_boxes(source.shape, (o.chunk,) * 3))
        return report
    if old is not None:
        scan = old["scan"]
        settings["pyramid"] = old["settings"].get("pyramid")  # kept; finalize_volume is given this run's value
    else:
        zscore = any(normalization_of(m)[0] == "ZScoreNormalization" for m in loaded)
        scan = scan_volume(source, zscore, client, o.progress)
        report.stages["scan"] = time.monotonic() - t0
    if intensity_check is not None and scan.get("range"):
        intensity_check(*scan["range"])
    run = _create_output(source, loaded, o, old, scan, {"settings": settings, "scan": scan}, output_meta, report)
    if client is not None:  # the workers load their own models; this process keeps none
        loaded.clear()
        gc.collect()
    todo = _units_to_predict(source, o, report, client)
    t1 = time.monotonic()
    _predict_units(run, loaded, todo, client, o.progress, report)
    report.stages["predict"] = time.monotonic() - t1
    report.finalize = finalize_volume(o.output, client, o.progress, pyramid=o.pyramid)
    if report.finalize.finalized_here:
        report.stages["finalize"] = report.finalize.seconds
    report.complete = report.finalize.complete
    report.foreground_share = report.finalize.foreground_share
    report.seconds = time.monotonic() - t0
    return report


def _create_output(
    source: SourceSpec, loaded: list, o: ScrollOptions, old, scan: dict, manifest: dict, output_meta, report
) -> RunSpec:
    """Plan the work units (once, by the run that creates the output, so that every part splits them alike), create
    or join the output, and return what a worker needs to predict its chunks."""
    crop = tuple(tuple(c) for c in scan["crop"])
    chunk_models = [ChunkModel(m, tuple(scan["zscore"]) if scan["zscore"] else (0.0, 1.0)) for m in loaded]
    geometries = [cm.geometry(source.shape, crop) for cm in chunk_models]
    del chunk_models
    folds = [len(m.predictor.list_of_parameters) for m in loaded]
    report.grid_tiles = sum(g.n_tiles * f for g, f in zip(geometries, folds, strict=True))
    itemsize = 2 if o.device == "cuda" else 4  # a tile prediction: AMP's half precision on CUDA, else float32
    heads = [m.predictor.label_manager.num_segmentation_heads for m in loaded]
    budgets = [
        (o.tile_cache_mb << 20) // len(loaded) // (h * math.prod(g.patch) * itemsize * f)
        for g, h, f in zip(geometries, heads, folds, strict=True)
    ]
    block = old.get("block") if old is not None else None
    if block is None:
        fits = input_fits(geometries, source, o.cache_mb << 20)
        block = plan_block(geometries, source.shape, o.chunk, budgets, min_units=o.num_parts, input_fits=fits)
    report.block = tuple(block)
    manifest = {**manifest, "grid": [g.to_dict() for g in geometries], "block": report.block, "output": output_meta}
    classes = o.steps is not None
    existing = prepare_output(
        o.output, manifest, source.shape, o.chunk, o.probabilities, classes, o.overwrite, o.num_parts,
        differences=settings_differences,
    )  # fmt: skip
    if existing is not None and existing.get("block"):  # another part created the output meanwhile: its plan
        manifest["block"] = report.block = tuple(existing["block"])
    key = hashlib.sha1(json.dumps([manifest, o.output, o.device], sort_keys=True, default=str).encode()).hexdigest()
    return RunSpec(
        source, tuple(o.folders), tuple(o.weights), o.device, o.tta, o.fusion, crop,
        None if scan["zscore"] is None else tuple(scan["zscore"]), o.output, o.chunk,
        0.5 if o.steps is None else o.steps.threshold, None if o.steps is None else o.steps.hysteresis_high,
        classes, o.probabilities, o.skip_empty, o.cache_mb << 20, o.tile_cache_mb << 20, key=key, mask=o.mask,
        deterministic=o.deterministic,
    )  # fmt: skip


def _units_to_predict(source: SourceSpec, o: ScrollOptions, report: ScrollReport, client) -> list[list[Box]]:
    """This part's work units less the chunks already done (said when resuming)."""
    all_units = chunk_blocks(source.shape, o.chunk, report.block)
    report.chunks_total = sum(len(u) for u in all_units)
    done = done_keys(o.output)
    mine = part_units(all_units, o.num_parts, o.part_id)
    if client is not None:  # at least two units per worker thread: split this part's blocks in z
        info = client.scheduler_info(n_workers=-1).get("workers", {})
        mine = split_units(mine, 2 * max(1, sum(int(w.get("nthreads", 1)) for w in info.values())), o.chunk)
    todo = [[b for b in u if chunk_key(b, (o.chunk,) * 3) not in done] for u in mine]
    todo = [u for u in todo if u]
    report.chunks_before = len(done)
    if done and o.progress:
        print(
            f"resuming {o.output}: {len(done)} of {report.chunks_total} chunks already done, "
            f"{sum(len(u) for u in todo)} to predict in this part",
            file=sys.stderr,
        )
    return todo


def _predict_units(run: RunSpec, loaded: list, todo: list, client, progress: bool, report: ScrollReport) -> None:
    """Predict the units here with ``loaded``, or on the ``client``'s workers (each loads its own models)."""

    bar = tqdm(
        total=sum(len(u) for u in todo), desc="predict volume", unit="chunk", disable=not progress, file=sys.stderr
    )
    try:
        if client is None:
            cluster.use_models(run, loaded)
            for u in todo:
                report.stats.append(cluster.process_unit(run, u, on_chunk=bar.update))
        else:
            from distributed import as_completed

            topic = _progress_topic(run.key)
            client.subscribe_topic(topic, lambda event: bar.update(int(event[1])))
            try:
                futures = client.map(cluster.process_unit, [run] * len(todo), todo, [topic] * len(todo), pure=False)
                for f in as_completed(futures):
                    report.stats.append(f.result())
            finally:
                client.unsubscribe_topic(topic)
    finally:
        bar.close()
