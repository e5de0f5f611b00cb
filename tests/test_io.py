"""Volume I/O: round trips, LZW compression, atomic writes and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from nnunetv2_topo.io import VolumeError, case_id, is_volume_file, read_volume, write_tiff


def test_tiff_round_trip_is_lzw_multipage(tmp_path):
    vol = np.random.default_rng(0).integers(0, 255, size=(5, 7, 9), dtype=np.uint8)
    path = tmp_path / "123.tif"
    write_tiff(path, vol)
    np.testing.assert_array_equal(read_volume(path), vol)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 5
        assert tif.pages[0].compression == tifffile.COMPRESSION.LZW
    assert [p.name for p in tmp_path.iterdir()] == ["123.tif"]  # no temporary file left behind


def test_nifti_is_read_in_zyx_order(tmp_path):
    import SimpleITK as sitk

    vol = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    sitk.WriteImage(sitk.GetImageFromArray(vol), str(tmp_path / "a.nii.gz"))
    np.testing.assert_array_equal(read_volume(tmp_path / "a.nii.gz"), vol)


def test_write_refuses_wrong_dtype_and_dimension_without_leaving_a_file(tmp_path):
    with pytest.raises(VolumeError, match="uint8"):
        write_tiff(tmp_path / "a.tif", np.zeros((2, 2, 2), dtype=np.float32))
    with pytest.raises(VolumeError, match="3-D"):
        write_tiff(tmp_path / "a.tif", np.zeros((2, 2), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(VolumeError, match="no such file"):
        read_volume(tmp_path / "missing.tif")
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(b"this is not a tiff")
    with pytest.raises(VolumeError, match="corrupt.tif: unreadable"):
        read_volume(bad)
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(VolumeError, match=r"flat.tif: expected a 3-D volume, got shape \(4, 4\)"):
        read_volume(flat)
    other = tmp_path / "x.png"
    other.write_bytes(b"")
    with pytest.raises(VolumeError, match="unsupported file type"):
        read_volume(other)


def test_case_id_and_volume_file_detection():
    assert case_id("/a/b/1407735.tif") == "1407735"
    assert case_id("case_7.nii.gz") == "case_7"
    assert is_volume_file("a.TIF") and is_volume_file("a.nii.gz")
    assert not is_volume_file("a.json") and not is_volume_file(".hidden.tif")
