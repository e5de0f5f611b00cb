"""``nnunetv2_topo demo`` end to end on a tiny budget: every real nnUNetv2_* command, both trainers, a valid
submission and the score table."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from nnunetv2_topo.cli.main import main
from nnunetv2_topo.demo import BASELINE_TRAINER, MARKER, TOPO_TRAINER
from nnunetv2_topo.score_table import format_table

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("demo") / "work"
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(
            ["demo", "--work", str(work), "--cases", "4", "--test-cases", "2", "--shape", "32", "32", "32",
             "--epochs", "2", "--iterations", "2", "--device", "cpu", "--dataset-id", "993", "-np", "2"]
        )  # fmt: skip
    assert rc == 0, out.getvalue()[-4000:]
    return work, out.getvalue()


def test_demo_writes_a_valid_submission(demo_run: tuple[Path, str]) -> None:
    work, _ = demo_run
    test_ids = [line.split(",")[0] for line in (work / "kaggle" / "test.csv").read_text().splitlines()[1:]]
    assert len(test_ids) == 2
    with zipfile.ZipFile(work / "submission.zip") as zf:
        assert sorted(zf.namelist()) == sorted(f"{i}.tif" for i in test_ids)
        for cid in test_ids:
            with zf.open(f"{cid}.tif") as f:
                vol = tifffile.imread(f)
            image = tifffile.imread(work / "kaggle" / "test_images" / f"{cid}.tif")
            assert vol.dtype == np.uint8 and vol.shape == image.shape
            assert set(np.unique(vol)) <= {0, 1}


def test_demo_trains_both_trainers_on_the_same_budget_and_scores_them(demo_run: tuple[Path, str]) -> None:
    work, out = demo_run
    for trainer in (TOPO_TRAINER, BASELINE_TRAINER):
        for variant in (trainer, f"{trainer}_postprocessed"):
            scores = json.loads((work / "predictions" / f"{variant}_scores.json").read_text())
            assert len(scores["cases"]) == 2
            assert 0.0 <= scores["mean"]["score"] <= 1.0
            assert f"{variant}\n{format_table(scores)}" in out  # the table of nnunetv2_topo evaluate
        fold = (
            work / "nnUNet_results" / "Dataset993_VesuviusDemo" / f"{trainer}__nnUNetPlans_demo__3d_fullres" / "fold_0"
        )
        assert (fold / "checkpoint_final.pth").exists()
        log = next(fold.glob("training_log_*.txt")).read_text()
        assert "Epoch 1" in log and "Epoch 2" not in log  # --epochs 2 reached both trainers
    assert (
        fold.parent.parent / f"{TOPO_TRAINER}__nnUNetPlans_demo__3d_fullres" / "fold_0" / "progress_topo.png"
    ).exists()
    assert "Side by side" in out and "Time per stage" in out
    assert (work / MARKER).exists() and (work / "logs" / "plan_and_preprocess.log").exists()


def test_demo_tunes_on_validation_and_submits_the_fused_tuned_prediction(demo_run: tuple[Path, str]) -> None:
    from nnunetv2_topo.demo import FUSED
    from nnunetv2_topo.postprocessing.config_file import load_postprocess_file

    work, out = demo_run
    tuned = load_postprocess_file(work / "postprocess.json")
    model_dirs = {
        str(work / "nnUNet_results" / "Dataset993_VesuviusDemo" / f"{t}__nnUNetPlans_demo__3d_fullres")
        for t in (TOPO_TRAINER, BASELINE_TRAINER)
    }
    assert set(tuned.fusion.inputs) == model_dirs  # tuned on both models' validation probabilities
    test_ids = {line.split(",")[0] for line in (work / "kaggle" / "test.csv").read_text().splitlines()[1:]}
    for trainer in (TOPO_TRAINER, BASELINE_TRAINER):  # the validation .npz it learned from: never a test case
        val = work / "nnUNet_results" / "Dataset993_VesuviusDemo" / f"{trainer}__nnUNetPlans_demo__3d_fullres"
        npz = {p.name.split(".")[0] for p in (val / "fold_0" / "validation").glob("*.npz")}
        assert npz and not npz & test_ids
    for variant in (FUSED, f"{FUSED}_postprocessed", f"{FUSED}_tuned"):
        scores = json.loads((work / "predictions" / f"{variant}_scores.json").read_text())
        assert sorted(scores["cases"]) == sorted(test_ids)
    with zipfile.ZipFile(work / "submission.zip") as zf:  # what is scored as "tuned" is exactly the submission
        for cid in test_ids:
            with zf.open(f"{cid}.tif") as f:
                np.testing.assert_array_equal(
                    tifffile.imread(f), tifffile.imread(work / "predictions" / f"{FUSED}_tuned" / f"{cid}.tif")
                )
    assert "fused (2 models)" in out and "<- submission.zip" in out and "tuned on the validation" in out


def test_demo_rerun_replaces_its_folder(demo_run: tuple[Path, str], capsys: pytest.CaptureFixture) -> None:
    work, _ = demo_run
    stale = work / "stale.txt"
    stale.write_text("from an earlier run")
    # an invalid option fails before anything runs: the folder is untouched
    assert main(["demo", "--work", str(work), "--epochs", "0"]) == 2
    assert stale.exists()
    from nnunetv2_topo.demo import Demo, DemoOptions

    demo = Demo(DemoOptions(work=work, device="cpu"))
    demo.prepare_work_folder()
    assert not stale.exists() and (work / MARKER).exists() and list(work.iterdir())
