"""The post-processing steps against plain references, and the invariant that no step joins two components."""

from __future__ import annotations

import itertools

import cc3d
import numpy as np
import pytest
from scipy import ndimage

from nnunetv2_topo.postprocessing import (
    STEP_ORDER,
    WATERTIGHT_LUT,
    PostprocessConfig,
    add_without_joining,
    ellipsoid,
    fill_cavities,
    hysteresis,
    patch_holes,
    plug_holes_lut,
    plug_pinholes,
    postprocess_volume,
    remove_small_components,
    separated_closing,
)

FULL = np.ones((3, 3, 3), bool)


def _blobs(seed: int, shape=(24, 24, 24), sigma=1.2, level=0.62) -> np.ndarray:
    """Random blobby probability map: many near-touching components, holes, thin parts."""
    rng = np.random.default_rng(seed)
    p = ndimage.gaussian_filter(rng.random(shape), sigma)
    p = (p - p.min()) / (p.max() - p.min())
    return np.clip((p - level) * 4 + 0.5, 0, 1).astype(np.float32)


def _sheets(seed: int, shape=(24, 24, 24)) -> np.ndarray:
    """Two or three noisy sheets 1-3 voxels apart, with holes and dust: the hard case for joins."""
    rng = np.random.default_rng(seed)
    m = np.zeros(shape, bool)
    z = 4
    for _ in range(3):
        thick = int(rng.integers(1, 3))
        m[z : z + thick] = True
        z += thick + int(rng.integers(1, 4))
    m &= rng.random(shape) > 0.15
    m |= rng.random(shape) > 0.985
    return m


def _no_join(before: np.ndarray, after: np.ndarray) -> None:
    """Every component of ``after`` holds voxels of at most one component of ``before`` (26-connectivity)."""
    lb = cc3d.connected_components(before, connectivity=26)
    la = cc3d.connected_components(after, connectivity=26)
    both = before & after
    pairs = np.unique(np.stack([la[both], lb[both]]), axis=1)
    out_labels, counts = np.unique(pairs[0], return_counts=True)
    assert counts.max(initial=1) == 1, f"components joined: {out_labels[counts > 1]}"


def test_step_order_is_documented() -> None:
    assert STEP_ORDER == ("threshold", "remove_dust", "plug_holes", "patch_holes", "closing", "fill_holes")


def test_every_config_field_belongs_to_one_step() -> None:
    import dataclasses

    from nnunetv2_topo.postprocessing import STEP_FIELDS

    assert tuple(STEP_FIELDS) == STEP_ORDER
    owned = [f for fields in STEP_FIELDS.values() for f in fields]
    assert sorted(owned) == sorted(f.name for f in dataclasses.fields(PostprocessConfig))


@pytest.mark.parametrize("seed", range(4))
def test_hysteresis_matches_reference(seed: int) -> None:
    p = _blobs(seed)
    low, high = 0.5, 0.97
    labels, n = ndimage.label(p > low, FULL)
    want = np.zeros(p.shape, bool)
    for k in range(1, n + 1):
        if p[labels == k].max() > high:
            want |= labels == k
    got = hysteresis(p, low, high)
    assert want.any() and (want != (p > low)).any()  # a case where hysteresis matters
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="low < high"):
        hysteresis(p, 0.8, 0.4)


@pytest.mark.parametrize("seed", range(3))
def test_dust_removal_matches_reference(seed: int) -> None:
    m = _blobs(seed) > 0.5
    labels, n = ndimage.label(m, FULL)
    sizes = ndimage.sum(m, labels, range(1, n + 1))
    want = np.isin(labels, 1 + np.flatnonzero(sizes >= 20))
    np.testing.assert_array_equal(remove_small_components(m, 20), want)


def _six_connected_reference(cube: np.ndarray) -> bool:
    n_fg = int(cube.sum())
    return n_fg <= 1 or ndimage.label(cube)[1] == 1  # ndimage default structure = 6-connectivity


def test_watertight_lut_is_minimal_and_correct() -> None:
    for code in range(256):
        cube = np.array([code >> i & 1 for i in range(8)], bool).reshape(2, 2, 2)
        add = np.array([WATERTIGHT_LUT[code] >> i & 1 for i in range(8)], bool).reshape(2, 2, 2)
        assert not (add & cube).any()
        assert _six_connected_reference(cube | add)
        if _six_connected_reference(cube):
            assert not add.any()
        else:  # no smaller addition would do
            bg = [i for i in range(8) if not code >> i & 1]
            for c in itertools.combinations(bg, int(add.sum()) - 1):
                extra = np.zeros(8, bool)
                extra[list(c)] = True
                assert not _six_connected_reference(cube | extra.reshape(2, 2, 2))
    assert bin(WATERTIGHT_LUT[0b10000001]).count("1") == 2  # opposite corners need two voxels
    assert bin(WATERTIGHT_LUT[0b00001001]).count("1") == 1  # face diagonal needs one


def test_lut_makes_a_diagonal_sheet_watertight() -> None:
    m = np.zeros((20, 20, 20), bool)
    for k in range(20):
        m[k, :, k] = True  # a 45° plane: 26-connected, but 20 separate 6-connected lines
    assert cc3d.connected_components(m, connectivity=6, return_N=True)[1] == 20
    out = plug_holes_lut(m)
    assert cc3d.connected_components(out, connectivity=6, return_N=True)[1] == 1
    assert (out & ~m).sum() == 19 * 20  # one voxel per step and row: the fewest that seal it
    codes = sum(
        np.pad(out, 1)[a : a + 21, b : b + 21, c : c + 21].astype(int) << i
        for i, (a, b, c) in enumerate(itertools.product((0, 1), repeat=3))
    )
    assert not WATERTIGHT_LUT[codes].any()  # every 2x2x2 neighbourhood is now 6-connected
    flat = np.zeros((8, 10, 10), bool)
    flat[3] = True
    np.testing.assert_array_equal(plug_holes_lut(flat), flat)  # a flat sheet is left as it is


def test_axis_plug_and_lut_differ_on_a_flat_pinhole() -> None:
    m = np.zeros((8, 10, 10), bool)
    m[3] = True
    m[3, 5, 5] = False
    assert not plug_holes_lut(m)[3, 5, 5]  # its neighbourhoods are 6-connected already
    assert plug_pinholes(m)[3, 5, 5]


def test_ellipsoid_anisotropic() -> None:
    assert ellipsoid(0, 2).shape == (1, 5, 5) and ellipsoid(0, 2).sum() == 13
    assert ellipsoid(2, 0).shape == (5, 1, 1) and ellipsoid(2, 0).all()
    assert ellipsoid(1, 1).sum() == 7


def test_anisotropic_closing_closes_along_its_axes_only() -> None:
    m = np.zeros((12, 12, 12), bool)
    m[2:10, 5, 2:10] = True  # a vertical wall (normal along y)
    m[5, 5, 2:10] = False  # a 1-voxel slit across z, walls still joined nowhere else? joined at the edges:
    m[5, 5, 2] = True
    closed_z = separated_closing(m, (1, 0))
    closed_yx = separated_closing(m, (0, 1))
    assert closed_z[5, 5, 2:10].all()
    assert not closed_yx[5, 5, 3:9].any()
    with pytest.raises(ValueError, match="closing_radius"):
        PostprocessConfig(closing_radius=(1,))


def test_patch_holes_restores_a_flat_sheet_exactly() -> None:
    full = np.zeros((12, 20, 20), bool)
    full[5:7] = True
    holed = full.copy()
    holed[:, 6:10, 5:12] = False  # a 4 x 7 hole through both layers
    np.testing.assert_array_equal(patch_holes(holed, 28), full)
    np.testing.assert_array_equal(patch_holes(holed, 27), holed)  # a bigger hole than allowed: left open
    np.testing.assert_array_equal(patch_holes(holed, 0), holed)


def test_patch_holes_follows_a_sloped_sheet() -> None:
    from skimage.measure import euler_number

    shape = (24, 30, 30)
    full = np.zeros(shape, bool)
    yy, xx = np.mgrid[0:30, 0:30]
    height = np.rint(6 + 0.3 * xx).astype(int)
    for t in range(2):
        full[height + t, yy, xx] = True
    holed = full.copy()
    holed[:, 10:15, 12:18] = False  # a 5 x 6 hole through the sheet
    out = patch_holes(holed, 30)
    assert (out[:, 10:15, 12:18].sum(axis=0) == 2).all()  # every column of the hole: the sheet's thickness
    assert euler_number(out, 1) == euler_number(full, 1) == 1  # the hole is gone
    off = out & ~ndimage.binary_dilation(full)
    assert not off.any()  # every patched voxel lies within one voxel of the true sheet


def test_patch_rejected_when_the_euler_number_drops(monkeypatch) -> None:
    from nnunetv2_topo.postprocessing import height_map

    full = np.zeros((12, 20, 20), bool)
    full[5:7] = True
    holed = full.copy()
    holed[:, 6:9, 6:9] = False
    # pretend every patch adds a tunnel: the Euler number falls with each voxel added
    monkeypatch.setattr(height_map, "euler_number", lambda image, connectivity: -int(image.sum()))
    np.testing.assert_array_equal(patch_holes(holed, 100), holed)
    monkeypatch.setattr(height_map, "euler_number", lambda image, connectivity: int(image.sum()))
    np.testing.assert_array_equal(patch_holes(holed, 100), full)


def test_patch_keeps_euler_number() -> None:
    from skimage.measure import euler_number

    for seed in range(4):
        m = remove_small_components(_sheets(seed), 10)
        out = patch_holes(m, 50)
        assert euler_number(out, 1) >= euler_number(m, 1)  # the hole count never rises
        _no_join(m, out)


@pytest.mark.parametrize("seed", range(3))
def test_fill_cavities_matches_reference_on_one_component(seed: int) -> None:
    m = _largest(_blobs(seed, level=0.4) > 0.5)  # dense: one big component with cavities
    want = ndimage.binary_fill_holes(m, structure=FULL)  # background 26-connected to the border stays
    assert (want & ~m).any()
    np.testing.assert_array_equal(fill_cavities(m), want)


def _largest(m: np.ndarray) -> np.ndarray:
    labels = cc3d.connected_components(m, connectivity=26)
    return labels == np.bincount(labels.ravel())[1:].argmax() + 1


@pytest.mark.parametrize("radius", [(1, 1), (2, 1), (0, 2)])
@pytest.mark.parametrize("seed", range(2))
def test_closing_matches_reference_on_one_component(seed: int, radius) -> None:
    m = _largest(_blobs(seed) > 0.5)
    rz, ryx = radius
    pad = ((rz, rz), (ryx, ryx), (ryx, ryx))
    closed = ndimage.binary_closing(np.pad(m, pad), ellipsoid(rz, ryx))
    want = m | closed[rz : rz + m.shape[0], ryx : ryx + m.shape[1], ryx : ryx + m.shape[2]]
    assert (want & ~m).any()
    np.testing.assert_array_equal(separated_closing(m, radius), want)


@pytest.mark.parametrize("seed", range(3))
def test_lut_leaves_no_leaky_neighbourhood_in_one_component(seed: int) -> None:
    m = _largest(_blobs(seed) > 0.5)
    out = plug_holes_lut(m)
    codes = sum(
        np.pad(out, 1)[a : a + 25, b : b + 25, c : c + 25].astype(int) << i
        for i, (a, b, c) in enumerate(itertools.product((0, 1), repeat=3))
    )
    assert (out & ~m).any() and not WATERTIGHT_LUT[codes].any()


def test_axis_plug_matches_a_loop_reference() -> None:
    m = _sheets(0, (10, 10, 10))
    want = m.copy()
    for z, y, x in itertools.product(range(10), repeat=3):
        if m[z, y, x]:
            continue
        enclosed = 0
        for axis in range(3):
            lo, hi = [z, y, x], [z, y, x]
            lo[axis] -= 1
            hi[axis] += 1
            if min(lo) >= 0 and max(hi) < 10 and m[tuple(lo)] and m[tuple(hi)]:
                enclosed += 1
        want[z, y, x] = enclosed >= 2
    assert (want & ~m).any()
    # the plain rule, through the join guard
    np.testing.assert_array_equal(plug_pinholes(m), add_without_joining(m, want))


def test_fill_cavities_never_joins_nested_components() -> None:
    m = np.zeros((13, 13, 13), bool)
    m[1:12, 1:12, 1:12] = True
    m[2:11, 2:11, 2:11] = False  # a hollow box
    m[6, 6, 6] = True  # a voxel floating inside it
    np.testing.assert_array_equal(fill_cavities(m), m)  # filling would join the two
    m[6, 6, 6] = False
    assert fill_cavities(m)[2:11, 2:11, 2:11].all()


def test_add_without_joining_keeps_single_component_patches() -> None:
    m = np.zeros((5, 5, 12), bool)
    m[2, 2, 0:4] = True
    m[2, 2, 6:12] = True
    added = np.zeros_like(m)
    added[2, 2, 4:6] = True  # a bridge: rejected
    added[0, 0, 11] = True  # touches nothing: kept
    added[2, 3, 8] = True  # grows one component: kept
    out = add_without_joining(m, added)
    assert not out[2, 2, 4:6].any() and out[0, 0, 11] and out[2, 3, 8]


STEPS = {
    "plug_lut": plug_holes_lut,
    "plug_axis": plug_pinholes,
    "closing_1_1": lambda m: separated_closing(m, (1, 1)),
    "closing_2_1": lambda m: separated_closing(m, (2, 1)),
    "closing_3_3": lambda m: separated_closing(m, (3, 3)),
    "patch": lambda m: patch_holes(m, 40),
    "fill": fill_cavities,
    "all": lambda m: postprocess_volume(
        m,
        PostprocessConfig(plug_method="both", closing_radius=(2, 2), patch_holes=40, fill_holes=True),
    ).astype(bool),
}


@pytest.mark.parametrize("step", sorted(STEPS))
@pytest.mark.parametrize("seed", range(6))
def test_no_step_joins_26_separated_components(step: str, seed: int) -> None:
    for m in (_blobs(seed) > 0.5, _sheets(seed)):
        out = STEPS[step](m)
        assert (out >= m).all() or step == "all"
        _no_join(m, out)


def test_timings_name_every_step_run_in_order() -> None:
    """``postprocess_volume(..., timings=)`` reports each configured step once, in STEP_ORDER (the cost benchmark's
    numbers come from here)."""
    rng = np.random.default_rng(0)
    p = rng.random((12, 14, 16)).astype(np.float32)
    config = PostprocessConfig(
        threshold=0.5, hysteresis_high=0.9, plug_holes=True, plug_method="both", closing_radius=(1, 1), fill_holes=True
    )
    timings: list[tuple[str, float]] = []
    out = postprocess_volume(p, config, timings=timings)
    assert [name for name, _ in timings] == [
        "threshold (hysteresis)",
        "remove_dust",
        "plug_holes (both)",
        "patch_holes",
        "closing",
        "fill_holes",
    ]
    assert all(s >= 0 for _, s in timings)
    np.testing.assert_array_equal(out, postprocess_volume(p, config))
    timings.clear()
    postprocess_volume(p, PostprocessConfig(patch_holes=0), timings=timings)
    assert [name for name, _ in timings] == ["threshold", "remove_dust"]
