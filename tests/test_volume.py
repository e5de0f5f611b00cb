"""Whole-volume prediction, the parts without networks: the global grid, the Zarr/OME-Zarr source and its cache,
the output manifest, the distributed post-processing, the --dask parser and the CLI's flag checks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import zarr

from nnunetv2_topo.scroll.grid import Geometry, chunk_boxes
from nnunetv2_topo.scroll.source import CachedReader, ScrollInputError, open_source, parse_bbox


def _pad_like_nnunet(image: np.ndarray, crop, transpose, patch) -> np.ndarray:
    """What nnU-Net's predictor tiles: crop, transpose, then pad_nd_image to the patch size."""
    from acvl_utils.cropping_and_padding.padding import pad_nd_image

    cropped = image[tuple(slice(lo, hi) for lo, hi in crop)].transpose(transpose)
    return pad_nd_image(cropped[None], patch, "constant", {"constant_values": 0}, False, None)[0]


@pytest.mark.parametrize("transpose", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_grid_regions_match_nnunet_preprocessed_frame(transpose) -> None:
    rng = np.random.default_rng(1)
    image = rng.random((30, 41, 19)).astype(np.float32) + 1
    crop = ((2, 29), (5, 41), (0, 12))  # 12 < patch: padded
    patch = (16, 16, 16)
    g = Geometry(image.shape, crop, transpose, patch)
    padded = _pad_like_nnunet(image, crop, transpose, patch)
    assert tuple(padded.shape) == g.padded_t
    seen = set()
    for box in chunk_boxes(image.shape, (8, 8, 8)):
        t_box = g.t_box(box)
        inside = all(max(lo, clo) < min(hi, chi) for (lo, hi), (clo, chi) in zip(box, crop))
        assert (t_box is None) == (not inside)
        if t_box is None:
            continue
        tiles = g.tiles(t_box)
        # every tile overlapping the chunk, none other, in nnU-Net's nested order
        all_tiles = [(a, b, c) for a in g.steps[0] for b in g.steps[1] for c in g.steps[2]]
        overlapping = [
            t for t in all_tiles if all(t[d] < t_box[d][1] and t[d] + patch[d] > t_box[d][0] for d in range(3))
        ]
        assert tiles == overlapping
        seen.update(tiles)
        region = g.region(tiles)
        img_box, within = g.image_source(region)
        data = np.zeros(tuple(hi - lo for lo, hi in region), np.float32)
        data[tuple(slice(lo, hi) for lo, hi in within)] = image[tuple(slice(lo, hi) for lo, hi in img_box)].transpose(
            transpose
        )
        np.testing.assert_array_equal(data, padded[tuple(slice(lo, hi) for lo, hi in region)])
    assert len(seen) == g.n_tiles


def _ome(path: Path, data: np.ndarray, levels: int = 2) -> str:
    from ome_zarr.writer import write_multiscales_metadata

    group = zarr.open_group(str(path), mode="w")
    datasets = []
    for k in range(levels):
        arr = data[:: 2**k, :: 2**k, :: 2**k]
        group.create_array(str(k), shape=arr.shape, chunks=(8, 8, 8), dtype=arr.dtype)[:] = arr
        datasets.append({"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": [7.91 * 2**k] * 3}]})
    write_multiscales_metadata(group, datasets, axes=["z", "y", "x"])
    return str(path)


def test_sources_v2_v3_ome_and_bbox(tmp_path: Path) -> None:
    data = np.arange(20 * 18 * 17, dtype=np.uint16).reshape(20, 18, 17)
    for fmt in (2, 3):
        url = str(tmp_path / f"v{fmt}.zarr")
        zarr.create_array(url, shape=data.shape, chunks=(8, 8, 8), dtype="uint16", zarr_format=fmt)[:] = data
        spec = open_source(url, None, parse_bbox("2:19,0:18,5:17"))
        assert spec.shape == (17, 18, 12) and spec.offset == (2, 0, 5) and spec.spacing == (1.0, 1.0, 1.0)
        reader = CachedReader(spec, 1 << 20)
        np.testing.assert_array_equal(reader.read(((0, 17), (0, 18), (0, 12))), data[2:19, :, 5:17])
        first = reader.bytes_read
        np.testing.assert_array_equal(reader.read(((3, 9), (1, 4), (2, 7))), data[5:11, 1:4, 7:12])
        assert reader.bytes_read == first  # from the cache
    ome = _ome(tmp_path / "ome.zarr", data)
    spec = open_source(ome, 1)
    assert spec.shape == (10, 9, 9) and spec.array_path == "1" and spec.spacing == (2.0, 2.0, 2.0)
    np.testing.assert_array_equal(CachedReader(spec, 0).read(((0, 10), (0, 9), (0, 9))), data[::2, ::2, ::2])
    spec5 = tmp_path / "tczyx.zarr"
    zarr.create_array(str(spec5), shape=(1, 1, *data.shape), chunks=(1, 1, 8, 8, 8), dtype="uint16")[:] = data[
        None, None
    ]
    s = open_source(str(spec5))
    assert s.shape == data.shape and s.lead == 2
    np.testing.assert_array_equal(CachedReader(s, 0).read(((1, 3), (0, 2), (4, 6))), data[1:3, 0:2, 4:6])


def test_cache_read_amplification(tmp_path: Path) -> None:
    data = np.ones((32, 32, 32), np.uint8)
    url = str(tmp_path / "a.zarr")
    zarr.create_array(url, shape=data.shape, chunks=(16, 16, 16), dtype="uint8")[:] = data
    spec = open_source(url)
    boxes = [((z, min(z + 20, 32)), (0, 32), (0, 32)) for z in (0, 8, 16)]
    cached, uncached = CachedReader(spec, 1 << 20), CachedReader(spec, 0)
    for b in boxes:
        cached.read(b)
        uncached.read(b)
    assert cached.bytes_read == data.nbytes  # each stored chunk decoded once
    assert uncached.bytes_read > 2 * data.nbytes


@pytest.mark.parametrize(
    ("make", "level", "bbox", "message"),
    [
        ("text", None, None, "is not a Zarr array or group"),
        ("empty", None, None, "is not a Zarr array or group"),
        ("bool", None, None, "dtype bool is not a number type"),
        ("2d", None, None, "is not a 3-D (Z, Y, X) volume"),
        ("4d", None, None, "is not a 3-D (Z, Y, X) volume"),
        ("v3", None, "0:10,0:10,0:99", "--bbox lies outside the volume (20, 18, 17): x 0:99 (size 17)"),
        ("v3", 1, None, "is a single Zarr array, not an OME-Zarr group"),
        ("ome", 5, None, "--level 5:"),
        ("group", None, None, "without OME-Zarr 'multiscales' metadata"),
    ],
)
def test_bad_inputs(tmp_path: Path, make: str, level, bbox, message: str) -> None:
    url = str(tmp_path / "in.zarr")
    shape = {"2d": (20, 18), "4d": (2, 20, 18, 17)}.get(make, (20, 18, 17))
    if make == "text":
        Path(url).write_text("not a zarr")
    elif make == "empty":
        Path(url).mkdir()
    elif make == "ome":
        _ome(Path(url), np.ones(shape, np.uint8))
    elif make == "group":
        zarr.open_group(url, mode="w").create_array("raw", shape=shape, dtype="uint8")
    else:
        zarr.create_array(url, shape=shape, dtype="bool" if make == "bool" else "uint8")
    with pytest.raises(ScrollInputError) as err:
        open_source(url, level, None if bbox is None else parse_bbox(bbox))
    assert message in str(err.value)


@pytest.mark.parametrize("text", ["0:10,0:10", "a:b,0:1,0:1", "5:5,0:1,0:1", "0:10,9:3,0:1"])
def test_bad_bbox(text: str) -> None:
    with pytest.raises(ScrollInputError, match="--bbox"):
        parse_bbox(text)


def test_manifest_refuses_other_settings_and_foreign_stores(tmp_path: Path) -> None:
    from nnunetv2_topo.scroll.writer import ScrollOutputError, prepare_output

    url = str(tmp_path / "out.zarr")
    manifest = {"settings": {"tta": "mirror", "chunk": 16, "models": ["a"]}, "scan": {}, "output": {"zarr_format": 2}}
    assert prepare_output(url, manifest, (20, 20, 20), 16, True, False) is None
    assert prepare_output(url, manifest, (20, 20, 20), 16, True, False)["settings"] == manifest["settings"]
    other = {**manifest, "settings": {"tta": "none", "chunk": 16, "models": ["b"]}}
    with pytest.raises(ScrollOutputError, match=r"models: \['a'\] -> \['b'\]; tta: 'mirror' -> 'none'"):
        prepare_output(url, other, (20, 20, 20), 16, True, False)
    foreign = str(tmp_path / "foreign.zarr")
    zarr.open_group(foreign, mode="w")
    with pytest.raises(ScrollOutputError, match="was not written by 'nnunetv2_topo predict'"):
        prepare_output(foreign, manifest, (20, 20, 20), 16, True, False)


def test_pyramid_keeps_thin_sheets() -> None:
    from nnunetv2_topo.scroll.writer import _down2

    block = np.zeros((5, 6, 7), np.uint8)
    block[3, :, :] = 1  # a one-voxel sheet on an odd plane
    down = _down2(block)
    assert down.shape == (3, 3, 4)
    assert down[1].all() and not down[0].any() and not down[2].any()


def _postprocess(classes: np.ndarray, chunks: int, config, tmp_path: Path) -> np.ndarray:
    from nnunetv2_topo.scroll.finalize import make_runner
    from nnunetv2_topo.scroll.postprocess import WorkArrays, postprocess_chunks

    url = str(tmp_path / "pp.zarr")
    group = zarr.open_group(url, mode="w")
    group.create_array("c", shape=classes.shape, chunks=(chunks,) * 3, dtype="uint8")[:] = classes
    group.create_array("out", shape=classes.shape, chunks=(chunks,) * 3, dtype="uint8", fill_value=0)
    result = postprocess_chunks(WorkArrays(url, "c", "out", "t"), config, make_runner(progress=False))
    out = group["out"][:]
    assert result["foreground"] == out.sum()
    return out


@pytest.mark.parametrize("chunks", [8, 13])
def test_distributed_hysteresis_and_dust_equal_in_memory(chunks: int, tmp_path: Path) -> None:
    from scipy.ndimage import gaussian_filter

    from nnunetv2_topo.postprocessing.steps import PostprocessConfig, postprocess_volume

    rng = np.random.default_rng(3)
    p = gaussian_filter(rng.random((30, 34, 28)), 1.2)
    p = (p - p.min()) / (p.max() - p.min())
    config = PostprocessConfig(threshold=0.5, hysteresis_high=0.7, min_component_size=20, patch_holes=0)
    expected = postprocess_volume(p, config)
    classes = (p > 0.5).astype(np.uint8)
    classes[p > 0.7] = 2
    got = _postprocess(classes, chunks, config, tmp_path)
    assert 0.01 < expected.mean() < 0.6
    assert expected.sum() < (p > 0.5).sum()  # the steps removed components
    np.testing.assert_array_equal(got, expected)  # components crossing chunk borders included


def test_local_steps_with_halo_equal_in_memory_for_small_holes(tmp_path: Path) -> None:
    from nnunetv2_topo.postprocessing.steps import PostprocessConfig, postprocess_volume

    mask = np.zeros((24, 40, 40), np.uint8)
    mask[12] = 1
    mask[12, 10, 15] = 0  # pinholes on chunk borders and inside
    mask[12, 20, 20] = 0
    mask[12, 31, 7] = 0
    config = PostprocessConfig(threshold=0.5, min_component_size=0, plug_holes=True, plug_method="both", patch_holes=0)
    expected = postprocess_volume(mask.astype(np.float32), config)
    got = _postprocess(mask, 20, config, tmp_path)
    assert expected[12].all()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("text", ["local:0", "local:x", "localhost:8786", "http://x:1", ""])
def test_bad_dask(text: str) -> None:
    from nnunetv2_topo.scroll.cluster import ClusterError, parse_dask

    with pytest.raises(ClusterError, match="--dask"):
        parse_dask(text)


def test_good_dask() -> None:
    from nnunetv2_topo.scroll.cluster import parse_dask

    assert parse_dask("local:3").workers == 3
    assert parse_dask("tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--chunk", "15"], "--chunk must be an even number"),
        (["--chunk", "8"], "--chunk must be an even number"),
        (["--pyramid", "11"], "--pyramid must be in 0..10"),
        (["--tta", "mirror+rot90"], "--tta mirror+rot90 is not supported"),
        (["--time-budget-hours", "1"], "--time-budget-hours applies to folders"),
        (["--cache-mb", "-1"], "--cache-mb must be >= 0"),
        (["--dask", "local:0"], "--dask local:0"),
        (["--bbox", "0:5,0:5"], "--bbox '0:5,0:5'"),
        (["--level", "2"], "--level 2"),
        (["--mask", "missing.zarr"], "missing.zarr is not a Zarr array or group"),
        (["--mask", "MASK16"], "shape (16, 20, 20) (after --level/--bbox) differs from the input's (20, 20, 20)"),
    ],
)
def test_cli_bad_flags_write_nothing(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    from nnunetv2_topo.cli.main import main
    from nnunetv2_topo.testing.untrained import write_untrained_model_folder

    url = str(tmp_path / "in.zarr")
    zarr.create_array(url, shape=(20, 20, 20), dtype="uint8")
    model = write_untrained_model_folder(tmp_path / "m", patch=(16, 16, 16))
    out = tmp_path / "out.zarr"
    argv = ["predict", "--input", url, "--output", str(out), "--model", str(model), "--device", "cpu", "--quiet"]
    if "MASK16" in extra:  # a mask of another shape
        zarr.create_array(str(tmp_path / "mask.zarr"), shape=(16, 20, 20), dtype="bool")
        extra = ["--mask", str(tmp_path / "mask.zarr")]
    assert main(argv + extra) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_cli_zarr_input_needs_zarr_output(tmp_path: Path, capsys) -> None:
    from nnunetv2_topo.cli.main import main

    url = str(tmp_path / "in.zarr")
    zarr.create_array(url, shape=(20, 20, 20), dtype="uint8")
    assert main(["predict", "--input", url, "--output", str(tmp_path / "out"), "--model", "m", "--quiet"]) == 2
    assert "--output must be OUT.zarr" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_without_the_volume_extra_names_the_install(tmp_path: Path, capsys, monkeypatch) -> None:
    """Without zarr/dask/ome-zarr (the ``volume`` extra), a Zarr run is one message naming what to install."""
    import importlib.util

    from nnunetv2_topo.cli.main import main

    url = str(tmp_path / "in.zarr")
    zarr.create_array(url, shape=(20, 20, 20), dtype="uint8")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("ome_zarr", "dask") else real_find_spec(name, *a)
    )
    out = tmp_path / "out.zarr"
    assert main(["predict", "--input", url, "--output", str(out), "--model", "m", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "needs dask[array,distributed], ome-zarr, which is not installed" in err
    assert "pip install 'nnunetv2-topo[volume]'" in err and "Traceback" not in err
    assert not out.exists()


def _simulate_tiles(shape, chunk, patch, budget_tiles, block=None) -> tuple[int, int]:
    """(tiles predicted, grid tiles) when the chunks are predicted unit by unit through a TileCache of
    ``budget_tiles`` tiles, the way LoadedModels does (no network: a tile is a placeholder tensor); with ``block``
    given, as main did: those units through a plain LRU."""
    import torch

    from nnunetv2_topo.scroll.blending import TileCache
    from nnunetv2_topo.scroll.grid import chunk_blocks, plan_block

    g = Geometry(shape, tuple((0, s) for s in shape), (0, 1, 2), patch)
    tile = torch.zeros(16)
    cache = TileCache(budget_tiles * tile.nbytes)
    lru = block is not None
    for unit in chunk_blocks(shape, chunk, block or plan_block([g], shape, chunk, [budget_tiles])):
        tiles = [g.tiles(g.t_box(b)) for b in unit]
        if not lru:
            cache.expect(Counter(t for ts in tiles for t in ts))
        for ts in tiles:
            for t in ts:
                if cache.get((0, False, t)) is None:
                    cache.put((0, False, t), tile)
            cache.release(ts)
    return cache.predicted, g.n_tiles


def test_blocks_predict_each_tile_about_once_on_a_grid_20x_the_cache() -> None:
    """The issue's target: <= 1.25 tiles predicted per grid tile on a volume whose tile grid is >= 20x the cache.
    (Main's units, z slabs of chunks walked through an LRU of this size, predict 1.7x.)"""
    shape, chunk, patch, budget = (48, 240, 240), 16, (16, 16, 16), 200
    predicted, grid = _simulate_tiles(shape, chunk, patch, budget)
    assert grid >= 20 * budget
    assert predicted / grid <= 1.25
    slabs, _ = _simulate_tiles(shape, chunk, patch, budget, block=(1, 15, 15))  # main's units: one z slab each
    assert slabs / grid > 1.6


def test_plan_block_fits_the_cache_and_splits_for_workers() -> None:
    from nnunetv2_topo.scroll.grid import chunk_blocks, peak_tiles, plan_block

    shape = (64, 200, 200)
    g = Geometry(shape, tuple((0, s) for s in shape), (0, 1, 2), (32, 32, 32))
    block = plan_block([g], shape, 16, [60])
    assert block[0] == 4 and 1 < block[1] == block[2] < 13  # whole depth, square in y, x
    assert peak_tiles(g, chunk_blocks(shape, 16, block)[0])[0] <= 60
    assert plan_block([g], shape, 16, [10**6]) == (4, 13, 13)  # all fits: one unit
    assert plan_block([g], shape, 16, [10**6], min_units=4)[0] == 1  # split in z for 4 workers
    assert plan_block([g], shape, 16, [0])[1:] == (1, 1)  # nothing fits: one chunk column
    from nnunetv2_topo.scroll.prediction import input_fits
    from nnunetv2_topo.scroll.source import SourceSpec

    source = SourceSpec("in.zarr", "", 0, (0, 0, 0), shape, "|u1", (1.0, 1.0, 1.0), (16, 16, 16))
    for cached, k in ((100, 2), (400, 8)):  # an input cache of 100 or 400 stored chunks: narrower blocks
        fits = input_fits([g], source, cached * 16**3)
        assert plan_block([g], shape, 16, [10**6], input_fits=fits)[1:] == (k, k)


def test_retried_unit_skips_chunks_marked_done(monkeypatch) -> None:
    from nnunetv2_topo.scroll import cluster

    boxes = [((0, 8), (0, 8), (z, z + 8)) for z in (0, 8, 16, 24)]

    class LoadedModels:
        writer = type("W", (), {"is_done": staticmethod(lambda b: b[2][0] in (0, 16))})()
        processed: list = []

        def counters(self):
            return {"chunks": len(self.processed)}

        def begin_unit(self, todo):
            self.todo = todo

        def process(self, box, next_box):
            self.processed.append((box, next_box))

    models = LoadedModels()
    monkeypatch.setattr(cluster, "loaded_models_for", lambda run: models)
    ticks = []
    stats = cluster.process_unit(None, boxes, on_chunk=lambda: ticks.append(1))
    assert models.todo == [boxes[1], boxes[3]] and models.processed == [(boxes[1], boxes[3]), (boxes[3], None)]
    assert stats["chunks"] == 2 and len(ticks) == 4  # progress counts the skipped chunks too


def test_local_cluster_one_gpu_per_worker(monkeypatch) -> None:
    from nnunetv2_topo.scroll.cluster import ClusterError, parse_dask, start_client, worker_gpus

    assert worker_gpus(2, "cuda", 4, None) == ["0", "1"]
    assert worker_gpus(2, "cuda", 2, "3,5") == ["3", "5"]  # this process's visible GPUs
    assert worker_gpus(3, "cpu", 0, None) == [None, None, None]
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ClusterError, match=r"--dask local:3 on CUDA: 2 GPU\(s\) visible.*use --dask local:2"):
        start_client(parse_dask("local:3"), device="cuda")


def test_input_spellings_are_one_input(tmp_path: Path, monkeypatch) -> None:
    url = tmp_path / "in.zarr"
    zarr.create_array(str(url), shape=(8, 8, 8), dtype="uint8")
    monkeypatch.chdir(tmp_path)
    spellings = [str(url), f"{url}/", "in.zarr", "./in.zarr/", f"file://{url}"]
    assert {open_source(s).url for s in spellings} == {str(url)}


def test_settings_differences_name_the_changed_file_and_ignore_pyramid() -> None:
    from nnunetv2_topo.scroll.prediction import settings_differences

    model = {"files": {"plans.json": "a", "fold_0/checkpoint_final.pth": "b"}, "folds": ["0"], "weight": 1.0}
    old = {"models": [model], "runtime": {"torch": "2.1", "device": "cuda"}, "chunk": 128, "pyramid": 0}
    changed = {**model, "files": {**model["files"], "fold_0/checkpoint_final.pth": "c"}}
    new = {"models": [changed], "runtime": {"torch": "2.2", "device": "cuda"}, "chunk": 128, "pyramid": 3}
    assert settings_differences(old, new) == [
        "model 1: fold_0/checkpoint_final.pth changed (content hash)",
        "runtime torch: '2.1' -> '2.2'",
    ]
    assert settings_differences(old, {**old, "pyramid": 2}) == []


def test_deterministic_switch() -> None:
    import torch

    from nnunetv2_topo.scroll.loaded_models import set_deterministic

    before = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = True
        set_deterministic(True)
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def test_intensity_checks_of_a_volume() -> None:
    from nnunetv2_topo.input_checks import TrainingIntensities, dtype_fits, range_problem

    uint8_model = TrainingIntensities(0.0, 255.0, Path("plans.json"))
    assert dtype_fits("uint8", [uint8_model]) and not dtype_fits("uint16", [uint8_model])
    assert not dtype_fits("float32", [uint8_model])
    assert range_problem("uint16", 0, 300, [uint8_model]) is None  # within half the range's width
    assert "uint16 image with values [0, 60000]" in range_problem("uint16", 0, 60000, [None, uint8_model])


def test_cli_uint16_volume_under_a_uint8_model_is_refused(tmp_path: Path, capsys) -> None:
    """As for cases: a volume outside the training intensities is refused before anything loads or is written."""
    from nnunetv2_topo.cli.main import main
    from nnunetv2_topo.testing.untrained import write_untrained_model_folder

    url = str(tmp_path / "in.zarr")
    data = np.zeros((32, 32, 32), np.uint16)
    data[8:24, 8:24, 8:24] = 40000  # a scan in 16 bits; the model was trained on uint8 (0-255)
    zarr.create_array(url, shape=data.shape, chunks=(16, 16, 16), dtype="uint16")[:] = data
    model = write_untrained_model_folder(tmp_path / "m", patch=(16, 16, 16))
    out = tmp_path / "out.zarr"
    argv = ["predict", "--input", url, "--output", str(out), "--model", str(model), "--device", "cpu", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "uint16 image with values [0, 40000], the model was trained on foreground intensities [0, 255]" in err
    assert "--allow-intensity-mismatch" in err and not out.exists()


def test_file_digest_without_hashlib_file_digest(tmp_path: Path, monkeypatch) -> None:
    """The model identity of a volume run hashes checkpoints on every Python that setup.cfg admits (>= 3.10):
    ``hashlib.file_digest`` exists from 3.11 on only (mypy with python_version 3.10 found the use)."""
    import hashlib

    from nnunetv2_topo.scroll.prediction import file_digest

    monkeypatch.delattr(hashlib, "file_digest", raising=False)  # as on Python 3.10
    path = tmp_path / "checkpoint_final.pth"
    path.write_bytes(b"weights" * 300_000)  # over one read block
    assert file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()
