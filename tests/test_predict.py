"""``nnunetv2_topo predict``: in-process runs with tiny random-weight model folders (no training needed)."""

from __future__ import annotations

import itertools
import json
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch
from predict_fixtures import nnunet_layout, with_zero_border

from nnunetv2_topo.cli.main import main
from nnunetv2_topo.inference.cases import PART_MANIFEST, InputCase, index_input_images
from nnunetv2_topo.inference.models import check_model_folder, make_predictor, use_topo_trainers
from nnunetv2_topo.inference.predict import LoadedModel, RunReport, _rotation_dims, load_models, predict_cases
from nnunetv2_topo.io import read_volume
from nnunetv2_topo.postprocessing.fusion import LOGIT_CLAMP
from nnunetv2_topo.postprocessing.steps import PostprocessConfig, postprocess_volume
from nnunetv2_topo.testing.untrained import write_untrained_model_folder as write_model_folder

pytestmark = pytest.mark.usefixtures("restore_ext_trainer")

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def setup(kaggle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Two models that differ in trainer, plans and folds; the test images in both layouts, with zero borders."""
    root = tmp_path_factory.mktemp("predict")
    a = write_model_folder(root / "results", folds=(0, 1), patch=(32, 32, 32), seed=1)
    b = write_model_folder(
        root / "results", trainer="nnUNetTrainerTopoWarmup", plans_name="nnUNetPlans_b", patch=(16, 32, 32),
        features=(4, 8, 16, 16), folds=(0,), seed=2,
    )  # fmt: skip
    kaggle = with_zero_border(kaggle_dir / "test_images", root / "test_images")
    return SimpleNamespace(
        root=root, a=a, b=b, kaggle=kaggle, clean=kaggle_dir / "test_images",
        nnunet=nnunet_layout(kaggle, root / "imagesTs"),
        csv=kaggle_dir / "test.csv", ids=sorted(p.name[:-4] for p in kaggle.glob("*.tif")),
    )  # fmt: skip


def _predict(*args) -> int:
    return main(["predict", "--device", "cpu", "--quiet", *map(str, args)])


def _read_all(folder: Path, ids) -> dict[str, np.ndarray]:
    return {i: read_volume(folder / f"{i}.tif") for i in ids}


def _single_logits(setup, folder: Path, tta: str) -> dict[str, np.ndarray]:
    """Each case's binary logit l1 - l0 from one model, through the predictor API."""
    use_topo_trainers()
    (model,) = load_models([check_model_folder(folder, None, "checkpoint_final.pth")], [1.0], CPU, progress=False)
    out = {}
    for case in index_input_images(setup.kaggle):
        image, spacing = case.read()
        data, props = model.preprocess(image, spacing)
        out[case.id] = model.binary_logit(model.logits(data, tta), props)
    return out


# ---------------------------------------------------------------------------------------------------- outputs


@pytest.mark.e2e
def test_both_input_layouts_give_the_same_binary_volumes(setup, tmp_path: Path) -> None:
    assert _predict("--input", setup.kaggle, "--output", tmp_path / "k", "--model", setup.a, "--tta", "none") == 0
    assert _predict("--input", setup.nnunet, "--output", tmp_path / "n", "--model", setup.a, "--tta", "none") == 0
    kaggle, nnunet = _read_all(tmp_path / "k", setup.ids), _read_all(tmp_path / "n", setup.ids)
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == [f"{i}.tif" for i in setup.ids]
    logits = _single_logits(setup, setup.a, "none")
    for cid in setup.ids:
        assert kaggle[cid].dtype == np.uint8 and kaggle[cid].shape == read_volume(setup.kaggle / f"{cid}.tif").shape
        np.testing.assert_array_equal(kaggle[cid], nnunet[cid])
        np.testing.assert_array_equal(kaggle[cid], (logits[cid] > 0).astype(np.uint8))
        assert 0.05 < kaggle[cid].mean() < 0.95  # a non-trivial prediction
        # the zero border nnU-Net crops away comes back as background
        assert not kaggle[cid][:3].any() and not kaggle[cid][:, :, -5:].any()
        assert (logits[cid][:3] == -LOGIT_CLAMP).all()


@pytest.mark.e2e
def test_zip_output_is_a_checked_submission(setup, tmp_path: Path) -> None:
    out = tmp_path / "submission.zip"
    args = ("--input", setup.kaggle, "--model", setup.a, "--tta", "none", "--csv", setup.csv)
    assert _predict(*args, "--output", out) == 0
    assert _predict("--input", setup.kaggle, "--model", setup.a, "--tta", "none", "--output", tmp_path / "f") == 0
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == [f"{i}.tif" for i in setup.ids]
        for cid in setup.ids:
            with zf.open(f"{cid}.tif") as f:
                vol = tifffile.imread(f)
            np.testing.assert_array_equal(vol, read_volume(tmp_path / "f" / f"{cid}.tif"))
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.e2e
def test_two_models_fuse_weighted_logits_and_probabilities(setup, tmp_path: Path) -> None:
    la, lb = _single_logits(setup, setup.a, "none"), _single_logits(setup, setup.b, "none")
    common = ("--input", setup.kaggle, "--model", setup.a, "--model", setup.b, "--tta", "none")
    assert _predict(*common, "--weights", "0.3", "0.7", "--output", tmp_path / "logit") == 0
    assert _predict(*common, "--fusion", "prob", "--output", tmp_path / "prob") == 0
    fused, prob = _read_all(tmp_path / "logit", setup.ids), _read_all(tmp_path / "prob", setup.ids)
    for cid in setup.ids:
        mean = (0.3 * la[cid].astype(np.float64) + 0.7 * lb[cid]) / 1.0
        decided = np.abs(mean) > 1e-4
        np.testing.assert_array_equal(fused[cid][decided], (mean > 0)[decided])
        p = (1 / (1 + np.exp(-la[cid].astype(np.float64))) + 1 / (1 + np.exp(-lb[cid].astype(np.float64)))) / 2
        decided = np.abs(p - 0.5) > 1e-6
        np.testing.assert_array_equal(prob[cid][decided], (p > 0.5)[decided])
        # the fusion is neither model alone
        assert (fused[cid] != (la[cid] > 0)).any() and (fused[cid] != (lb[cid] > 0)).any()


@pytest.mark.e2e
def test_config_supplies_fusion_and_post_processing(setup, tmp_path: Path) -> None:
    from nnunetv2_topo.postprocessing.config_file import FusionSpec, PostprocessFile, save_postprocess_file

    steps = PostprocessConfig(threshold=0.6, min_component_size=500, plug_holes=True)
    config = tmp_path / "postprocess.json"
    save_postprocess_file(config, PostprocessFile(FusionSpec("logit", (0.3, 0.7)), steps, {}))
    common = ("--input", setup.kaggle, "--model", setup.a, "--model", setup.b, "--tta", "none")
    assert _predict(*common, "--config", config, "--output", tmp_path / "cfg") == 0
    la, lb = _single_logits(setup, setup.a, "none"), _single_logits(setup, setup.b, "none")
    out = _read_all(tmp_path / "cfg", setup.ids)
    for cid in setup.ids:
        p = 1 / (1 + np.exp(-(0.3 * la[cid] + 0.7 * lb[cid])))
        expected = postprocess_volume(p.astype(np.float32), steps)
        assert (out[cid] != expected).mean() < 1e-3  # voxels at p = 0.6 may round either way
        assert out[cid].sum() < (p > 0.5).sum()  # the higher threshold and dust removal did act


# ---------------------------------------------------------------------------------------------------- TTA


@pytest.mark.parametrize(("transpose", "dims"), [((0, 1, 2), (2, 3)), ((2, 0, 1), (1, 3)), ((1, 2, 0), (1, 2))])
def test_rotation_dims_follow_the_image_z_axis(transpose, dims) -> None:
    assert _rotation_dims(transpose) == dims


@pytest.mark.e2e
def test_rot90_tta_makes_the_prediction_rotation_equivariant(setup) -> None:
    """With the 16 views the fused logit of a volume rotated about z is the rotated logit, up to the float16 rounding
    of nnU-Net's sliding-window accumulators; with nnU-Net's mirroring alone it is not (random weights are not
    rotation-invariant). The volume is 32 x 40 x 36: not square in-plane, so the rotated view has another shape."""
    use_topo_trainers()
    (model,) = load_models([check_model_folder(setup.a, ("0",), "checkpoint_final.pth")], [1.0], CPU, progress=False)
    image, spacing = index_input_images(setup.clean)[0].read()
    rotated = np.ascontiguousarray(np.rot90(image, 1, axes=(1, 2)))

    def rotation_error(tta: str) -> np.ndarray:
        logits = []
        for img in (image, rotated):
            data, props = model.preprocess(img, spacing)
            logits.append(model.binary_logit(model.logits(data, tta), props))
        return np.abs(logits[1] - np.rot90(logits[0], 1, axes=(1, 2)))

    with_rot, mirror_only = rotation_error("mirror+rot90"), rotation_error("mirror")
    assert with_rot.mean() < 0.02 and np.percentile(with_rot, 99) < 0.1
    assert mirror_only.mean() > 0.2 and mirror_only.mean() > 20 * with_rot.mean()


# ---------------------------------------------------------------------------------------------------- parts


@pytest.mark.e2e
def test_parts_merge_into_the_same_submission(setup, tmp_path: Path) -> None:
    common = ("--input", setup.kaggle, "--model", setup.a, "--tta", "none", "--num-parts", "2")
    for k in (0, 1):
        assert _predict(*common, "--part-id", k, "--output", tmp_path / f"part{k}") == 0
    assert [p.name for p in (tmp_path / "part0").glob("*.tif")] == [f"{setup.ids[0]}.tif"]
    manifest = json.loads((tmp_path / "part1" / PART_MANIFEST).read_text())
    assert manifest["cases"] == setup.ids[1::2] and manifest["all_cases"] == setup.ids
    out = tmp_path / "merged.zip"
    assert main(["predict", "--merge", str(tmp_path / "part0"), str(tmp_path / "part1"), "--output", str(out),
                 "--csv", str(setup.csv)]) == 0  # fmt: skip
    assert _predict("--input", setup.kaggle, "--model", setup.a, "--tta", "none", "--output", tmp_path / "one") == 0
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == [f"{i}.tif" for i in setup.ids]
        for cid in setup.ids:
            with zf.open(f"{cid}.tif") as f:
                np.testing.assert_array_equal(tifffile.imread(f), read_volume(tmp_path / "one" / f"{cid}.tif"))


def _merge_error(capsys, *args) -> str:
    assert main(["predict", "--merge", *map(str, args)]) == 2
    return capsys.readouterr().err


def test_merge_refuses_missing_and_doubled_cases(tmp_path: Path, capsys) -> None:
    from nnunetv2_topo.inference.cases import write_part_manifest
    from nnunetv2_topo.io import write_tiff

    ids = ["a", "b", "c"]
    for k in (0, 1):
        d = tmp_path / f"p{k}"
        d.mkdir()
        write_part_manifest(d, ids, 2, k)
        for cid in ids[k::2]:
            write_tiff(d / f"{cid}.tif", np.zeros((2, 2, 2), np.uint8))
    out = tmp_path / "s.zip"
    assert "case(s) have no prediction in the part folders (part(s) 1 not given): b" in _merge_error(
        capsys, tmp_path / "p0", "--output", out
    )
    assert "part 0 given twice" in _merge_error(capsys, tmp_path / "p0", tmp_path / "p0", "--output", out)
    shutil.copy(tmp_path / "p0" / "a.tif", tmp_path / "p1" / "a.tif")
    assert "case a is predicted twice" in _merge_error(capsys, tmp_path / "p0", tmp_path / "p1", "--output", out)
    (tmp_path / "p1" / "a.tif").unlink()
    (tmp_path / "p1" / "b.tif").unlink()
    assert "1 case(s) have no prediction in the part folders: b" in _merge_error(
        capsys, tmp_path / "p0", tmp_path / "p1", "--output", out
    )
    assert f"{tmp_path} is not a predict part folder" in _merge_error(capsys, tmp_path, "--output", out)
    assert "--output must end in .zip" in _merge_error(capsys, tmp_path / "p0", "--output", tmp_path / "dir")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------- time budget


def test_time_budget_warns_then_drops_tta(monkeypatch, capsys) -> None:
    import nnunetv2_topo.inference.predict as predict

    seen: list[str] = []

    def fake_fused(models, image, spacing, tta, mode):
        seen.append(tta)
        return np.full(image.shape, 0.9, np.float32)

    monkeypatch.setattr(predict, "fused_probability", fake_fused)
    monkeypatch.setattr(InputCase, "read", lambda self: (np.zeros((2, 2, 2), np.float32), (1.0, 1.0, 1.0)))
    ticks = itertools.count(0.0, 1800.0)  # every clock call is half an hour later
    cases = [InputCase(f"c{i}", Path(f"c{i}.tif")) for i in range(4)]
    report = RunReport()
    lines: list[str] = []
    masks = dict(
        predict_cases([], cases, "mirror+rot90", "logit", None, report, 2.0, False, lambda: next(ticks), lines.append)
    )
    # one line per case for logs without a progress bar: each case takes 1800 s of the fake clock
    assert lines == [
        "case 1/4 c0: 1800.0 s, TTA mirror+rot90",
        "case 2/4 c1: 1800.0 s, TTA mirror+rot90",
        "case 3/4 c2: 1800.0 s, TTA none (dropped from mirror+rot90 to fit the time budget)",
        "case 4/4 c3: 1800.0 s, TTA none (dropped from mirror+rot90 to fit the time budget)",
    ]
    # cases start at 0.5 h, 1.5 h, 2.5 h, 3.5 h (and end half an hour later): the last two start past the budget
    assert seen == ["mirror+rot90", "mirror+rot90", "none", "none"]
    assert report.without_tta == ["c2", "c3"] and report.budget_warned
    assert all(m.dtype == np.uint8 and m.all() for m in masks.values())
    err = capsys.readouterr().err
    assert "exceeds the time budget of 2 h" in err
    assert "time budget of 2 h passed: the last 2 case(s) were predicted without TTA (c2, c3)" in report.summary(
        "mirror+rot90", 2.0
    )


@pytest.mark.e2e
def test_cli_time_budget_summary(setup, tmp_path: Path, capsys) -> None:
    args = ("--input", setup.kaggle, "--model", setup.a, "--folds", "0", "--output", tmp_path / "o")
    assert _predict(*args, "--time-budget-hours", "1e-9") == 0
    (summary,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("predicted ")]
    assert summary.startswith(f"predicted {len(setup.ids)} case(s) in ")
    assert "; time budget of 1e-09 h passed: the last " in summary and f"{setup.ids[-1]})" in summary


# ---------------------------------------------------------------------------------------------------- device


def test_predictor_device_settings(monkeypatch) -> None:
    from nnunetv2_topo.cli.model_options import device as _device
    from nnunetv2_topo.errors import CLIError

    gpu = make_predictor(torch.device("cuda"), use_mirroring=True)
    assert gpu.device.type == "cuda" and gpu.perform_everything_on_device and gpu.use_mirroring
    cpu = make_predictor(CPU, use_mirroring=False)
    assert cpu.device.type == "cpu" and not cpu.perform_everything_on_device and not cpu.use_mirroring
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _device(None).type == "cpu"
    with pytest.raises(CLIError, match="--device cuda: no CUDA device is visible to torch; use --device cpu"):
        _device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _device(None).type == "cuda"


@pytest.mark.e2e
def test_logits_come_back_on_the_cpu_for_rotated_views(setup) -> None:
    """The rotated view goes through the predictor and back without a device mismatch; the result is on the CPU,
    float32, the preprocessed shape."""
    use_topo_trainers()
    folder = check_model_folder(setup.b, None, "checkpoint_final.pth")
    (model,) = load_models([folder], [1.0], CPU, progress=False)
    assert isinstance(model, LoadedModel)
    image, spacing = index_input_images(setup.kaggle)[0].read()
    data, _ = model.preprocess(image, spacing)
    logits = model.logits(data, "mirror+rot90")
    assert logits.device.type == "cpu" and logits.dtype == torch.float32 and logits.shape == (2, *data.shape[1:])
