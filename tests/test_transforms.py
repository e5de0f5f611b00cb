"""CPU target transforms: per-z-slice skeleton, boundary band, the batchgeneratorsv2 transform and the split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from helpers import scipy_band
from scipy import ndimage
from skimage.morphology import skeletonize

from nnunetv2_topo.transforms import (
    BAND_SCALE,
    TopoTargetsTransform,
    compute_band,
    compute_batch_target,
    compute_skeleton,
    signed_distance,
    split_topo_targets,
)


def bar_volume() -> np.ndarray:
    """Two z-slices with a 3-voxel-thick bar (rows 3-5, columns 2-11); slice 1 has columns >= 7 unlabeled."""
    a = np.zeros((2, 9, 14), np.int16)
    a[:, 3:6, 2:12] = 1
    a[1, :, 7:] = 2
    return a


def sheets_volume(shape=(12, 16, 18), seed=0) -> np.ndarray:
    """Wavy sheets crossing every z-slice, a block of ignore label and a background margin."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    lab = np.zeros(shape, np.int16)
    for k, c0 in enumerate((4, 10)):
        c = c0 + 1.5 * np.sin(x / 3.0 + k) + 0.05 * z
        lab[np.abs(y - c) < 1.3] = 1
    lab[:, :, 13:] = np.where(rng.random((shape[0], shape[1], shape[2] - 13)) < 0.7, 2, lab[:, :, 13:])
    return lab


# ---- skeleton -------------------------------------------------------------------------------------------------


def test_skeleton_is_centre_line_of_bar_per_slice():
    s = compute_skeleton(bar_volume(), ignore_label=2, tube=0)
    assert s.dtype == np.uint8
    assert s[0, 4, 2:10].all() and s[0, :3].sum() == 0 and s[0, 5:].sum() == 0
    # the unlabeled part (label 2) of slice 1 is background: the skeleton stops before column 7
    assert s[1, :, 6:].sum() == 0 and s[1, 4, 2:5].all()


def test_skeleton_is_2d_per_slice_and_never_on_ignore_or_padding():
    lab = sheets_volume()
    s = compute_skeleton(lab, ignore_label=2)
    fg = lab == 1
    expected = np.stack([skeletonize(fg[z]) for z in range(lab.shape[0])]).astype(np.uint8)
    np.testing.assert_array_equal(s, expected)
    assert not s[lab != 1].any()
    # label 2 and nnU-Net's padding value -1 are background, exactly like 0
    same = np.where(lab == 2, 0, lab)
    np.testing.assert_array_equal(s, compute_skeleton(same, ignore_label=2))
    padded = np.where(lab == 2, -1, lab)
    np.testing.assert_array_equal(s, compute_skeleton(padded, ignore_label=2))


def test_skeleton_of_planar_sheet_is_its_medial_plane():
    # a sheet perpendicular to the z-slices (the scroll case): its medial surface is the middle plane
    lab = np.zeros((6, 11, 12), np.int16)
    lab[:, 4:7, :] = 1
    s = compute_skeleton(lab, ignore_label=2)
    assert s[:, 5, :-2].all() and s[:, [3, 4, 6, 7], :].sum() <= 6  # at most one end corner per slice leaves it


def test_skeleton_tube_stays_inside_foreground():
    lab = bar_volume()
    tube = compute_skeleton(lab, ignore_label=2, tube=1)
    s = compute_skeleton(lab, ignore_label=2, tube=0)
    assert (tube >= s).all() and not tube[lab != 1].any()
    assert tube[0, 3:6, 3:9].all()  # one step of a cross around the centre line fills the 3-thick bar
    assert tube.sum() > s.sum()


def test_skeleton_empty_and_2d():
    assert compute_skeleton(np.zeros((3, 5, 5), np.int16)).sum() == 0
    assert compute_skeleton(np.full((3, 5, 5), 2, np.int16)).sum() == 0
    two_d = compute_skeleton(bar_volume()[0])
    np.testing.assert_array_equal(two_d, compute_skeleton(bar_volume())[0])


@pytest.mark.parametrize("tube", [-1, 1.5, "2"])
def test_skeleton_bad_tube(tube):
    with pytest.raises(ValueError, match="skeleton_tube"):
        compute_skeleton(bar_volume(), tube=tube)


def test_skeleton_rejects_batched_input():
    with pytest.raises(ValueError, match="one sample"):
        compute_skeleton(np.zeros((1, 1, 4, 4, 4), np.int16))


# ---- band -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("band", [(3.0, 5.0), (1.0, 2.5), (0.0, 7.0)])
def test_band_matches_scipy_edt(band):
    lab = sheets_volume()
    np.testing.assert_allclose(compute_band(lab, 2, band), scipy_band(lab, *band), atol=1e-6)


def test_signed_distance_exact_within_range_and_signed():
    rng = np.random.default_rng(3)
    lab = (ndimage.gaussian_filter(rng.random((14, 15, 16)), 2) > 0.5).astype(np.int16)
    phi = signed_distance(lab, 2, max_distance=4.0)
    fg = lab == 1
    ref = np.where(fg, -ndimage.distance_transform_edt(fg), ndimage.distance_transform_edt(~fg))
    near = np.abs(ref) <= 4.0
    np.testing.assert_allclose(phi[near], ref[near], atol=1e-5)
    assert np.isinf(phi[~near]).all() and (np.sign(phi[~near]) == np.sign(ref[~near])).all()


def test_band_ignores_label_2_and_handles_degenerate_patches():
    lab = sheets_volume()
    w = compute_band(lab, 2)
    assert (w[lab == 2] == 0).all() and w.max() == 1.0
    np.testing.assert_array_equal(compute_band(np.where(lab == 2, 0, lab), 2)[lab != 2], w[lab != 2])
    for const in (0, 1, 2):
        assert compute_band(np.full((4, 5, 6), const, np.int16), 2).sum() == 0


@pytest.mark.parametrize("band", [(5, 3), (3, 3), (-1, 2), (1, float("inf")), (1,), "ab"])
def test_band_bad_parameters(band):
    with pytest.raises(ValueError, match="boundary_band"):
        compute_band(bar_volume(), 2, band)


# ---- transform, deep supervision, split -----------------------------------------------------------------------


def test_transform_appends_channels_in_fixed_order():
    lab = sheets_volume()
    seg = torch.from_numpy(lab)[None]
    tr = TopoTargetsTransform(targets=["band", "skeleton"], ignore_label=2, skeleton_tube=0)
    out = tr(segmentation=seg.clone())["segmentation"]
    assert out.dtype == torch.int16 and out.shape == (3, *lab.shape)
    np.testing.assert_array_equal(out[0].numpy(), lab)
    np.testing.assert_array_equal(out[1].numpy(), compute_skeleton(lab, 2))
    np.testing.assert_array_equal(out[2].numpy(), np.rint(compute_band(lab, 2) * BAND_SCALE))
    only_band = TopoTargetsTransform(targets=["band"])(segmentation=seg.clone())["segmentation"]
    assert only_band.shape[0] == 2 and torch.equal(only_band[1], out[2])


DS_SCALES = [[1, 1, 1], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]


def _collated(pipeline, labs):
    per_sample = [pipeline(image=None, segmentation=torch.from_numpy(lab)[None])["segmentation"] for lab in labs]
    # collate like nnUNetDataLoader: one tensor per scale
    return [torch.stack([s[i] for s in per_sample]) for i in range(len(DS_SCALES))]


def test_pipeline_with_nnunet_deep_supervision_and_split():
    """The transform after nnU-Net's downsampling: the targets ride on the full-resolution scale only."""
    labs = [sheets_volume(seed=s) for s in (0, 1)]
    topo = TopoTargetsTransform(targets=("skeleton", "band"), ignore_label=2)
    batch = _collated(ComposeTransforms([DownsampleSegForDSTransform(ds_scales=DS_SCALES), topo]), labs)
    assert [tuple(b.shape[1:2]) for b in batch] == [(3,), (1,), (1,)]
    labels, extras = split_topo_targets(batch, ["band", "skeleton"])
    assert [tuple(lb.shape) for lb in labels] == [(2, 1, 12, 16, 18), (2, 1, 6, 8, 9), (2, 1, 3, 4, 4)]
    assert torch.equal(labels[0][:, 0], torch.from_numpy(np.stack(labs)))
    assert set(extras) == {"skeleton", "band"}
    for b, lab in enumerate(labs):
        np.testing.assert_array_equal(extras["skeleton"][b, 0].numpy(), compute_skeleton(lab, 2))
        np.testing.assert_allclose(extras["band"][b, 0].numpy(), compute_band(lab, 2), atol=0.005 + 1e-6)
    assert extras["band"].dtype == torch.float32 and extras["band"].shape == (2, 1, 12, 16, 18)
    # not a list: same structure back
    single, extras1 = split_topo_targets(batch[0], ["skeleton", "band"])
    assert torch.equal(single, labels[0]) and torch.equal(extras1["band"], extras["band"])

    # the earlier placement (before the downsampling, channels at every scale) splits to the same tensors
    before = _collated(ComposeTransforms([topo, DownsampleSegForDSTransform(ds_scales=DS_SCALES)]), labs)
    assert [tuple(b.shape[1:2]) for b in before] == [(3,), (3,), (3,)]
    labels_b, extras_b = split_topo_targets(before, ["skeleton", "band"])
    assert all(torch.equal(a, b) for a, b in zip(labels, labels_b))
    assert all(torch.equal(extras[k], extras_b[k]) for k in extras)


def test_transform_rejects_empty_scale_list():
    with pytest.raises(ValueError, match="empty deep-supervision"):
        TopoTargetsTransform(targets=["skeleton"])(segmentation=[])


def test_compute_batch_target_keeps_samples_apart():
    labs = np.stack([sheets_volume(seed=0), np.zeros((12, 16, 18), np.int16)])[:, None]
    skel = compute_batch_target(torch.from_numpy(labs), "skeleton", 2)
    assert skel.shape == (2, 1, 12, 16, 18) and skel[1].sum() == 0 and skel[0].sum() > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"targets": ["skeleton", "dist"]}, "unknown topology target"),
        ({"targets": []}, "at least one"),
        ({"targets": ["band", "band"]}, "must not repeat"),
        ({"targets": ["skeleton"], "skeleton_tube": -2}, "skeleton_tube"),
        ({"targets": ["band"], "boundary_band": (4, 2)}, "boundary_band"),
    ],
)
def test_transform_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TopoTargetsTransform(**kwargs)


def test_split_rejects_missing_channels():
    with pytest.raises(ValueError, match=r"expected \(B, 3, \.\.\.\)"):
        split_topo_targets(torch.zeros(2, 2, 4, 4, 4), ["skeleton", "band"])
    with pytest.raises(ValueError, match=r"target\[0\] has shape \(2, 2, 4, 4, 4\), expected \(B, 3, \.\.\.\)"):
        split_topo_targets([torch.zeros(2, 2, 4, 4, 4), torch.zeros(2, 1, 2, 2, 2)], ["skeleton", "band"])
    with pytest.raises(ValueError, match="unknown topology target"):
        split_topo_targets(torch.zeros(2, 2, 4, 4, 4), ["skel"])
