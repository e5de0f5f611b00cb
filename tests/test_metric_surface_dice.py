"""SurfaceDice: the surfel-area table re-derived from marching cubes, the ball dilation, agreement with EDT."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from nnunetv2_topo.metrics.surface_dice import SURFEL_AREA, ball_offsets, dilate_ball, neighbour_codes, surface_dice
from nnunetv2_topo.testing.metric_reference import surface_dice_reference


def _cube(code: int) -> np.ndarray:
    v = np.zeros((2, 2, 2))
    for a in range(2):
        for b in range(2):
            for c in range(2):
                if code >> (7 - (4 * a + 2 * b + c)) & 1:
                    v[a, b, c] = 1.0
    return v


def test_surfel_table_is_lorensen_marching_cubes_of_minority_side() -> None:
    from skimage.measure import marching_cubes, mesh_surface_area

    for code in range(1, 255):
        minority = code if bin(code).count("1") <= 4 else 255 - code
        verts, faces, _, _ = marching_cubes(_cube(minority), 0.5, method="lorensen", allow_degenerate=True)
        assert SURFEL_AREA[code] == pytest.approx(mesh_surface_area(verts, faces), abs=1e-6), code
    assert SURFEL_AREA[0] == SURFEL_AREA[255] == 0.0


def test_surfel_table_known_values() -> None:
    assert SURFEL_AREA[1] == pytest.approx(math.sqrt(3) / 8)  # one corner
    assert SURFEL_AREA[0b00001111] == pytest.approx(1.0)  # flat face
    assert SURFEL_AREA[0b00000011] == pytest.approx(math.sqrt(2) / 2)  # an edge pair: a diagonal quad
    assert SURFEL_AREA[0b00000110] == pytest.approx(math.sqrt(3) / 4)  # face diagonal: two separate corners
    np.testing.assert_allclose(SURFEL_AREA, SURFEL_AREA[::-1])  # complement symmetric


def test_neighbour_codes_of_single_voxel() -> None:
    codes = neighbour_codes(np.ones((1, 1, 1), bool))
    assert codes.shape == (2, 2, 2)
    # the corner (0,0,0) sees the voxel at offset (0,0,0) -> bit for (a,b,c) = (1,1,1) = 1
    assert codes[0, 0, 0] == 1 and codes[1, 1, 1] == 128


@pytest.mark.parametrize("tau", [0.5, 1.0, 1.5, 2.0, 3.0])
def test_dilate_ball_equals_distance_threshold(tau: float) -> None:
    rng = np.random.default_rng(0)
    m = rng.random((15, 16, 17)) < 0.01
    m[0, 0, 0] = True
    want = ndimage.distance_transform_edt(~m) <= tau
    np.testing.assert_array_equal(dilate_ball(m, tau), want)
    assert len(ball_offsets(2.0)) == 33


def test_surface_dice_matches_distance_transform_reference() -> None:
    rng = np.random.default_rng(4)
    for _ in range(6):
        a = ndimage.uniform_filter(rng.random((20, 22, 18)), 3) > 0.55
        b = ndimage.uniform_filter(rng.random((20, 22, 18)), 3) > 0.55
        assert surface_dice(a, b) == pytest.approx(surface_dice_reference(a, b), abs=1e-12)
        assert surface_dice(a, b, 1.0) == pytest.approx(surface_dice_reference(a, b, 1.0), abs=1e-12)


def test_surface_dice_edge_cases() -> None:
    z = np.zeros((5, 5, 5), bool)
    one = z.copy()
    one[2, 2, 2] = True
    assert surface_dice(z, z) == 1.0
    assert surface_dice(one, z) == 0.0 and surface_dice(z, one) == 0.0
    assert surface_dice(one, one) == 1.0
    touching_border = np.ones((4, 4, 4), bool)  # foreground up to the volume border still has a surface
    assert surface_dice(touching_border, touching_border) == 1.0
    with pytest.raises(ValueError, match="equal shape"):
        surface_dice(z, np.zeros((5, 5, 6), bool))
