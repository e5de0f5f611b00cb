"""Probability inputs: nnU-Net .npz, float/integer TIFF and NIfTI, folders, model folders, pairing and memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile

from nnunetv2_topo.io import is_volume_file, write_tiff
from nnunetv2_topo.postprocessing.probabilities import (
    ProbabilityError,
    fuse_probability_files,
    index_cases,
    paired_cases,
    read_probability,
)

SHAPE = (6, 7, 8)


def _npz(path: Path, p1: np.ndarray, dtype=np.float32) -> Path:
    np.savez_compressed(path, probabilities=np.stack([1 - p1, p1]).astype(dtype))
    return path


def _p(seed: int = 0, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_npz_foreground_is_channel_one(tmp_path) -> None:
    p = _p()
    np.testing.assert_array_equal(read_probability(_npz(tmp_path / "a.npz", p)), p)
    half = read_probability(_npz(tmp_path / "h.npz", p, np.float16))
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, p, atol=1e-3)
    np.savez(tmp_path / "plain.npz", probabilities=np.stack([1 - p, p]))  # uncompressed works too
    np.testing.assert_array_equal(read_probability(tmp_path / "plain.npz"), p)


def test_float_tiff_and_nifti_and_integer(tmp_path) -> None:
    import SimpleITK as sitk

    p = _p()
    tifffile.imwrite(tmp_path / "f.tif", p)
    np.testing.assert_array_equal(read_probability(tmp_path / "f.tif"), p)
    sitk.WriteImage(sitk.GetImageFromArray(p), str(tmp_path / "f.nii.gz"))
    np.testing.assert_array_equal(read_probability(tmp_path / "f.nii.gz"), p)
    seg = np.zeros(SHAPE, np.uint8)
    seg[2] = 255
    write_tiff(tmp_path / "s.tif", seg)
    got = read_probability(tmp_path / "s.tif")
    assert got.dtype == np.float32 and got.sum() == 7 * 8 and got[2].min() == 1.0


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: np.stack([1 - p, p]) * np.nan, "NaN"),
        (lambda p: np.stack([1 - p, p + 1]), r"outside \[0, 1\]"),
        (lambda p: np.stack([1 - p, p, p]), "3 channel"),
        (lambda p: p, r"expected \(C, Z, Y, X\)"),
        (lambda p: (np.stack([1 - p, p]) > 0.5).astype(np.uint8), "expected float"),
    ],
)
def test_bad_npz(tmp_path, make, match) -> None:
    np.savez_compressed(tmp_path / "bad.npz", probabilities=make(_p()))
    with pytest.raises(ProbabilityError, match=f"bad.npz.*{match}"):
        read_probability(tmp_path / "bad.npz")


def test_bad_files(tmp_path) -> None:
    np.savez_compressed(tmp_path / "k.npz", logits=np.zeros((2, *SHAPE), np.float32))
    with pytest.raises(ProbabilityError, match="k.npz: no key 'probabilities'.*keys: logits"):
        read_probability(tmp_path / "k.npz")
    (tmp_path / "z.npz").write_bytes(b"not a zip")
    with pytest.raises(ProbabilityError, match="z.npz: unreadable"):
        read_probability(tmp_path / "z.npz")
    tifffile.imwrite(tmp_path / "logit.tif", _p() * 20 - 10)
    with pytest.raises(ProbabilityError, match=r"logit.tif: values span .* outside \[0, 1\]"):
        read_probability(tmp_path / "logit.tif")
    with pytest.raises(ProbabilityError, match="no such file"):
        read_probability(tmp_path / "none.npz")


def test_index_prefers_npz_and_ignores_pkl_json(tmp_path) -> None:
    # what nnUNetv2_predict --save_probabilities writes: <case>.tif, .npz, .pkl, and a spacing .json
    for cid in ("c1", "c2"):
        write_tiff(tmp_path / f"{cid}.tif", np.zeros(SHAPE, np.uint8))
        _npz(tmp_path / f"{cid}.npz", _p())
        (tmp_path / f"{cid}.pkl").write_bytes(b"x")
        (tmp_path / f"{cid}.json").write_text("{}")
    write_tiff(tmp_path / "c3.tif", np.zeros(SHAPE, np.uint8))
    (tmp_path / "plans.json").write_text("{}")
    got = index_cases(tmp_path)
    assert {k: v.name for k, v in got.items()} == {"c1": "c1.npz", "c2": "c2.npz", "c3": "c3.tif"}
    write_tiff(tmp_path / "c3.tiff", np.zeros(SHAPE, np.uint8))
    with pytest.raises(ProbabilityError, match="several files for case c3"):
        index_cases(tmp_path)


def test_evaluate_ignores_npz_and_pkl(tmp_path) -> None:
    from nnunetv2_topo.evaluation.folder_scoring import pair_files

    assert is_volume_file("c1.tif") and is_volume_file("c1.nii.gz")
    assert not is_volume_file("c1.npz") and not is_volume_file("c1.pkl") and not is_volume_file("c1.json")
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    write_tiff(gt / "c1.tif", np.zeros(SHAPE, np.uint8))
    write_tiff(pred / "c1.tif", np.zeros(SHAPE, np.uint8))  # what nnUNetv2_predict --save_probabilities writes
    _npz(pred / "c1.npz", _p())
    (pred / "c1.pkl").write_bytes(b"")
    (pred / "c1.json").write_text("{}")
    pairs = pair_files(pred, gt)
    assert len(pairs) == 1 and Path(pairs[0][1]).name == "c1.tif"  # the binary .tif, no duplicate case


def test_model_folder_pools_fold_validation(tmp_path) -> None:
    model = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    for fold, cases in ((0, ("a", "b")), (1, ("c",))):
        val = model / f"fold_{fold}" / "validation"
        val.mkdir(parents=True)
        for cid in cases:
            _npz(val / f"{cid}.npz", _p())
            write_tiff(val / f"{cid}.tif", np.zeros(SHAPE, np.uint8))
    (model / "plans.json").write_text("{}")
    got = index_cases(model)
    assert sorted(got) == ["a", "b", "c"] and got["c"].parent.parent.name == "fold_1"
    _npz(model / "fold_1" / "validation" / "a.npz", _p())
    with pytest.raises(ProbabilityError, match="case a is in two folds"):
        index_cases(model)
    empty = tmp_path / "empty_model"
    (empty / "fold_0" / "validation").mkdir(parents=True)
    with pytest.raises(ProbabilityError, match="--val --npz"):
        index_cases(empty)


def test_paired_cases(tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for cid in ("1", "2", "3"):
        _npz(a / f"{cid}.npz", _p())
    for cid in ("2", "3"):
        tifffile.imwrite(b / f"{cid}.tif", _p())
    with pytest.raises(ProbabilityError, match=f"{b} lacks case.*1"):
        paired_cases([a, b])
    tifffile.imwrite(b / "1.tif", _p())
    got = paired_cases([a, b])
    assert list(got) == ["1", "2", "3"] and got["2"] == [a / "2.npz", b / "2.tif"]
    with pytest.raises(ProbabilityError, match="not a folder"):
        paired_cases([a, tmp_path / "none"])
    (tmp_path / "e").mkdir()
    with pytest.raises(ProbabilityError, match="holds no case files"):
        index_cases(tmp_path / "e")


def test_fuse_probability_files_and_shape_mismatch(tmp_path) -> None:
    p, q = _p(0), _p(1)
    a, b = _npz(tmp_path / "a.npz", p), _npz(tmp_path / "b.npz", q)
    np.testing.assert_allclose(fuse_probability_files([a, b], [1, 1], "prob"), (p + q) / 2, atol=1e-6)
    np.testing.assert_array_equal(fuse_probability_files([a]), p)
    c = _npz(tmp_path / "c.npz", _p(2, (6, 7, 9)))
    with pytest.raises(ProbabilityError, match=r"c.npz: shape \(6, 7, 9\) differs"):
        fuse_probability_files([a, c])


def test_read_and_fuse_hold_at_most_three_copies(tmp_path) -> None:
    shape = (64, 64, 64)
    paths = [_npz(tmp_path / f"{i}.npz", _p(i, shape)) for i in range(3)]
    volume_bytes = np.prod(shape) * 4
    for mode in ("logit", "prob"):
        tracemalloc.start()
        out = fuse_probability_files(paths, [1, 2, 3], mode)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del out
        # a plain np.load would hold both channels (2 copies) plus the channel and the accumulator: 4
        assert peak <= 3.0 * volume_bytes, (mode, peak / volume_bytes)
