"""``nnunetv2_topo evaluate`` and ``evaluate_folders``: pairing, output, every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from nnunetv2_topo.cli.main import main
from nnunetv2_topo.evaluation.folder_scoring import EvaluationError, evaluate_folders
from nnunetv2_topo.io import write_tiff
from nnunetv2_topo.metrics import leaderboard_score


def _gt(seed: int) -> np.ndarray:
    gt = np.zeros((16, 18, 20), np.uint8)
    gt[4:6] = 1
    gt[10:12, 2:16] = 1
    gt[:, :, 17:] = 2
    gt[seed % 3 + 1, 3, 3] = 1
    return gt


def _pred(seed: int) -> np.ndarray:
    p = (_gt(seed) == 1).astype(np.uint8)
    p[4:6, 5:8, 5:8] = 0
    p[14, 14, 3 + seed] = 1
    return p


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    for i, cid in enumerate(["101", "102", "103"]):
        write_tiff(gt / f"{cid}.tif", _gt(i))
        write_tiff(pred / f"{cid}.tif", _pred(i) * 255)
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(_pred(0)), str(pred / "104.nii.gz"))
    write_tiff(gt / "104.tif", _gt(0))
    return pred, gt


def test_evaluate_folders_scores_each_pair(folders) -> None:
    pred, gt = folders
    result = evaluate_folders(pred, gt, num_processes=0, progress=False)
    assert list(result["cases"]) == ["101", "102", "103", "104"]
    for i, cid in enumerate(["101", "102", "103"]):
        assert result["cases"][cid] == leaderboard_score(_pred(i), _gt(i), workers=0)
    assert result["cases"]["104"] == result["cases"]["101"]
    want = np.mean([c["score"] for c in result["cases"].values()])
    assert result["mean"]["score"] == pytest.approx(want)
    assert set(result["mean"]) == {"score", "topo", "surface_dice", "voi_score"}


def test_evaluate_with_worker_pool_matches_serial(folders) -> None:
    pred, gt = folders
    serial = evaluate_folders(pred, gt, num_processes=0, progress=False)
    assert evaluate_folders(pred, gt, num_processes=2, progress=False) == serial


def test_cli_prints_table_and_writes_json(folders, tmp_path, capsys) -> None:
    pred, gt = folders
    out = tmp_path / "res" / "scores.json"
    assert main(["evaluate", "--input", str(pred), "--gt", str(gt), "--json", str(out), "-np", "0"]) == 0
    text = capsys.readouterr().out
    assert "101" in text and "mean" in text
    data = json.loads(out.read_text())
    assert set(data) == {"cases", "mean", "fallback_tiles"}
    assert data["fallback_tiles"] == {"total": 0, "cases": {"101": 0, "102": 0, "103": 0, "104": 0}}
    assert data["cases"]["102"]["counts"]["0"] == leaderboard_score(_pred(1), _gt(1), workers=0)["counts"]["0"]


def _run_error(args: list[str], capsys) -> str:
    assert main(["evaluate", *args, "-np", "0", "--quiet"]) == 2
    return capsys.readouterr().err


def test_missing_pairs_are_listed(folders, capsys) -> None:
    pred, gt = folders
    (pred / "102.tif").unlink()
    write_tiff(pred / "999.tif", _pred(0))
    err = _run_error(["--input", str(pred), "--gt", str(gt)], capsys)
    assert "102" in err and "999" in err and "without a prediction" in err and "without ground truth" in err


def test_only_predicted_skips_extra_ground_truth_but_not_missing_ground_truth(folders, capsys) -> None:
    pred, gt = folders
    (pred / "102.tif").unlink()
    result = evaluate_folders(pred, gt, num_processes=0, progress=False, only_predicted=True)
    assert list(result["cases"]) == ["101", "103", "104"]
    assert main(["evaluate", "--input", str(pred), "--gt", str(gt), "--only-predicted", "-np", "0", "--quiet"]) == 0
    write_tiff(pred / "999.tif", _pred(0))  # a prediction without ground truth is still refused
    err = _run_error(["--input", str(pred), "--gt", str(gt), "--only-predicted"], capsys)
    assert "999" in err and "without ground truth" in err and "102" not in err


def test_shape_mismatch(folders, capsys) -> None:
    pred, gt = folders
    write_tiff(pred / "103.tif", np.zeros((16, 18, 21), np.uint8))
    err = _run_error(["--input", str(pred), "--gt", str(gt)], capsys)
    assert "103" in err and "shape mismatch" in err


def test_non_3d_volume(folders, capsys) -> None:
    pred, gt = folders
    tifffile.imwrite(pred / "101.tif", np.zeros((18, 20), np.uint8))
    err = _run_error(["--input", str(pred), "--gt", str(gt)], capsys)
    assert "101" in err and "3-D" in err


def test_unreadable_file(folders, capsys) -> None:
    pred, gt = folders
    (pred / "101.tif").write_bytes(b"not a tiff")
    err = _run_error(["--input", str(pred), "--gt", str(gt)], capsys)
    assert "101.tif" in err and "unreadable" in err


def test_empty_and_missing_folders(tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    err = _run_error(["--input", str(empty), "--gt", str(empty)], capsys)
    assert "holds no volumes" in err
    err = _run_error(["--input", str(tmp_path / "nope"), "--gt", str(empty)], capsys)
    assert "does not exist" in err


def test_duplicate_case_ids(folders) -> None:
    pred, gt = folders
    write_tiff(pred / "101.tiff", _pred(0))
    with pytest.raises(EvaluationError, match="two files for case '101'"):
        evaluate_folders(pred, gt, num_processes=0, progress=False)


def test_bad_process_count_and_json_dir(folders, tmp_path, capsys) -> None:
    pred, gt = folders
    assert main(["evaluate", "--input", str(pred), "--gt", str(gt), "-np", "-1"]) == 2
    assert "-np" in capsys.readouterr().err
    assert main(["evaluate", "--input", str(pred), "--gt", str(gt), "--json", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
