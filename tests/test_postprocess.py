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
    out = postprocess_volume(
        prob, PostprocessConfig(threshold=0.5, min_component_size=64, plug_holes=True, plug_method="both")
    )
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


def _npz(path, p1: np.ndarray) -> None:
    np.savez_compressed(path, probabilities=np.stack([1 - p1, p1]).astype(np.float32))


def _two_models(tmp_path):
    """Two model folders as nnUNetv2_predict --save_probabilities writes them (.npz + argmax .tif + .pkl)."""
    a, b = tmp_path / "a", tmp_path / "b"
    pa = np.full((16, 20, 20), 0.1, np.float32)
    pa[_sheet()] = 0.9
    pb = pa.copy()
    pb[6:8, :, :10] = 0.3  # model b is unsure about half of the sheet
    for folder, p in ((a, pa), (b, pb)):
        folder.mkdir()
        _npz(folder / "c1.npz", p)
        write_tiff(folder / "c1.tif", np.zeros(p.shape, np.uint8))  # the argmax beside it: not a duplicate
        (folder / "c1.pkl").write_bytes(b"")
    return a, b, pa, pb


def test_cli_fuses_inputs_with_weights(tmp_path, capsys) -> None:
    a, b, pa, pb = _two_models(tmp_path)
    out = tmp_path / "out"
    base = ["postprocess", "--input", str(a), "--input", str(b), "--output", str(out), "--min-size", "0"]
    # prob fusion with weights 3:1 -> 0.9*0.75 + 0.3*0.25 = 0.75 on the unsure half
    assert main([*base, "--fusion", "prob", "--weights", "3", "1", "--threshold", "0.7"]) == 0
    assert read_volume(out / "c1.tif").astype(bool).tolist() == _sheet().tolist()
    # equal-weight prob fusion: 0.6 on the unsure half -> dropped at threshold 0.7
    assert main([*base, "--fusion", "prob", "--threshold", "0.7", "--overwrite"]) == 0
    got = read_volume(out / "c1.tif").astype(bool)
    assert got[6:8, :, 10:].all() and not got[6:8, :, :10].any()
    assert main([*base, "--weights", "1", "--overwrite"]) == 2
    assert "1 weight(s) for 2 --input(s)" in capsys.readouterr().err


def test_cli_missing_case_in_one_input(tmp_path, capsys) -> None:
    a, b, pa, _ = _two_models(tmp_path)
    _npz(a / "c2.npz", pa)
    assert main(["postprocess", "--input", str(a), "--input", str(b), "--output", str(tmp_path / "o")]) == 2
    assert f"{b} lacks case(s) c2" in capsys.readouterr().err


def test_cli_bad_probability_file_is_named(tmp_path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "9.tif", np.full((4, 4, 4), 3.0, np.float32), photometric="minisblack")
    assert main(["postprocess", "--input", str(src), "--output", str(tmp_path / "o")]) == 2
    assert "9.tif: values span [3, 3], outside [0, 1]" in capsys.readouterr().err


def test_cli_config_file_and_overrides(tmp_path, capsys) -> None:
    from nnunetv2_topo.postprocessing import FusionSpec, PostprocessFile, save_postprocess_file

    a, b, pa, pb = _two_models(tmp_path)
    cfg = tmp_path / "postprocess.json"
    steps = PostprocessConfig(threshold=0.7, min_component_size=0)
    save_postprocess_file(cfg, PostprocessFile(FusionSpec("prob", (3.0, 1.0), ("va", "vb")), steps, {}))
    out = tmp_path / "out"
    base = ["postprocess", "--config", str(cfg), "--input", str(a), "--input", str(b), "--output", str(out)]
    assert main(base) == 0
    assert read_volume(out / "c1.tif").astype(bool).tolist() == _sheet().tolist()
    assert "overrides" not in capsys.readouterr().out
    assert main([*base, "--overwrite", "--weights", "1", "1", "--threshold", "0.65", "--min-size", "0"]) == 0
    said = capsys.readouterr().out
    assert f"--threshold 0.65 overrides steps.threshold = 0.7 from {cfg}" in said
    assert f"--weights 1.0,1.0 overrides fusion.weights = 3.0,1.0 from {cfg}" in said
    assert "--min-size" not in said  # same value as the file: nothing overridden
    assert not read_volume(out / "c1.tif")[6:8, :, :10].any()  # 0.6 < 0.65 with equal weights
    assert main(["postprocess", "--config", str(cfg), "--input", str(a), "--output", str(out)]) == 2
    assert "tuned on 2 input(s) (va, vb); give --input 2 time(s), in that order (got 1)" in capsys.readouterr().err
    cfg.write_text('{"version": 1, "steps": {"radius": 2}}')
    assert main(base) == 2
    assert "key 'steps': unknown post-processing key(s) radius" in capsys.readouterr().err


def test_cli_model_folder_input(tmp_path) -> None:
    model = tmp_path / "model"
    p = np.full((16, 20, 20), 0.2, np.float32)
    p[_sheet()] = 0.8
    for fold, cid in ((0, "x"), (1, "y")):
        (model / f"fold_{fold}" / "validation").mkdir(parents=True)
        _npz(model / f"fold_{fold}" / "validation" / f"{cid}.npz", p)
    assert main(["postprocess", "--input", str(model), "--output", str(tmp_path / "o")]) == 0
    assert sorted(x.name for x in (tmp_path / "o").iterdir()) == ["x.tif", "y.tif"]


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--closing-radius", "a,b"], "expected Z,YX or R"),
        (["--closing-radius", "1,2,3"], "expected Z,YX or R"),
        (["--hysteresis-high", "high"], "expected a number or 'off'"),
        (["--fusion", "max"], "invalid choice"),
        (["--plug-method", "x"], "invalid choice"),
        (["--weights", "a"], "invalid float"),
    ],
)
def test_cli_bad_flag_values(tmp_path, capsys, flags, match) -> None:
    with pytest.raises(SystemExit):
        main(["postprocess", "--input", str(tmp_path), "--output", str(tmp_path / "o"), *flags])
    assert match in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--hysteresis-high", "0.3", "--threshold", "0.5"], "hysteresis_high must lie between"),
        (["--patch-holes", "-1"], "patch_holes must be an integer >= 0"),
        (["--threshold", "1.5"], "threshold must be a number in [0, 1)"),
        (["--weights", "0"], "sum to 0"),
    ],
)
def test_cli_bad_step_values(tmp_path, capsys, flags, match) -> None:
    a, _, _, _ = _two_models(tmp_path)
    assert main(["postprocess", "--input", str(a), "--output", str(tmp_path / "o"), *flags]) == 2
    assert match in capsys.readouterr().err
