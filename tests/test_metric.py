"""The leaderboard metric: the published reference table, edge cases, invariances, agreement with the reference."""

from __future__ import annotations

import numpy as np
import pytest

from nnunetv2_topo.metrics import MetricInputError, leaderboard_score
from nnunetv2_topo.testing.metric_reference import leaderboard_score_reference

KEYS = ("score", "topo", "surface_dice", "voi_score")


def two_sheets(shape=(64, 64, 64)) -> np.ndarray:
    gt = np.zeros(shape, np.uint8)
    gt[20:22] = 1
    gt[40:42] = 1
    return gt


def _case(name: str) -> np.ndarray:
    gt = two_sheets()
    pr = gt.copy()
    if name == "equal":
        pass
    elif name == "bridge":
        pr[22:40, 30:32, 30:32] = 1
    elif name == "cut":
        pr[20:22, :, 31:33] = 0
    elif name == "hole":
        pr[20:22, 10:14, 10:14] = 0
    elif name == "dust":
        pr[10, 10, 10] = pr[50, 50, 50] = 1
    elif name == "roll1":
        pr = np.roll(gt, 1, axis=0)
    elif name == "roll3":
        pr = np.roll(gt, 3, axis=0)
    elif name == "thick":
        pr = np.zeros_like(gt)
        pr[19:23] = 1
        pr[39:43] = 1
    elif name == "empty":
        pr = np.zeros_like(gt)
    return pr


# Published values (competition code, 4 decimals); extra keys checked where the table gives them.
TABLE = {
    "equal": dict(score=1.0, topo=1.0, surface_dice=1.0, voi_score=1.0),
    "bridge": dict(score=0.9161, topo=1.0, surface_dice=0.9974, voi_score=0.7629, voi_merge=1.036),
    "cut": dict(score=0.9478, topo=1.0, surface_dice=1.0, voi_score=0.8508, voi_split=0.585),
    "hole": dict(score=0.7981, topo=0.3333, surface_dice=1.0, voi_score=0.9945),
    "dust": dict(score=0.7600, topo=0.2000, surface_dice=0.9999, voi_score=1.0),
    "roll1": dict(score=0.8688, topo=1.0, surface_dice=1.0, voi_score=0.6250),
    "roll3": dict(score=0.7494, topo=1.0, surface_dice=0.5149, voi_score=0.7692),
    "thick": dict(score=0.8914, topo=1.0, surface_dice=1.0, voi_score=0.6897),
    "empty": dict(score=0.5692, topo=1.0, surface_dice=0.0, voi_score=0.7692),
}

# Values that follow exactly from the definition (checked to 1e-9).
EXACT = {
    "hole": dict(topo=1 / 3),  # one unmatched prediction tunnel: 0.5 / 1.5
    "dust": dict(topo=0.2),  # two unmatched components: 0.5 / 2.5
    "roll1": dict(voi_score=1 / 1.6, score=0.3 + 0.35 + 0.35 / 1.6),  # VOI = 2 bits
    "roll3": dict(voi_score=1 / 1.3),
    "thick": dict(voi_score=1 / 1.45),
    "empty": dict(voi_score=1 / 1.3, score=0.3 + 0.35 / 1.3),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_reference_table(name: str) -> None:
    r = leaderboard_score(_case(name), two_sheets(), workers=0)
    for key, want in TABLE[name].items():
        digits = 3 if key in ("voi_split", "voi_merge") else 4
        assert abs(r[key] - want) <= 0.5 * 10**-digits + 1e-6, (key, r[key], want)
    for key, want in EXACT.get(name, {}).items():
        assert r[key] == pytest.approx(want, abs=1e-9), key
    assert set(r) == {"score", "topo", "surface_dice", "voi_score", "voi_split", "voi_merge", "counts"}
    assert set(r["counts"]) == {"0", "1", "2"}


@pytest.mark.parametrize("name", ["bridge", "cut", "hole", "dust", "roll3"])
def test_matches_reference_implementation(name: str) -> None:
    """The fast path (shortcuts, vectorised SD/VOI) equals the straightforward one to 1e-9, counts exactly."""
    fast = leaderboard_score(_case(name), two_sheets(), workers=0)
    slow = leaderboard_score_reference(_case(name), two_sheets())
    assert fast["counts"] == slow["counts"]
    for key in ("score", "topo", "surface_dice", "voi_score", "voi_split", "voi_merge"):
        assert fast[key] == pytest.approx(slow[key], abs=1e-9), key


def test_hole_and_dust_counts() -> None:
    assert leaderboard_score(_case("hole"), two_sheets(), workers=0)["counts"]["1"] == [0, 1, 0]
    assert leaderboard_score(_case("dust"), two_sheets(), workers=0)["counts"]["0"] == [0, 2, 0]


def test_both_empty_scores_one() -> None:
    z = np.zeros((16, 16, 16), np.uint8)
    r = leaderboard_score(z, z, workers=0)
    assert r["score"] == pytest.approx(1.0, abs=1e-12)
    assert (r["topo"], r["surface_dice"], r["voi_score"]) == (1.0, 1.0, 1.0)


def test_empty_ground_truth_with_prediction() -> None:
    pr = np.zeros((20, 20, 20), np.uint8)
    pr[5:7] = 1
    pr[2, 3, 3] = 1  # a second component in the same tile as the sheet
    r = leaderboard_score(pr, np.zeros_like(pr), workers=0)
    assert r["surface_dice"] == 0.0
    assert r["counts"]["0"] == [0, 1, 0]  # one finite H0 pair: tile (0, 0, 0) holds two components
    assert r["topo"] == pytest.approx(0.5 / 1.5)


def test_ignore_region_cases() -> None:
    gt = two_sheets()
    gt[:, :, 48:] = 2
    pr = two_sheets()
    pr[:, :, 48:] = 1  # prediction all foreground inside ignore
    assert leaderboard_score(pr, gt, workers=0)["score"] == pytest.approx(1.0, abs=1e-12)
    # all-ignore ground truth: nothing left to compare, any prediction is perfect
    all_ignore = np.full((16, 16, 16), 2, np.uint8)
    noisy = np.random.default_rng(0).integers(0, 2, all_ignore.shape).astype(np.uint8)
    assert leaderboard_score(noisy, all_ignore, workers=0)["score"] == pytest.approx(1.0, abs=1e-12)


def test_non_binary_values() -> None:
    gt = two_sheets()
    assert leaderboard_score(gt * 255, gt, workers=0)["score"] == pytest.approx(1.0, abs=1e-12)
    gray = (gt * np.random.default_rng(1).integers(1, 256, gt.shape)).astype(np.uint8)
    assert leaderboard_score(gray, gt, workers=0)["score"] == pytest.approx(1.0, abs=1e-12)
    as_float = gt.astype(np.float32) * 0.7
    as_float[0, 0, 0] = np.nan  # NaN counts as background
    assert leaderboard_score(as_float, gt, workers=0)["score"] == pytest.approx(1.0, abs=1e-12)


def test_odd_shape_unequal_tiles() -> None:
    rng = np.random.default_rng(3)
    gt = np.zeros((97, 50, 61), np.uint8)
    gt[30:32] = 1
    gt[70:73, 5:45] = 1
    gt[:, :, 55:] = 2
    pr = (gt == 1).astype(np.uint8)
    pr[30:32, 20:24, 20:24] = 0  # hole
    pr[rng.integers(0, 97, 20), rng.integers(0, 50, 20), rng.integers(0, 61, 20)] = 1  # dust
    pr[48:50, 10, 10] = 1  # on the tile cut (49 | 48)
    fast = leaderboard_score(pr, gt, workers=0)
    slow = leaderboard_score_reference(pr, gt)
    assert fast["counts"] == slow["counts"]
    for key in KEYS:
        assert fast[key] == pytest.approx(slow[key], abs=1e-9)
    assert 0.0 < fast["score"] < 1.0


def test_invariant_to_prediction_in_ignore_and_label_permutation() -> None:
    rng = np.random.default_rng(7)
    gt = two_sheets((32, 32, 32))
    gt[:, 20:, :] = 2
    pr = (gt == 1).astype(np.int32)
    pr[25:27, :10] = 1
    pr[5, 5, 5] = 1
    base = leaderboard_score(pr, gt, workers=0)
    for _ in range(3):
        changed = pr.copy()
        ignore = gt == 2
        changed[ignore] = rng.integers(0, 300, int(ignore.sum()))
        # relabel components with arbitrary non-zero labels
        import cc3d

        labels = cc3d.connected_components(pr > 0, connectivity=26)
        perm = rng.permutation(np.arange(1, labels.max() + 1)) * 7 + 3
        relabelled = np.where(labels > 0, perm[np.maximum(labels, 1) - 1], 0)
        relabelled[ignore] = changed[ignore]
        for variant in (changed, relabelled):
            r = leaderboard_score(variant, gt, workers=0)
            for key in (*KEYS, "voi_split", "voi_merge"):
                assert r[key] == pytest.approx(base[key], abs=1e-12)
            assert r["counts"] == base["counts"]


def test_score_clipped_and_in_range() -> None:
    rng = np.random.default_rng(5)
    gt = two_sheets((24, 24, 24))
    pr = rng.integers(0, 2, gt.shape).astype(np.uint8)
    r = leaderboard_score(pr, gt, workers=0)
    assert 0.0 <= r["score"] <= 1.0


@pytest.mark.parametrize(
    ("pred_shape", "gt_shape", "match"),
    [((8, 8, 8), (8, 8, 9), "shape mismatch"), ((8, 8), (8, 8), "3-D"), ((2, 8, 8, 8), (2, 8, 8, 8), "3-D")],
)
def test_bad_inputs(pred_shape, gt_shape, match) -> None:
    with pytest.raises(MetricInputError, match=match):
        leaderboard_score(np.zeros(pred_shape), np.zeros(gt_shape), workers=0)


def test_worker_pool_gives_same_result() -> None:
    pr, gt = _case("hole"), two_sheets()
    pr[50:52, 5:60, 5:60] = 1  # a third sheet: engine work in several tiles
    assert leaderboard_score(pr, gt, workers=2) == leaderboard_score(pr, gt, workers=0)


def test_one_result_layout_for_every_scorer() -> None:
    """leaderboard_score, the in-process scorer of post-processing and the score table share one set of fields."""
    from nnunetv2_topo.evaluation.case_scoring import score_prediction
    from nnunetv2_topo.evaluation.score_table import format_table
    from nnunetv2_topo.metrics.score_fields import SCORE_FIELDS, WEIGHTS, combine_score, score_result

    rng = np.random.default_rng(3)
    gt = (rng.random((10, 12, 9)) > 0.6).astype(np.uint8)
    pred = (rng.random((10, 12, 9)) > 0.6).astype(np.uint8)
    exact = leaderboard_score(pred, gt, workers=0)
    inproc = score_prediction(pred, gt)
    assert set(exact) == set(score_result(0, 0, 0, 0, 0, [[0, 0, 0]] * 3)) == set(inproc) - {"tile_hits", "tile_misses"}
    assert {k: inproc[k] for k in exact} == exact
    assert set(SCORE_FIELDS) == {"score", *WEIGHTS} and combine_score(1.0, 1.0, 1.0) == pytest.approx(1.0)
    assert combine_score(0.5, 0.0, 1.0) == pytest.approx(0.30 * 0.5 + 0.35)
    table = format_table({"cases": {"c1": exact}, "mean": exact}).splitlines()
    assert table[0].split() == ["case", "score", "topo", "SD", "VOI", "split", "merge"]
    assert table[2].split()[1] == f"{exact['score']:.4f}"


def test_tile_arithmetic() -> None:
    from nnunetv2_topo.metrics.topo_score import (
        COMPETITION_TILE_VOXELS,
        TILES_PER_VOLUME,
        largest_tile_voxels,
        tile_slices,
    )

    assert len(tile_slices((5, 6, 7))) == TILES_PER_VOLUME == 8
    assert largest_tile_voxels((320, 320, 320)) == COMPETITION_TILE_VOXELS == 160**3
    first = tile_slices((97, 10, 3))[0]
    assert largest_tile_voxels((97, 10, 3)) == np.prod([s.stop - s.start for s in first]) == 49 * 5 * 2
