"""Post-processing steps on constructed cases, the pipeline, and the postprocess CLI."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from nnunetv2_topo.cli.main import main
from nnunetv2_topo.io import read_volume, write_tiff
from nnunetv2_topo.postprocessing import (
    PostprocessConfig,
    binarize,
    fill_cavities,
    plug_pinholes,
    postprocess_volume,
    remove_small_components,
    separated_closing,
)


def _sheet(shape=(16, 20, 20), z=6, thick=2) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[z : z + thick] = True
    return m


def test_binarize_threshold_and_integers() -> None:
    prob = np.array([[[0.2, 0.5, 0.51, np.nan]]], np.float32)
    assert binarize(prob, 0.5).tolist() == [[[False, False, True, False]]]
    assert binarize(np.array([[[0, 1, 255]]], np.uint8)).tolist() == [[[False, True, True]]]
    with pytest.raises(ValueError, match="3-D"):
        binarize(np.zeros((3, 3)))


def test_dust_removed_sheet_kept() -> None:
    m = _sheet()
    m[1, 1, 1] = True
    m[12:14, 3:5, 3:5] = True  # 8 voxels
    out = remove_small_components(m, 9)
    assert not out[1, 1, 1] and not out[12:14, 3:5, 3:5].any()
    np.testing.assert_array_equal(out, _sheet())
    assert remove_small_components(m, 8)[12:14, 3:5, 3:5].all()  # exactly min size is kept


def test_one_voxel_hole_plugged_without_thickening() -> None:
    m = _sheet(thick=1)
    m[6, 10, 10] = False
    out = plug_pinholes(m)
    np.testing.assert_array_equal(out, _sheet(thick=1))  # hole filled, nothing above/below added
    tilted = np.zeros((12, 12, 12), bool)
    tilted[:, 5, :] = True  # a sheet along axis 1
    tilted[4, 5, 4] = False
    assert plug_pinholes(tilted)[4, 5, 4]
    big_hole = _sheet(thick=1)
    big_hole[6, 8:11, 8:11] = False  # a 3x3 hole is not a pinhole: left open
    assert not plug_pinholes(big_hole)[6, 9, 9]


def test_two_sheets_one_voxel_apart_not_bridged_by_plugging() -> None:
    m = _sheet(z=4, thick=2) | _sheet(z=7, thick=2)
    np.testing.assert_array_equal(plug_pinholes(m), m)


@pytest.mark.parametrize("gap", [2, 3])
@pytest.mark.parametrize("radius", [1, 2, 3])
def test_closing_never_merges_sheets_two_or_more_apart(gap: int, radius: int) -> None:
    import cc3d

    m = _sheet(z=4, thick=2) | _sheet(z=6 + gap, thick=2)
    out = separated_closing(m, (radius, radius))
    assert cc3d.connected_components(out, connectivity=26, return_N=True)[1] == 2
    np.testing.assert_array_equal(out, m)  # flat sheets have nothing to close


def test_closing_fills_a_gap_inside_one_sheet() -> None:
    m = _sheet(thick=3)
    m[6:9, 10, 1:] = False  # a 1-voxel slit, the halves still joined at x = 0
    out = separated_closing(m, (2, 2))
    assert out[6:9, 10, 1:].sum() > m[6:9, 10, 1:].sum()
    assert not (out & ~_sheet(thick=3)).any()  # nothing outside the original sheet


def test_fill_cavities() -> None:
    m = np.zeros((9, 9, 9), bool)
    m[2:7, 2:7, 2:7] = True
    m[4, 4, 4] = False
    assert fill_cavities(m)[4, 4, 4]


def test_pipeline_return_uint8_binary() -> None:
    rng = np.random.default_rng(0)
    prob = rng.random((16, 20, 20)).astype(np.float32) * 0.4
    prob[_sheet()] = 0.9
    prob[6, 10, 10] = 0.1  # pinhole
    prob[1, 1, 1] = 0.99  # dust
    out = postprocess_volume(prob, PostprocessConfig(threshold=0.5, min_component_size=64, plug_method="both"))
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1}
    np.testing.assert_array_equal(out.astype(bool), _sheet())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_component_size": -1}, "min_component_size"),
        ({"min_component_size": 2.5}, "min_component_size"),
        ({"closing_radius": (-1, 0)}, "closing_radius"),
        ({"closing_radius": (0, 11)}, "closing_radius"),
        ({"threshold": float("nan")}, "threshold"),
    ],
)
def test_config_rejects_bad_values(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        PostprocessConfig(**kwargs)


def test_cli_postprocess(tmp_path, capsys) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    m = _sheet().astype(np.uint8) * 255
    m[1, 1, 1] = 255
    write_tiff(src / "7.tif", m)
    tifffile.imwrite(src / "8.tif", (_sheet() * 0.8).astype(np.float32))
    assert main(["postprocess", "--input", str(src), "--output", str(dst), "--min-size", "5"]) == 0
    out = read_volume(dst / "7.tif")
    assert out.dtype == np.uint8 and out.max() == 1 and out[1, 1, 1] == 0
    assert read_volume(dst / "8.tif").astype(bool).tolist() == _sheet().tolist()
    # refuses to overwrite without --overwrite, bad option values, missing/empty input
    assert main(["postprocess", "--input", str(src), "--output", str(dst)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(["postprocess", "--input", str(src), "--output", str(dst), "--closing-radius", "-2", "--overwrite"]) == 2
    )
    assert "closing_radius" in capsys.readouterr().err
    assert main(["postprocess", "--input", str(tmp_path / "none"), "--output", str(dst)]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["postprocess", "--input", str(src), "--output", str(src)]) == 2
    assert "must differ" in capsys.readouterr().err
