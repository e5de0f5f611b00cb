"""``nnunetv2_topo predict``: every bad input is one clear error (exit 2) before any work, and nothing is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nnunetv2_topo.cli.main import main
from nnunetv2_topo.io import write_tiff
from nnunetv2_topo.postprocessing.steps import PostprocessConfig
from nnunetv2_topo.submission import SubmissionError, write_volumes_zip
from nnunetv2_topo.testing.untrained import write_untrained_model_folder as write_model_folder

pytestmark = pytest.mark.usefixtures("restore_ext_trainer")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("predict_errors")
    images = root / "test_images"
    images.mkdir()
    for cid in ("a", "b"):
        write_tiff(images / f"{cid}.tif", np.full((16, 16, 16), 100, np.uint8))
    csv = root / "test.csv"
    csv.write_text("id,scroll_id\na,1\nb,1\n")
    return SimpleNamespace(
        root=root, images=images, csv=csv,
        a=write_model_folder(root / "m1", folds=(0, 1)),
        b=write_model_folder(root / "m2", folds=(0,), plans_name="nnUNetPlans_b"),
    )  # fmt: skip


def _error(capsys, *args) -> str:
    assert main(["predict", "--device", "cpu", "--quiet", *map(str, args)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


def _run(env, tmp_path, *extra) -> tuple[str, ...]:
    return ("--input", env.images, "--output", tmp_path / "out", *extra)


def test_model_errors(env, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.copytree(env.a, empty, ignore=shutil.ignore_patterns("*.pth"))
    err = _error(capsys, *_run(env, tmp_path, "--model", empty))
    assert f"model folder {empty} has no fold_*/checkpoint_final.pth: is training finished?" in err
    (empty / "fold_0" / "checkpoint_best.pth").touch()
    assert "(found: checkpoint_best.pth; choose one with --checkpoint)" in _error(
        capsys, *_run(env, tmp_path, "--model", empty)
    )
    err = _error(capsys, *_run(env, tmp_path, "--model", env.a, "--folds", "0", "3"))
    assert f"model folder {env.a}: fold(s) 3 have no checkpoint_final.pth; available folds: 0, 1" in err
    err = _error(capsys, *_run(env, tmp_path, "--model", env.a, "--checkpoint", "checkpoint_best.pth"))
    assert "has no fold_*/checkpoint_best.pth: is training finished? (found: checkpoint_final.pth; choose" in err
    assert "fold(s) 1 have no checkpoint_best.pth" in _error(
        capsys, *_run(env, tmp_path, "--model", empty, "--checkpoint", "checkpoint_best.pth", "--folds", "0", "1")
    )
    assert f"model folder {tmp_path / 'nope'} does not exist" in _error(
        capsys, *_run(env, tmp_path, "--model", tmp_path / "nope")
    )
    assert "dataset.json is missing; pass the <trainer>__<plans>__<configuration> folder" in _error(
        capsys, *_run(env, tmp_path, "--model", tmp_path)
    )
    assert f"model folder {env.a} is given twice; to weight it more, use --weights" in _error(
        capsys, *_run(env, tmp_path, "--model", env.a, "--model", env.a)
    )
    assert not (tmp_path / "out").exists()


def test_models_on_different_label_sets(env, tmp_path: Path, capsys) -> None:
    other = write_model_folder(tmp_path, labels={"background": 0, "ink": 1, "ignore": 2})
    err = _error(capsys, *_run(env, tmp_path, "--model", env.a, "--model", other))
    assert "models trained on different label sets:" in err and "'ink': 1" in err
    multi = write_model_folder(tmp_path / "multi", labels={"background": 0, "a": 1, "b": 2})
    assert "are not one foreground class (plus background/ignore)" in _error(
        capsys, *_run(env, tmp_path, "--model", multi)
    )


def test_unknown_trainer_is_named(env, tmp_path: Path, capsys) -> None:
    model = write_model_folder(tmp_path, trainer="nnUNetTrainerDoesNotExist")
    err = _error(capsys, *_run(env, tmp_path, "--model", model))
    assert "trainer class 'nnUNetTrainerDoesNotExist' not found in nnU-Net or in nnUNet_extTrainer=" in err
    assert not (tmp_path / "out").exists()


def test_weight_errors(env, tmp_path: Path, capsys) -> None:
    from nnunetv2_topo.postprocessing.config_file import FusionSpec, PostprocessFile, save_postprocess_file

    err = _error(capsys, *_run(env, tmp_path, "--model", env.a, "--model", env.b, "--weights", "1"))
    assert "--weights: 1 weight(s) for 2 --model(s); give one weight per --model, in order" in err
    assert "--weights -1.0: fusion weights must be finite" in _error(
        capsys, *_run(env, tmp_path, "--model", env.a, "--weights", "-1")
    )
    config = tmp_path / "postprocess.json"
    save_postprocess_file(config, PostprocessFile(FusionSpec("logit", (0.3, 0.3, 0.4)), PostprocessConfig(), {}))
    err = _error(capsys, *_run(env, tmp_path, "--model", env.a, "--model", env.b, "--config", config))
    assert f"{config} (fusion.weights): 3 weight(s) for 2 --model(s)" in err
    config.write_text("{not json")
    assert f"{config}" in _error(capsys, *_run(env, tmp_path, "--model", env.a, "--config", config))
    assert not (tmp_path / "out").exists()


def test_input_errors(env, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"input folder {empty} holds no .tif/.tiff volumes" in _error(
        capsys, "--input", empty, "--output", tmp_path / "o", "--model", env.a
    )
    assert f"input folder {tmp_path / 'x'} does not exist" in _error(
        capsys, "--input", tmp_path / "x", "--output", tmp_path / "o", "--model", env.a
    )
    mixed = tmp_path / "mixed"
    shutil.copytree(env.images, mixed)
    shutil.copy(mixed / "a.tif", mixed / "c_0000.tif")
    assert "mixes nnU-Net names (<id>_0000.tif) with Kaggle names (a.tif, b.tif); use one layout" in _error(
        capsys, "--input", mixed, "--output", tmp_path / "o", "--model", env.a
    )
    channels = tmp_path / "channels"
    channels.mkdir()
    shutil.copy(env.images / "a.tif", channels / "a_0000.tif")
    shutil.copy(env.images / "a.tif", channels / "a_0001.tif")
    assert "channel 0001; predict takes single-channel CT volumes" in _error(
        capsys, "--input", channels, "--output", tmp_path / "o", "--model", env.a
    )
    csv = tmp_path / "test.csv"
    csv.write_text("id,scroll_id\na,1\nz,1\n")
    err = _error(capsys, *_run(env, tmp_path, "--model", env.a, "--csv", csv))
    assert f"no input volume for 1 test id(s) of {csv}: z; 1 input volume(s) not in {csv}: b" in err
    assert "--input and at least one --model are required" in _error(capsys, "--output", tmp_path / "o")
    assert not (tmp_path / "o").exists() and not (tmp_path / "out").exists()


def test_output_part_device_and_budget_errors(env, tmp_path: Path, capsys, monkeypatch) -> None:
    zip_out = tmp_path / "s.zip"
    zip_out.touch()
    base = ("--input", env.images, "--model", env.a)
    assert f"{zip_out} exists; add --overwrite to replace it" in _error(capsys, *base, "--output", zip_out)
    assert "--num-parts > 1 writes one folder per part" in _error(
        capsys, *base, "--output", tmp_path / "t.zip", "--num-parts", "2"
    )
    assert "--part-id must lie in 0..1 for --num-parts 2, got 2" in _error(
        capsys, *base, "--output", tmp_path / "p", "--num-parts", "2", "--part-id", "2"
    )
    assert "--num-parts must be >= 1, got 0" in _error(capsys, *base, "--output", tmp_path / "p", "--num-parts", "0")
    assert "--time-budget-hours must be > 0, got 0.0" in _error(
        capsys, *base, "--output", tmp_path / "p", "--time-budget-hours", "0"
    )
    assert "--merge only joins finished parts; drop --model" in _error(capsys, "--merge", tmp_path, "--output", zip_out,
                                                                       "--model", env.a)  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["predict", *map(str, base), "--output", str(tmp_path / "p"), "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA device is visible to torch; use --device cpu" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_write_volumes_zip_refuses_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "s.zip"
    ok = np.zeros((2, 3, 4), np.uint8)
    cases = [
        ([("a", ok), ("x", ok)], "id x is not one of the submission's ids; remove it"),
        ([("a", ok), ("a", ok)], "id a given twice"),
        ([("a", ok)], "no volume for 1 id(s): b"),
        ([("a", ok + 2)], "id a: expected a 3-D uint8 volume of 0/1, got uint8 of shape (2, 3, 4) with maximum 2"),
        ([("a", ok.astype(np.float32))], "expected a 3-D uint8 volume of 0/1, got float32"),
    ]
    for volumes, message in cases:
        with pytest.raises(SubmissionError, match=message.replace("(", r"\(").replace(")", r"\)")):
            write_volumes_zip(out, ["a", "b"], iter(volumes))
        assert not out.exists() and not list(tmp_path.iterdir())

    def failing():
        yield "a", ok
        raise RuntimeError("prediction failed")

    with pytest.raises(RuntimeError, match="prediction failed"):
        write_volumes_zip(out, ["a", "b"], failing())
    assert not list(tmp_path.iterdir())
    assert write_volumes_zip(out, ["a", "b"], iter([("b", ok), ("a", ok + 1)])) == out


def test_spacing_sidecar_is_checked(tmp_path: Path) -> None:
    from nnunetv2_topo.inference.cases import CaseError, index_input_images

    write_tiff(tmp_path / "a_0000.tif", np.zeros((4, 4, 4), np.uint8))
    (tmp_path / "a.json").write_text(json.dumps({"spacing": [1, 2, 3]}))
    (case,) = index_input_images(tmp_path)
    assert case.id == "a" and case.read()[1] == (1.0, 2.0, 3.0)
    (tmp_path / "a.json").write_text(json.dumps({"spacing": [1, 0, 3]}))
    with pytest.raises(CaseError, match="'spacing' must be 3 positive numbers, got"):
        case.read()
