"""``nnunetv2_topo.testing.probability_maps``: each failure mode of the simulated maps, alone, does what it says."""

from __future__ import annotations

from dataclasses import replace

import cc3d
import numpy as np
import pytest
from scipy import ndimage

from nnunetv2_topo.synth import synthesize_case
from nnunetv2_topo.testing.probability_maps import CALIBRATIONS, FailureModes, simulate_probability, simulated_case

SIZE = 32
# every failure mode off: sheets at exactly 0.9, background 0
QUIET = FailureModes(
    sheet_level=(0.9, 0.9), confidence_wobble=0.0, under_confident_fraction=0.0, halo_level=(0.0, 0.0),
    bridge_level=(0.0, 0.0), holes_per_voxel_of_side=0.0, pinholes_per_voxel_of_side=0.0,
    dust_per_voxel_of_side=0.0, noise=0.0,
)  # fmt: skip


@pytest.fixture(scope="module")
def case():
    return synthesize_case((SIZE,) * 3, np.random.default_rng(3))


def simulate(case, modes: FailureModes, seed: int = 0) -> np.ndarray:
    return simulate_probability(case.sheets, case.sheet_axis, np.random.default_rng(seed), modes)


def test_quiet_map_is_the_sheets(case) -> None:
    p = simulate(case, QUIET)
    assert p.dtype == np.float32 and p.shape == case.sheets.shape
    np.testing.assert_array_equal(p, np.where(case.sheets > 0, np.float32(0.9), np.float32(0)))


def test_under_confident_sheets_sit_at_their_level(case) -> None:
    p = simulate(case, replace(QUIET, under_confident_fraction=1.0, under_confident_level=(0.4, 0.4)))
    assert np.allclose(p[case.sheets > 0], 0.4) and not p[case.sheets == 0].any()


def test_halo_thickens_the_sheets_by_one_voxel_below_the_sheet_level(case) -> None:
    fg = case.sheets > 0
    p = simulate(case, replace(QUIET, halo_level=(0.2, 0.2)))
    halo = ndimage.binary_dilation(fg) & ~fg
    assert np.all((p[halo] >= 0.1) & (p[halo] <= 0.3)) and not p[~fg & ~halo].any()


def test_bridges_lie_between_two_different_sheets(case) -> None:
    fg = case.sheets > 0
    p = simulate(case, replace(QUIET, bridge_level=(0.6, 0.6)))
    bridge = (p > 0) & ~fg
    assert bridge.any()
    for z, y, x in np.argwhere(bridge):
        near = case.sheets[max(z - 2, 0) : z + 3, max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3]
        assert len(np.unique(near[near > 0])) >= 2


def test_pinholes_and_holes_are_columns_along_the_stacking_axis(case) -> None:
    fg = case.sheets > 0
    for modes in (replace(QUIET, pinholes_per_voxel_of_side=0.5), replace(QUIET, holes_per_voxel_of_side=0.25)):
        p = simulate(case, modes)
        low = fg & (p < 0.9 * 0.51)
        assert low.any() and not p[~fg].any()
        assert np.all(p[fg & ~low] == np.float32(0.9))
        # a pinhole/hole goes through the sheet: its whole run along the stacking axis is low
        moved = np.moveaxis(low, case.sheet_axis, 0)
        sheet = np.moveaxis(case.sheets, case.sheet_axis, 0)
        for y, x in zip(*np.nonzero(moved.any(axis=0)), strict=True):
            k = sheet[moved[:, y, x], y, x][0]
            assert moved[sheet[:, y, x] == k, y, x].all()


def test_dust_is_confident_and_away_from_the_sheets(case) -> None:
    fg = case.sheets > 0
    p = simulate(case, replace(QUIET, dust_per_voxel_of_side=0.5))
    dust = (p > 0) & ~fg
    assert dust.any() and p[dust].min() >= 0.55
    assert not (dust & ndimage.binary_dilation(fg, iterations=3)).any()
    sizes = np.bincount(cc3d.connected_components(dust, connectivity=26).ravel())[1:]
    assert sizes.max() <= 2 * 8**3  # blobs of at most 8³ (two may touch)


def test_calibration_shifts_the_logit(case) -> None:
    base = simulate(case, replace(QUIET, noise=0.05, halo_level=(0.2, 0.2)))
    shifted = simulate(case, replace(QUIET, noise=0.05, halo_level=(0.2, 0.2), calibration_shift=1.5))
    inside = (base > 1e-3) & (base < 1 - 1e-3)
    logit = lambda q: np.log(q) - np.log1p(-q)  # noqa: E731
    np.testing.assert_allclose(logit(shifted[inside].astype(float)) - logit(base[inside].astype(float)), 1.5, atol=1e-3)


def test_simulated_case_is_seeded_and_the_label_ignores_the_calibration() -> None:
    p1, l1 = simulated_case(SIZE, (0, 1))
    p2, l2 = simulated_case(SIZE, (0, 1), "nominal")
    p3, l3 = simulated_case(SIZE, (0, 1), "over-confident")
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(l1, l3)
    assert p1.min() >= 0 and p1.max() <= 1 and set(np.unique(l1)) <= {0, 1, 2}
    assert p3.mean() > p1.mean()
    assert set(CALIBRATIONS) == {"nominal", "over-confident", "under-confident"}
    with pytest.raises(ValueError, match="unknown calibration 'hot'; known: nominal, over-confident"):
        simulated_case(SIZE, 0, "hot")


def test_simulated_models_share_the_sheets_with_independent_errors() -> None:
    from nnunetv2_topo.testing.probability_maps import simulated_models

    (good, other, weak), label = simulated_models(SIZE, (4, 1), ["good", "good-other", "weak"])
    maps_again, label_again = simulated_models(SIZE, (4, 1), ["good", "good-other", "weak"])
    assert np.array_equal(label, label_again) and all(
        np.array_equal(a, b) for a, b in zip(maps_again, (good, other, weak))
    )
    assert np.array_equal(label, simulated_models(SIZE, (4, 1), ["nominal"])[1])  # the label ignores the models
    # independent draws: two models of the same failure modes differ (different holes, dust, noise)
    twin, _ = simulated_models(SIZE, (4, 1), ["good", "good"])
    assert not np.array_equal(twin[0], twin[1]) and np.array_equal(twin[0], good)
    fg = label == 1
    assert weak[fg].mean() < good[fg].mean()  # the weak model is less sure of the true sheets
    with pytest.raises(ValueError, match="unknown model 'best'; known: nominal"):
        simulated_models(SIZE, 0, ["best"])
