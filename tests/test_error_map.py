"""``evaluate --errors``: planted errors are marked exactly, the costs add up to the score lost, the score is unchanged,
and bad input is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from nnunetv2_topo.cli.main import main
from nnunetv2_topo.io import write_tiff
from nnunetv2_topo.metrics.error_attribution import label_betti
from nnunetv2_topo.metrics.error_map import COST_KINDS, ERROR_CODES, find_errors
from nnunetv2_topo.metrics.leaderboard import start_score
from nnunetv2_topo.metrics.surface_dice import surface_dice, surface_misses
from nnunetv2_topo.metrics.topo_score import betti_numbers

SHAPE = (40, 40, 40)


def planted() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Ground truth with five sheets (z planes, 2 thick) and the ignore label at x >= 37; a prediction with one
    error of each kind. Returns (prediction, ground truth, {code name: the voxels that code must mark})."""
    gt = np.zeros(SHAPE, np.uint8)
    for z in (4, 12, 20, 28, 34):
        gt[z : z + 2] = 1
    gt[:, :, 37:] = 2
    pred = (gt == 1).astype(np.uint8)
    want = {k: np.zeros(SHAPE, bool) for k in ERROR_CODES}
    pred[6:12, 5:7, 5:7] = 1  # a bridge joining the sheets at z 4 and z 12
    want["merge"][6:12, 5:7, 5:7] = True
    pred[20:22, :, 18:20] = 0  # the sheet at z 20 cut in two
    want["split"][20:22, :, 18:20] = True
    pred[34:36] = 0  # the sheet at z 34 missed
    want["missed"][34:36, :, :37] = True
    pred[24:26, 10:20, 10:20] = 1  # a false positive of 200 voxels
    want["false_positive"][24:26, 10:20, 10:20] = True
    pred[16, 30, 30] = pred[25, 32, 32] = 1  # dust
    want["dust"][16, 30, 30] = want["dust"][25, 32, 32] = True
    pred[30, 20:25, 20:25] = 1  # the sheet at z 28 too thick there
    want["extra"][30, 20:25, 20:25] = True
    pred[28:30, 30:32, 30:32] = 0  # and a hole in it
    want["missing"][28:30, 30:32, 30:32] = True
    rng = np.random.default_rng(0)
    pred[:, :, 37:] = rng.random((40, 40, 3)) < 0.3  # anything in the ignore region is no error
    return pred, gt, want


def report_of(pred: np.ndarray, gt: np.ndarray, dust_size: int = 50):
    pending = start_score(pred, gt, keep_masks=True)
    result = pending.result()
    return result, find_errors(*pending.masks, pending.tile_counts(), result, dust_size)


def test_planted_errors_are_marked_exactly() -> None:
    pred, gt, want = planted()
    _, report = report_of(pred, gt)
    assert report.labels.dtype == np.uint8 and report.labels.shape == SHAPE
    for name, code in ERROR_CODES.items():
        assert np.array_equal(report.labels == code, want[name]), name
    assert not report.labels[gt == 2].any()
    kinds = [e["kind"] for e in report.errors]
    assert sorted(kinds) == sorted(["merge", "split", "missed", "false_positive", "dust", "dust"])
    by_kind = {e["kind"]: e for e in report.errors}
    assert by_kind["merge"]["voxels"] == 24 and by_kind["merge"]["bbox"] == [[6, 5, 5], [12, 7, 7]]
    assert len(by_kind["merge"]["gt_sheets"]) == 2 and len(by_kind["split"]["pred_components"]) == 2
    assert by_kind["false_positive"]["centroid"] == [24.5, 14.5, 14.5]
    assert by_kind["missed"]["voxels"] == 2 * 40 * 37


def test_dust_size_separates_dust_from_false_positives() -> None:
    pred, gt, want = planted()
    _, report = report_of(pred, gt, dust_size=201)
    assert np.array_equal(report.labels == ERROR_CODES["dust"], want["dust"] | want["false_positive"])
    with pytest.raises(ValueError, match="dust_size"):
        report_of(pred, gt, dust_size=0)


@pytest.mark.parametrize(
    "change",
    ["planted", "bridge", "cut", "hole", "dust", "roll1", "roll3", "empty", "thick"],
)
def test_costs_add_up_to_the_score_lost(change: str) -> None:
    if change == "planted":
        pred, gt, _ = planted()
    else:
        gt = np.zeros((64, 64, 64), np.uint8)
        gt[20:22] = 1
        gt[40:42] = 1
        pred = gt.copy()
        if change == "bridge":
            pred[22:40, 30:32, 30:32] = 1
        elif change == "cut":
            pred[20:22, :, 31:33] = 0
        elif change == "hole":
            pred[20:22, 10:14, 10:14] = 0
        elif change == "dust":
            pred[10, 10, 10] = pred[50, 50, 50] = 1
        elif change.startswith("roll"):
            pred = np.roll(gt, int(change[-1]), axis=0)
        elif change == "empty":
            pred[:] = 0
        else:
            pred[19:23] = 1
            pred[39:43] = 1
    result, report = report_of(pred, gt)
    assert set(report.costs) == set(COST_KINDS)
    lost = {"topo": 0.30 * (1 - result["topo"]), "surface_dice": 0.35 * (1 - result["surface_dice"])}
    lost["voi"] = 0.35 * (1 - result["voi_score"])
    for part, value in lost.items():
        assert sum(row[part] for row in report.costs.values()) == pytest.approx(value, abs=1e-9), part
        assert all(row[part] >= 0 for row in report.costs.values()), part
    assert sum(row["score"] for row in report.costs.values()) == pytest.approx(1 - result["score"], abs=1e-9)
    bits = sum(row["voi_bits"] for row in report.costs.values())
    assert bits == pytest.approx(result["voi_split"] + result["voi_merge"], abs=1e-9)


def test_each_error_costs_what_it_breaks() -> None:
    gt = np.zeros((64, 64, 64), np.uint8)
    gt[20:22] = 1
    gt[40:42] = 1
    pred = gt.copy()
    pred[22:40, 30:32, 30:32] = 1  # merge: VOI merge bits
    pred[10, 10, 10] = 1  # dust: an unmatched component in tile 0
    result, report = report_of(pred, gt)
    merge = next(e for e in report.errors if e["kind"] == "merge")
    dust = next(e for e in report.errors if e["kind"] == "dust")
    assert merge["voi_bits"]["merge"] > 0.9 and merge["voi_bits"]["split"] == 0
    assert [t["tile"] for t in dust["tiles"]] == [0]
    assert dust["tiles"][0]["claimed_pred"] == [1, 0, 0]
    assert dust["cost"]["topo"] == pytest.approx(0.3 * (1 - result["topo"]))
    assert report.costs["dust"]["topo"] > 0 and report.costs["merge"]["voi"] > report.costs["boundary"]["voi"]


def test_label_betti_equals_betti_of_each_component() -> None:
    import cc3d

    rng = np.random.default_rng(3)
    for _ in range(5):
        mask = rng.random((14, 15, 16)) < 0.35
        labels, n = cc3d.connected_components(mask, connectivity=26, return_N=True)
        table = label_betti(mask, labels, int(n))
        for i in range(1, int(n) + 1):
            assert tuple(table[i]) == betti_numbers(labels == i), i
    shell = np.zeros((7, 7, 7), bool)
    shell[1:6, 1:6, 1:6] = True
    shell[2:5, 2:5, 2:5] = False
    shell[3, 3, 3] = True  # a component inside the cavity: the cavity counts for the shell
    labels, n = cc3d.connected_components(shell, connectivity=26, return_N=True)
    assert label_betti(shell, labels, int(n))[1:].tolist() == [[1, 0, 1], [1, 0, 0]]


def test_surface_misses_make_up_the_surface_dice_loss() -> None:
    pred, gt, _ = planted()
    p, g = pred.astype(bool) & (gt != 2), gt == 1
    misses = surface_misses(p, g)
    lost = (misses["gt"][1].sum() + misses["pred"][1].sum()) / misses["total"]
    assert lost == pytest.approx(1 - surface_dice(p, g), abs=1e-12)
    assert surface_misses(np.zeros(SHAPE, bool), np.zeros(SHAPE, bool))["total"] == 0


# -- the command


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    pred, gt, _ = planted()
    write_tiff(gt_dir / "a.tif", gt)
    write_tiff(pred_dir / "a.tif", pred * 255)
    write_tiff(gt_dir / "b.tif", gt)
    write_tiff(pred_dir / "b.tif", (gt == 1).astype(np.uint8))
    return pred_dir, gt_dir


def _evaluate(pred: Path, gt: Path, *extra: str) -> int:
    return main(["evaluate", "--input", str(pred), "--gt", str(gt), "-np", "0", "--quiet", *extra])


def test_cli_writes_error_maps_and_keeps_the_score(folders, tmp_path, capsys) -> None:
    pred, gt = folders
    errors = tmp_path / "errors"
    assert _evaluate(pred, gt, "--json", str(tmp_path / "plain.json")) == 0
    assert _evaluate(pred, gt, "--json", str(tmp_path / "with.json"), "--errors", str(errors), "--dust-size", "50") == 0
    out = capsys.readouterr().out
    assert "where the score is lost" in out and "costliest: " in out
    plain, with_errors = (json.loads((tmp_path / n).read_text()) for n in ("plain.json", "with.json"))
    assert with_errors == plain
    names = sorted(p.name for p in errors.iterdir())
    assert names == ["a.errors.json", "a.errors.tif", "b.errors.json", "b.errors.tif", "summary.json", "summary.txt"]
    want = planted()[2]
    labels = tifffile.imread(errors / "a.errors.tif")
    assert labels.dtype == np.uint8
    assert np.array_equal(labels == ERROR_CODES["merge"], want["merge"])
    assert not tifffile.imread(errors / "b.errors.tif").any()
    case = json.loads((errors / "a.errors.json").read_text())
    assert case["score"] == plain["cases"]["a"] and case["codes"] == ERROR_CODES and case["dust_size"] == 50
    assert {e["kind"] for e in case["errors"]} == {"merge", "split", "missed", "false_positive", "dust"}
    summary = json.loads((errors / "summary.json").read_text())
    assert summary["cases"] == 2 and set(summary["kinds"]) == set(COST_KINDS)
    assert summary["mean_score_lost"] == pytest.approx(np.mean([1 - c["score"] for c in plain["cases"].values()]))
    assert summary["costliest"] == max(summary["kinds"], key=lambda k: summary["kinds"][k]["score"])
    assert (errors / "summary.txt").read_text().startswith("where the score is lost")


def test_cli_refuses_bad_errors_options(folders, tmp_path, capsys) -> None:
    pred, gt = folders
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert _evaluate(pred, gt, "--errors", str(a_file)) == 2
    assert "is a file" in capsys.readouterr().err
    full = tmp_path / "full"
    full.mkdir()
    (full / "old.txt").write_text("x")
    assert _evaluate(pred, gt, "--errors", str(full)) == 2
    assert "not empty" in capsys.readouterr().err and not (full / "a.errors.tif").exists()
    assert _evaluate(pred, gt, "--errors", str(full), "--overwrite") == 0
    captured = capsys.readouterr()
    assert (full / "a.errors.tif").exists() and "old.txt" in captured.err  # kept, and named
    assert _evaluate(pred, gt, "--errors", str(tmp_path / "e"), "--dust-size", "0") == 2
    assert "--dust-size must be 1 or more" in capsys.readouterr().err and not (tmp_path / "e").exists()
    assert _evaluate(pred, gt, "--dust-size", "10") == 2
    assert "--dust-size needs --errors" in capsys.readouterr().err
    assert _evaluate(pred, gt, "--errors", str(pred)) == 2
    assert "is the --input folder" in capsys.readouterr().err


def test_diagnose_with_parallel_tiles_sees_every_case_and_keeps_the_scores(folders, tmp_path) -> None:
    from nnunetv2_topo.evaluation.error_maps import ErrorMapWriter
    from nnunetv2_topo.evaluation.folder_scoring import evaluate_folders

    pred, gt = folders
    writer = ErrorMapWriter(tmp_path / "maps", dust_size=50)
    with_maps = evaluate_folders(pred, gt, num_processes=2, progress=False, diagnose=writer)
    assert with_maps == evaluate_folders(pred, gt, num_processes=0, progress=False)
    assert sorted(writer.costs) == ["a", "b"]
    lost = sum(row["score"] for row in writer.costs["a"].values())
    assert lost == pytest.approx(1 - with_maps["cases"]["a"]["score"], abs=1e-9)
