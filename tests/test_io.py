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


def test_atomic_path_replaces_only_on_success(tmp_path):
    from nnunetv2_topo.io import atomic_path, atomic_write_text

    target = tmp_path / "out.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_staged_directory_swaps_whole_folder_or_nothing(tmp_path):
    from nnunetv2_topo.io import staged_directory

    target = tmp_path / "data"
    with staged_directory(target) as stage:
        (stage / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1"
    with pytest.raises(ValueError), staged_directory(target) as stage:
        (stage / "b.txt").write_text("2")
        raise ValueError("stop")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    with staged_directory(target) as stage:
        (stage / "c.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]  # replaced as a whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no hidden leftovers


def test_index_volumes_and_tiff_header(tmp_path):
    from nnunetv2_topo.io import index_volumes, tiff_header, volume_shape

    write_tiff(tmp_path / "a.tif", np.zeros((3, 4, 5), np.uint8))
    (tmp_path / "a.npz").write_bytes(b"")  # not a volume file: ignored
    (tmp_path / "notes.txt").write_text("x")
    assert index_volumes(tmp_path, "prediction") == {"a": tmp_path / "a.tif"}
    assert tiff_header(tmp_path / "a.tif") == ((3, 4, 5), np.dtype(np.uint8))
    assert volume_shape(tmp_path / "a.tif") == (3, 4, 5)
    write_tiff(tmp_path / "a.tiff", np.zeros((3, 4, 5), np.uint8))
    with pytest.raises(VolumeError, match=r"prediction folder .* two files for case 'a'"):
        index_volumes(tmp_path, "prediction")
    with pytest.raises(VolumeError, match="does not exist"):
        index_volumes(tmp_path / "missing", "ground-truth")
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    with pytest.raises(VolumeError, match="bad.tif: unreadable TIFF"):
        tiff_header(tmp_path / "bad.tif")


def test_index_volumes_raises_the_callers_error_and_refuses_empty(tmp_path):
    from nnunetv2_topo.io import index_volumes

    class WorkflowError(ValueError):
        pass

    (tmp_path / "empty").mkdir()
    assert index_volumes(tmp_path / "empty", "prediction") == {}
    with pytest.raises(
        WorkflowError, match=r"^--gt folder .*empty holds no volumes \(\.tif, \.tiff, \.nii\.gz, \.nii\)$"
    ):
        index_volumes(tmp_path / "empty", "--gt", WorkflowError, required=True)
    with pytest.raises(WorkflowError, match="test image folder .*missing does not exist"):
        index_volumes(tmp_path / "missing", "test image", WorkflowError)
    write_tiff(tmp_path / "b.tif", np.zeros((2, 2, 2), np.uint8))
    (tmp_path / "b.nii.gz").write_bytes(b"")  # indexing reads names only
    with pytest.raises(WorkflowError, match="two files for case 'b': b.nii.gz and b.tif; keep one"):
        index_volumes(tmp_path, "prediction", WorkflowError)


def test_files_are_renamed_into_place_only_by_the_io_helpers():
    """``os.replace`` / ``os.rename`` (the last step of an atomic write) occur only in ``nnunetv2_topo/io.py``:
    every other module writes through ``atomic_path``, ``atomic_write_text``, ``write_tiff`` or ``staged_directory``."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = []
    for path in sorted([*(root / "nnunetv2_topo").rglob("*.py"), *(root / "dataset_conversion").rglob("*.py")]):
        if path == root / "nnunetv2_topo" / "io.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("replace", "rename", "renames")
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
            ):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not found, f"hand-rolled atomic writes (use nnunetv2_topo.io.atomic_path): {found}"
