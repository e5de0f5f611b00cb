"""TopoScore pieces: tiling, Betti numbers, the engine's conventions and every shortcut checked against it."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import euler_number

from nnunetv2_topo.metrics.engine import engine_counts
from nnunetv2_topo.metrics.topo_score import (
    betti_numbers,
    euler_characteristic,
    finite_pairs,
    shortcut_counts,
    tile_slices,
    topo_score_from_counts,
)


def test_tile_slices_first_part_takes_extra_voxel() -> None:
    tiles = tile_slices((97, 50, 61))
    assert len(tiles) == 8
    assert tiles[0] == (slice(0, 49), slice(0, 25), slice(0, 31))
    assert tiles[-1] == (slice(49, 97), slice(25, 50), slice(31, 61))
    covered = np.zeros((97, 50, 61), int)
    for t in tiles:
        covered[t] += 1
    assert (covered == 1).all()


def _matched_h0_self(vol: np.ndarray) -> int:
    return int(engine_counts(vol, vol)[0, 0])


def test_engine_connectivity_probes() -> None:
    """Published probes: corner/edge contact = 2 components (one finite pair), face contact = 1; ring; shell."""
    for offset, want in (((1, 1, 1), 1), ((0, 1, 1), 1), ((0, 0, 1), 0)):
        v = np.zeros((6, 6, 6), bool)
        v[2, 2, 2] = True
        v[2 + offset[0], 2 + offset[1], 2 + offset[2]] = True
        assert _matched_h0_self(v) == want
    ring = np.zeros((3, 7, 7), bool)
    ring[1, 1:6, 1:6] = True
    ring[1, 2:5, 2:5] = False
    assert engine_counts(ring, ring)[1].tolist() == [1, 1, 1]
    shell = np.zeros((7, 7, 7), bool)
    shell[1:6, 1:6, 1:6] = True
    shell[2:5, 2:5, 2:5] = False
    assert engine_counts(shell, shell)[2].tolist() == [1, 1, 1]


def _random_blobs(rng: np.random.Generator, shape=(14, 13, 12), p: float = 0.35) -> np.ndarray:
    from scipy import ndimage

    noise = ndimage.uniform_filter(rng.random(shape), 3)
    return noise > np.quantile(noise, 1 - p)


def test_euler_characteristic_matches_skimage() -> None:
    rng = np.random.default_rng(0)
    for _ in range(10):
        x = rng.random((9, 10, 11)) < 0.5
        assert euler_characteristic(x) == euler_number(x, connectivity=1)


def test_betti_numbers_of_simple_shapes() -> None:
    shell = np.zeros((7, 7, 7), bool)
    shell[1:6, 1:6, 1:6] = True
    shell[2:5, 2:5, 2:5] = False
    assert betti_numbers(shell) == (1, 0, 1)
    torus = np.zeros((3, 8, 8), bool)
    torus[:, 1:7, 1:7] = True
    torus[:, 3:5, 3:5] = False
    assert betti_numbers(torus) == (1, 1, 0)
    open_box = shell.copy()
    open_box[3, 3, 0:2] = False  # a 1-voxel-wide channel from the cavity to the border: no cavity
    assert betti_numbers(open_box)[2] == 0
    assert betti_numbers(np.zeros((4, 4, 4), bool)) == (0, 0, 0)
    assert betti_numbers(np.ones((4, 4, 4), bool)) == (1, 0, 0)


def test_finite_pairs_equal_engine_on_random_tiles() -> None:
    rng = np.random.default_rng(1)
    for i in range(12):
        x = _random_blobs(rng, p=0.15 + 0.05 * (i % 6))
        c = engine_counts(x, x)
        assert c[:, 0].tolist() == c[:, 1].tolist() == c[:, 2].tolist()  # self-matching matches all
        assert finite_pairs(x).tolist() == c[:, 0].tolist()


def test_shortcuts_equal_engine() -> None:
    """Identical, empty-prediction, empty-GT and both-empty tiles: shortcut counts == engine counts."""
    rng = np.random.default_rng(2)
    empty = np.zeros((14, 13, 12), bool)
    for i in range(8):
        a = _random_blobs(rng, p=0.2 + 0.04 * i)
        for pred, gt in ((a, a), (empty, a), (a, empty), (empty, empty)):
            short = shortcut_counts(pred, gt)
            assert short is not None
            assert short.tolist() == engine_counts(pred, gt).tolist()
    b = _random_blobs(rng)
    c = b.copy()
    c[0, 0, 0] = ~c[0, 0, 0]
    assert shortcut_counts(b, c) is None  # differing non-empty tiles always go to the engine


def test_engine_input_order_is_prediction_then_gt() -> None:
    gt = np.zeros((10, 10, 10), bool)
    gt[3:5] = True
    pred = gt.copy()
    pred[8, 5, 5] = True  # an extra prediction component
    m, p, g = engine_counts(pred, gt)[0]
    assert (m, p, g) == (0, 1, 0)


@pytest.mark.parametrize(
    ("counts", "want"),
    [
        ([[0, 0, 0], [0, 0, 0], [0, 0, 0]], 1.0),
        ([[2, 2, 2], [0, 0, 0], [0, 0, 0]], 1.0),
        ([[0, 2, 0], [0, 0, 0], [0, 0, 0]], 0.2),
        ([[1, 2, 2], [0, 1, 0], [0, 0, 0]], (0.34 * 0.5 + 0.33 * (0.5 / 1.5)) / 0.67),
        ([[3, 4, 5], [1, 1, 2], [0, 0, 1]], (0.34 * 6 / 9 + 0.33 * 2 / 3 + 0.33 * 0) / 1.0),
    ],
)
def test_topo_score_from_counts(counts, want) -> None:
    assert topo_score_from_counts(np.array(counts)) == pytest.approx(want, abs=1e-12)


def test_needs_matching_is_exactly_where_no_shortcut_applies():
    from nnunetv2_topo.metrics.topo_score import needs_matching

    rng = np.random.default_rng(3)
    a = rng.random((6, 7, 5)) < 0.4
    b = rng.random((6, 7, 5)) < 0.4
    empty = np.zeros_like(a)
    for p, g in [(a, b), (a, a.copy()), (a, empty), (empty, b), (empty, empty), (a[:0], b[:0])]:
        assert needs_matching(p, g) == (shortcut_counts(p, g) is None and 0 not in p.shape)
