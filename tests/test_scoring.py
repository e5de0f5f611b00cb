"""``nnunetv2_topo.evaluation.case_scoring``: scoring in memory with the tile-count cache;
``nnunetv2_topo.evaluation.folder_scoring.score_folder``: post-process + score a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nnunetv2_topo.evaluation.case_scoring import postprocess_and_score, score_prediction, tile_digest
from nnunetv2_topo.evaluation.folder_scoring import evaluate_folders, score_folder
from nnunetv2_topo.io import read_volume, write_tiff
from nnunetv2_topo.metrics import leaderboard_score
from nnunetv2_topo.metrics.topo_score import tile_slices
from nnunetv2_topo.postprocessing import PostprocessConfig, postprocess_volume


def _gt() -> np.ndarray:
    gt = np.zeros((16, 18, 20), np.uint8)
    gt[4:6] = 1
    gt[10:12, 2:16] = 1
    gt[:, :, 17:] = 2
    return gt


def _pred() -> np.ndarray:
    p = (_gt() == 1).astype(np.uint8)
    p[4:6, 5:8, 5:8] = 0  # a hole in the first tile row
    p[14, 14, 3] = 1  # dust
    return p


def _without_cache_fields(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in ("tile_hits", "tile_misses")}


def test_score_prediction_equals_leaderboard_score() -> None:
    r = score_prediction(_pred(), _gt())
    assert _without_cache_fields(r) == leaderboard_score(_pred(), _gt(), workers=0)
    assert r["tile_hits"] == 0 and r["tile_misses"] == 8


def test_tile_cache_reuses_unchanged_tiles_only() -> None:
    cache: dict = {}
    first = score_prediction(_pred(), _gt(), cache)
    assert (first["tile_hits"], first["tile_misses"], len(cache)) == (0, 8, 8)
    again = score_prediction(_pred(), _gt(), cache)
    assert (again["tile_hits"], again["tile_misses"]) == (8, 0)
    assert again == {**first, "tile_hits": 8, "tile_misses": 0}
    changed = _pred()
    changed[14, 14, 3] = 0  # removing the dust voxel changes exactly one tile
    r = score_prediction(changed, _gt(), cache)
    assert (r["tile_hits"], r["tile_misses"]) == (7, 1)
    assert _without_cache_fields(r) == leaderboard_score(changed, _gt(), workers=0)


def test_tile_cache_sees_the_prediction_after_the_ignore_region() -> None:
    """Voxels under label 2 are removed before hashing: changing them is a cache hit and the same score."""
    cache: dict = {}
    score_prediction(_pred(), _gt(), cache)
    ignored = _pred()
    ignored[:, :, 18] = 1
    r = score_prediction(ignored, _gt(), cache)
    assert r["tile_misses"] == 0


def test_tile_digest_depends_on_bits_and_shape() -> None:
    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    b[1, 2, 3] = True
    assert tile_digest(a) != tile_digest(b)
    assert tile_digest(a) == tile_digest(a.copy())
    assert tile_digest(np.zeros((2, 4, 8), bool)) != tile_digest(a)
    assert len({tile_digest(_pred()[s] != 0) for s in tile_slices(_pred().shape)}) > 1


def test_postprocess_and_score_scores_the_postprocessed_volume() -> None:
    prob = np.where(_pred() > 0, 0.7, 0.1).astype(np.float32)
    config = PostprocessConfig(threshold=0.5, min_component_size=2)
    r = postprocess_and_score(prob, _gt(), config)
    assert _without_cache_fields(r) == leaderboard_score(postprocess_volume(prob, config), _gt(), workers=0)
    assert r["score"] > score_prediction(_pred(), _gt())["score"]  # the dust voxel is gone


def test_score_folder_raw_and_postprocessed(tmp_path: Path) -> None:
    pred, gt, out = tmp_path / "pred", tmp_path / "gt", tmp_path / "pp"
    pred.mkdir()
    gt.mkdir()
    write_tiff(pred / "a.tif", _pred())
    write_tiff(gt / "a.tif", _gt())
    write_tiff(gt / "b.tif", _gt())  # ground truth without prediction: skipped with only_predicted
    config = PostprocessConfig(min_component_size=2)
    summary = score_folder(pred, gt, config, out, num_processes=0, only_predicted=True)
    assert summary["raw"] == evaluate_folders(pred, gt, 0, progress=False, only_predicted=True)
    assert np.array_equal(read_volume(out / "a.tif"), postprocess_volume(_pred(), config))
    assert summary["postprocessed"]["cases"]["a"] == leaderboard_score(postprocess_volume(_pred(), config), _gt(), 0)
    assert summary["postprocess_config"] == config.to_dict()
    assert set(score_folder(pred, gt, num_processes=0, only_predicted=True)) == {"raw"}


def test_score_folder_needs_out_dir_with_a_config(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    write_tiff(tmp_path / "p" / "a.tif", _pred())
    with pytest.raises(ValueError, match="needs out_dir"):
        score_folder(tmp_path / "p", tmp_path / "p", PostprocessConfig(), None, num_processes=0)
