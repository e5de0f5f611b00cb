"""``nnunetv2_topo predict`` over Zarr volumes against one-case ``predict`` of the same volume as a TIFF: equal
whatever the chunking, on a 2-worker LocalCluster, in parts, after a kill and a resume; Zarr v2, v3 and OME-Zarr
inputs; post-processing; outputs made with other settings refused (CPU, untrained tiny models)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from nnunetv2_topo.cli.main import main
from nnunetv2_topo.io import read_volume, write_tiff
from nnunetv2_topo.testing.untrained import write_untrained_model_folder

pytestmark = pytest.mark.e2e
SHAPE = (48, 60, 40)


def _volume() -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(7)
    v = gaussian_filter(rng.random(SHAPE), 2.0)
    v = ((v - v.min()) / (v.max() - v.min()) * 250 + 5).astype(np.uint8)
    v[:3] = 0  # cropped away by nnU-Net and padded back as background
    v[:, :, -4:] = 0
    return v


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("volume")
    model = write_untrained_model_folder(root / "results", patch=(32, 32, 32), folds=(0, 1), seed=3)
    image = _volume()
    (root / "cases").mkdir()
    write_tiff(root / "cases" / "vol.tif", image)
    v3 = str(root / "v3.zarr")
    zarr.create_array(v3, shape=SHAPE, chunks=(16, 20, 16), dtype="uint8")[:] = image
    refs = {}
    for tta in ("none", "mirror"):
        out = root / f"ref_{tta}"
        base = ["predict", "--input", str(root / "cases"), "--output", str(out), "--model", str(model)]
        assert main([*base, "--device", "cpu", "--tta", tta, "--quiet"]) == 0
        refs[tta] = read_volume(out / "vol.tif")
    assert 0.05 < refs["none"].mean() < 0.95
    return {"root": root, "model": model, "image": image, "v3": v3, "refs": refs}


def _run(setup, inp: str, out: Path, *extra: str) -> int:
    argv = ["predict", "--input", inp, "--output", str(out), "--model", str(setup["model"]), "--device", "cpu"]
    return main([*argv, "--quiet", *extra])


def _level0(out: Path) -> np.ndarray:
    return zarr.open_group(str(out), mode="r")["0"][:]


def _assert_close(ours: np.ndarray, reference: np.ndarray) -> None:
    assert ours.shape == reference.shape
    assert np.count_nonzero(ours != reference) <= 1e-4 * ours.size  # the bound (here: equal)
    np.testing.assert_array_equal(ours, reference)


def test_zarr_equals_one_case_predict_with_tta_folds_pyramid(setup, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.zarr"
    assert _run(setup, setup["v3"], out, "--chunk", "16", "--pyramid", "2", "--probabilities", "--tta", "mirror") == 0
    text = capsys.readouterr().out
    assert "complete" in text and "read amplification" in text and f"{np.prod(SHAPE)} voxels" in text
    _assert_close(_level0(out), setup["refs"]["mirror"])
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    node = next(iter(Reader(parse_url(str(out)))()))
    assert [tuple(d.shape) for d in node.data] == [SHAPE, (24, 30, 20), (12, 15, 10)]
    group = zarr.open_group(str(out), mode="r")
    assert group["probabilities/0"].dtype == np.uint8
    assert group["probabilities/2"].shape == (12, 15, 10)  # its own pyramid
    probabilities, labels = group["probabilities/0"][:], setup["refs"]["mirror"]
    assert (probabilities[labels == 1] >= 128).all() and (probabilities[labels == 0] <= 128).all()
    assert len(np.unique(probabilities)) > 50
    assert group.attrs["nnunetv2_topo"]["complete"] is True
    assert not (out / ".done").exists()
    # run again: nothing to do
    assert _run(setup, setup["v3"], out, "--chunk", "16", "--pyramid", "2", "--probabilities", "--tta", "mirror") == 0
    assert "0 predicted" in capsys.readouterr().out


def test_local_cluster_two_workers(setup, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.zarr"
    assert (
        _run(setup, setup["v3"], out, "--chunk", "24", "--tta", "none", "--dask", "local:2", "--zarr-format", "3") == 0
    )
    _assert_close(_level0(out), setup["refs"]["none"])
    attrs = zarr.open_group(str(out), mode="r").attrs  # OME-Zarr 0.5 on Zarr v3
    assert attrs["ome"]["version"] == "0.5" and "image-label" in attrs["ome"] and (out / "zarr.json").exists()
    assert "complete" in capsys.readouterr().out


def test_parts_into_one_output(setup, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.zarr"
    assert _run(setup, setup["v3"], out, "--chunk", "16", "--tta", "none", "--num-parts", "2", "--part-id", "1") == 0
    assert "wrote part 1 of 2" in capsys.readouterr().out
    attrs = zarr.open_group(str(out), mode="r").attrs
    assert "ome" not in attrs and "multiscales" not in attrs  # not complete: no multiscales yet
    assert _run(setup, setup["v3"], out, "--chunk", "16", "--tta", "none", "--num-parts", "2", "--part-id", "0") == 0
    assert "complete" in capsys.readouterr().out
    _assert_close(_level0(out), setup["refs"]["none"])


def test_kill_and_resume(setup, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.zarr"
    args = ["--chunk", "16", "--tta", "mirror"]
    cmd = [sys.executable, "-m", "nnunetv2_topo.cli.main", "predict", "--input", setup["v3"], "--output", str(out),
           "--model", str(setup["model"]), "--device", "cpu", "--quiet", *args]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / ".done").is_dir() and len(list((out / ".done").iterdir())) >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    before = len(list((out / ".done").iterdir()))
    assert 3 <= before < 36  # 3 x 4 x 3 chunks
    assert _run(setup, setup["v3"], out, *args) == 0
    text = capsys.readouterr().out
    assert f"{36 - before} predicted" in text or f"{36 - before - 1} predicted" in text  # a marker may land late
    _assert_close(_level0(out), setup["refs"]["mirror"])


def test_other_settings_refused_naming_what_differs(setup, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.zarr"
    assert _run(setup, setup["v3"], out, "--chunk", "24", "--tta", "none") == 0
    capsys.readouterr()
    before = sorted(p.name for p in out.rglob("*"))
    assert _run(setup, setup["v3"], out, "--chunk", "32", "--tta", "none") == 2
    assert "made with other settings (chunk: 24 -> 32)" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == before
    assert _run(setup, setup["v3"], out, "--chunk", "32", "--tta", "none", "--overwrite") == 0
    assert zarr.open_group(str(out), mode="r")["0"].chunks == (32, 32, 32)


def test_v2_ome_zarr_level_and_bbox(setup, tmp_path: Path) -> None:
    from ome_zarr.writer import write_multiscales_metadata

    image = setup["image"]
    v2 = str(tmp_path / "v2.zarr")
    zarr.create_array(v2, shape=SHAPE, chunks=(20, 20, 20), dtype="uint8", zarr_format=2)[:] = image
    assert _run(setup, v2, tmp_path / "a.zarr", "--chunk", "24", "--tta", "none") == 0
    _assert_close(_level0(tmp_path / "a.zarr"), setup["refs"]["none"])
    ome = tmp_path / "ome.zarr"
    group = zarr.open_group(str(ome), mode="w")
    group.create_array("0", shape=SHAPE, chunks=(16, 16, 16), dtype="uint8")[:] = image
    group.create_array("1", shape=(24, 30, 20), chunks=(16, 16, 16), dtype="uint8")[:] = image[::2, ::2, ::2]
    scale = [{"type": "scale", "scale": [7.91 * f] * 3} for f in (1, 2)]
    datasets = [{"path": str(k), "coordinateTransformations": [scale[k]]} for k in (0, 1)]
    write_multiscales_metadata(group, datasets, axes=["z", "y", "x"])
    assert _run(setup, str(ome), tmp_path / "b.zarr", "--level", "0", "--bbox", "5:45,10:60,0:40", "--tta", "none",
                "--chunk", "16") == 0  # fmt: skip
    region = image[5:45, 10:60, 0:40]
    (tmp_path / "region").mkdir()
    write_tiff(tmp_path / "region" / "r.tif", region)
    base = ["predict", "--input", str(tmp_path / "region"), "--output", str(tmp_path / "r_out")]
    assert main([*base, "--model", str(setup["model"]), "--device", "cpu", "--tta", "none", "--quiet"]) == 0
    _assert_close(_level0(tmp_path / "b.zarr"), read_volume(tmp_path / "r_out" / "r.tif"))
    # level 1 has twice the spacing of the model's plans: refused, nothing written
    assert _run(setup, str(ome), tmp_path / "c.zarr", "--level", "1", "--tta", "none") == 2
    assert not (tmp_path / "c.zarr").exists()


def test_postprocess_config_equals_one_case(setup, tmp_path: Path) -> None:
    from nnunetv2_topo.postprocessing.config_file import PostprocessFile, save_postprocess_file
    from nnunetv2_topo.postprocessing.steps import PostprocessConfig

    steps = PostprocessConfig(threshold=0.45, hysteresis_high=0.55, min_component_size=40, patch_holes=0)
    config = tmp_path / "postprocess.json"
    save_postprocess_file(config, PostprocessFile(steps=steps))
    base = ["predict", "--input", str(setup["root"] / "cases"), "--output", str(tmp_path / "ref")]
    assert main([*base, "--model", str(setup["model"]), "--device", "cpu", "--tta", "none", "--quiet",
                 "--config", str(config)]) == 0  # fmt: skip
    reference = read_volume(tmp_path / "ref" / "vol.tif")
    assert not np.array_equal(reference, setup["refs"]["none"])  # the steps changed something
    out = tmp_path / "out.zarr"
    assert _run(setup, setup["v3"], out, "--chunk", "16", "--tta", "none", "--config", str(config)) == 0
    _assert_close(_level0(out), reference)
    assert "work_classes" not in zarr.open_group(str(out), mode="r")


def test_zscore_plans_use_the_volume_statistics(setup, tmp_path: Path, capsys) -> None:
    """A per-case ZScore plan: the volume path z-scores with the whole cropped volume's mean/std (float64), nnU-Net
    with the case's (float32 sums): the labels agree within the issue's bound; with use_mask_for_norm: refused."""
    import json

    model = write_untrained_model_folder(tmp_path / "results", patch=(32, 32, 32), seed=5)
    plans = json.loads((model / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["normalization_schemes"] = ["ZScoreNormalization"]
    (model / "plans.json").write_text(json.dumps(plans))
    base = ["predict", "--input", str(setup["root"] / "cases"), "--output", str(tmp_path / "ref"), "--model"]
    assert main([*base, str(model), "--device", "cpu", "--tta", "none", "--quiet"]) == 0
    reference = read_volume(tmp_path / "ref" / "vol.tif")
    out = tmp_path / "out.zarr"
    argv = ["predict", "--input", setup["v3"], "--output", str(out), "--model", str(model), "--device", "cpu"]
    assert main([*argv, "--quiet", "--chunk", "16", "--tta", "none"]) == 0
    ours = _level0(out)
    assert 0.05 < reference.mean() < 0.95
    assert np.count_nonzero(ours != reference) <= 1e-4 * ours.size
    scan = zarr.open_group(str(out), mode="r").attrs["nnunetv2_topo"]["scan"]
    cropped = setup["image"][3:, :, :-4].astype(np.float64)
    np.testing.assert_allclose(scan["zscore"], [cropped.mean(), cropped.std()], rtol=1e-9)
    plans["configurations"]["3d_fullres"]["use_mask_for_norm"] = [True]
    (model / "plans.json").write_text(json.dumps(plans))
    capsys.readouterr()
    assert main([*argv[:4], str(tmp_path / "masked.zarr"), *argv[5:], "--quiet"]) == 2
    assert "ZScoreNormalization (use_mask_for_norm=True)" in capsys.readouterr().err
    assert not (tmp_path / "masked.zarr").exists()


def test_existing_scheduler_address(setup, tmp_path: Path, capsys) -> None:
    """--dask tcp://HOST:PORT: the chunks run on a scheduler the command did not start (left running after)."""
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://", dashboard_address=":0"
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://")
        out = tmp_path / "out.zarr"
        assert _run(setup, setup["v3"], out, "--chunk", "24", "--tta", "none", "--dask", address) == 0
        _assert_close(_level0(out), setup["refs"]["none"])
        assert "complete" in capsys.readouterr().out
        with Client(address) as client:  # the cluster is still there
            assert len(client.scheduler_info()["workers"]) == 1


def test_worker_with_two_threads_and_two_folds_equals_one_process(setup, tmp_path: Path) -> None:
    """A Dask worker whose 2 threads take work units at once: its folds share one network whose weights each fold
    loads in turn, so without one set of loaded models per unit at a time tiles are predicted with the other fold's
    weights."""
    import torch
    from distributed import Client, LocalCluster

    from nnunetv2_topo.inference.models import check_model_folders
    from nnunetv2_topo.inference.predict import load_models
    from nnunetv2_topo.scroll import ScrollOptions, open_source, predict_scroll

    tall = str(tmp_path / "tall.zarr")  # 6 slabs / 4 blocks of chunks: units overlap on the two threads
    image = np.concatenate([setup["image"][3:, :40], setup["image"][3:, :40], setup["image"][3:9, :40]])
    zarr.create_array(tall, shape=image.shape, chunks=(16, 20, 16), dtype="uint8")[:] = image
    folders = check_model_folders([setup["model"]], None, "checkpoint_final.pth")
    assert folders[0].folds == ("0", "1")
    models = load_models(folders, [1.0], torch.device("cpu"), progress=False)
    outputs = [str(tmp_path / "one.zarr"), str(tmp_path / "threads.zarr")]
    kwargs = {"probabilities": True, "progress": False}
    options = [ScrollOptions(folders, [1.0], "cpu", "none", "logit", None, out, 16, **kwargs) for out in outputs]
    predict_scroll(open_source(tall), models, options[0])
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        report = predict_scroll(open_source(tall), models, options[1], client=client)
    assert report.complete and len(report.stats) >= 2  # units ran on both threads
    one, threads = (zarr.open_group(o, mode="r")["probabilities/0"][:] for o in outputs)
    np.testing.assert_array_equal(threads, one)
    assert models == []  # the driver keeps no model copy when workers predict


def test_resume_refuses_a_changed_checkpoint_and_accepts_harmless_changes(
    setup, tmp_path: Path, capsys, monkeypatch
) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(setup["model"], model)
    out = tmp_path / "out.zarr"
    argv = ["predict", "--output", str(out), "--model", str(model), "--device", "cpu", "--quiet", "--chunk", "24",
            "--tta", "none", "--num-parts", "2"]  # fmt: skip
    assert main([*argv, "--input", setup["v3"], "--part-id", "0"]) == 0
    checkpoint = model / "fold_1" / "checkpoint_final.pth"
    original = checkpoint.read_bytes()
    shutil.copy(model / "fold_0" / "checkpoint_final.pth", checkpoint)  # same path, other weights
    capsys.readouterr()
    assert main([*argv, "--input", setup["v3"], "--part-id", "1"]) == 2
    assert "model 1: fold_1/checkpoint_final.pth changed (content hash)" in capsys.readouterr().err
    checkpoint.write_bytes(original)
    monkeypatch.chdir(Path(setup["v3"]).parent)  # the input spelled relative, with a trailing slash; another --pyramid
    assert main([*argv, "--input", Path(setup["v3"]).name + "/", "--part-id", "1", "--pyramid", "1"]) == 0
    assert "complete" in capsys.readouterr().out
    _assert_close(_level0(out), setup["refs"]["none"])
    group = zarr.open_group(str(out), mode="r")  # the finishing run's --pyramid is used, and recorded
    assert group["1"].shape == tuple((s + 1) // 2 for s in group["0"].shape)
    assert group.attrs["nnunetv2_topo"]["settings"]["pyramid"] == 1


def test_mask_predicts_only_where_nonzero(setup, tmp_path: Path, capsys) -> None:
    mask = np.ones(SHAPE, bool)
    mask[:16] = False  # whole chunks out
    mask[:, :, 30:] = False  # chunks partly out
    url = str(tmp_path / "mask.zarr")
    zarr.create_array(url, shape=SHAPE, chunks=(16, 16, 16), dtype="bool")[:] = mask
    out = tmp_path / "out.zarr"
    assert _run(setup, setup["v3"], out, "--chunk", "16", "--tta", "none", "--mask", url) == 0
    text = capsys.readouterr().out
    assert "(20 empty or masked, skipped)" in text  # the first layer (3 x 4 chunks) and x 32:40 (3 x 4), 4 in both
    np.testing.assert_array_equal(_level0(out), setup["refs"]["none"] * mask)


ZARR2_CHECK = """
import json, sys
import numpy as np
import zarr
assert zarr.__version__.startswith("2."), zarr.__version__
out, expected = sys.argv[1], np.load(sys.argv[2])
group = zarr.open_group(out, mode="r")
ms = group.attrs["multiscales"][0]
assert ms["version"] == "0.4", ms
assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"] and ms["axes"][0]["unit"] == "micrometer"
print(json.dumps({"datasets": ms["datasets"], "label": group.attrs["image-label"],
                  "probabilities": group["probabilities"].attrs["multiscales"][0]["datasets"]}))
level0 = group[ms["datasets"][0]["path"]]
assert level0.dtype == np.uint8 and level0.shape == expected.shape
np.testing.assert_array_equal(level0[:], expected)
assert group["1"].shape == tuple((s + 1) // 2 for s in expected.shape)
assert group["probabilities/1"].shape == group["1"].shape
"""


def _zarr2_python() -> Path:
    """A throwaway venv with only zarr<3 (what the vesuvius package pins), cached in the temp folder."""
    import tempfile

    venv = Path(tempfile.gettempdir()) / "nnunetv2_topo-zarr2-venv"
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import zarr, sys; sys.exit(not zarr.__version__.startswith('2.'))"]
    if python.exists() and subprocess.run(check).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "zarr<3", "numpy"], capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    if pip.returncode != 0:
        text = pip.stdout + pip.stderr
        if any(s in text for s in ("No matching distribution", "NewConnectionError", "Could not fetch", "timed out")):
            pytest.skip(f"PyPI is unreachable, cannot install zarr<3 for the check: {text.strip()[-300:]}")
        raise AssertionError(text)
    return python


def test_zarr_format_2_output_opens_with_zarr_python_2(setup, tmp_path: Path) -> None:
    """--zarr-format 2 (the default): OME-Zarr 0.4 on Zarr v2 that zarr-python 2 reads, with the input's physical
    scale, the --bbox offset as a translation, image-label metadata and a probabilities pyramid."""
    import json

    from ome_zarr.writer import write_multiscales_metadata

    ome = tmp_path / "ome.zarr"
    group = zarr.open_group(str(ome), mode="w")
    group.create_array("0", shape=SHAPE, chunks=(16, 16, 16), dtype="uint8")[:] = setup["image"]
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [7.91] * 3}]}]
    write_multiscales_metadata(group, datasets, axes=axes)
    out = tmp_path / "out.zarr"
    assert _run(setup, str(ome), out, "--bbox", "5:45,10:60,0:40", "--tta", "none", "--chunk", "16", "--pyramid",
                "1", "--probabilities", "--zarr-format", "2") == 0  # fmt: skip
    assert (out / ".zgroup").exists() and not (out / "zarr.json").exists()
    np.save(tmp_path / "expected.npy", _level0(out))
    python = _zarr2_python()
    run = subprocess.run([str(python), "-c", ZARR2_CHECK, str(out), str(tmp_path / "expected.npy")],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    meta = json.loads(run.stdout)
    transforms = [[t.get("scale") or t.get("translation") for t in d["coordinateTransformations"]]
                  for d in meta["datasets"]]  # fmt: skip
    (scale0, shift0), (scale1, shift1) = transforms
    np.testing.assert_allclose(scale0, [7.91] * 3)
    np.testing.assert_allclose(shift0, [5 * 7.91, 10 * 7.91, 0])  # the --bbox start, in micrometres
    np.testing.assert_allclose(scale1, [15.82] * 3)
    np.testing.assert_allclose(shift1, [5.5 * 7.91, 10.5 * 7.91, 0.5 * 7.91])  # level 1's voxel centres
    assert meta["label"]["version"] == "0.4" and meta["label"]["colors"][1]["label-value"] == 1
    assert len(meta["probabilities"]) == 2
