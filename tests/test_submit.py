"""The submission writer and the submit CLI: a valid zip, and a refusal for each kind of bad input."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from nnunetv2_topo.cli.main import main
from nnunetv2_topo.io import write_tiff
from nnunetv2_topo.submission import SubmissionError, write_submission

SHAPE = (8, 10, 12)


@pytest.fixture
def setup(tmp_path: Path):
    pred, images = tmp_path / "pred", tmp_path / "images"
    pred.mkdir()
    images.mkdir()
    csv = tmp_path / "test.csv"
    csv.write_text("id,scroll_id\n11,26002\n12,26002\n")
    for cid in ("11", "12"):
        write_tiff(images / f"{cid}.tif", np.full(SHAPE, 100, np.uint8))
        p = np.zeros(SHAPE, np.uint8)
        p[3:5] = 1
        write_tiff(pred / f"{cid}.tif", p)
    return pred, images, csv, tmp_path / "sub" / "submission.zip"


def test_writes_one_binary_tif_per_id(setup) -> None:
    pred, images, csv, out = setup
    assert write_submission(pred, images, csv, out) == out
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["11.tif", "12.tif"]
        vol = tifffile.imread(io.BytesIO(zf.read("11.tif")))
    assert vol.dtype == np.uint8 and vol.shape == SHAPE and set(np.unique(vol)) == {0, 1}


def test_missing_id(setup) -> None:
    pred, images, csv, out = setup
    (pred / "12.tif").unlink()
    with pytest.raises(SubmissionError, match="no prediction .* 12"):
        write_submission(pred, images, csv, out)
    assert not out.exists()


def test_extra_file(setup) -> None:
    pred, images, csv, out = setup
    write_tiff(pred / "99.tif", np.zeros(SHAPE, np.uint8))
    with pytest.raises(SubmissionError, match="not in .*: 99"):
        write_submission(pred, images, csv, out)


def test_wrong_shape(setup) -> None:
    pred, images, csv, out = setup
    write_tiff(pred / "11.tif", np.zeros((8, 10, 11), np.uint8))
    with pytest.raises(SubmissionError, match=r"id 11: .*shape \(8, 10, 11\).*\(8, 10, 12\)"):
        write_submission(pred, images, csv, out)


def test_non_binary_refused_unless_binarize(setup) -> None:
    pred, images, csv, out = setup
    p = np.zeros(SHAPE, np.uint8)
    p[2:4] = 255
    write_tiff(pred / "12.tif", p)
    with pytest.raises(SubmissionError, match="id 12: .*not binary.*--binarize"):
        write_submission(pred, images, csv, out)
    write_submission(pred, images, csv, out, binarize=True)
    with zipfile.ZipFile(out) as zf:
        vol = tifffile.imread(io.BytesIO(zf.read("12.tif")))
    assert vol.max() == 1 and vol[2:4].all()


def test_bad_csv(setup, tmp_path) -> None:
    pred, images, _, out = setup
    bad = tmp_path / "bad.csv"
    bad.write_text("name\n11\n")
    with pytest.raises(SubmissionError, match=r"bad.csv: missing column\(s\) id"):
        write_submission(pred, images, bad, out)
    bad.write_text("id\n11\n11\n")
    with pytest.raises(SubmissionError, match="duplicate id"):
        write_submission(pred, images, bad, out)
    with pytest.raises(SubmissionError, match="no such CSV"):
        write_submission(pred, images, tmp_path / "none.csv", out)
    bad.write_text("id,scroll_id\n")
    with pytest.raises(SubmissionError, match="no ids listed"):
        write_submission(pred, images, bad, out)


def test_missing_test_image(setup) -> None:
    pred, images, csv, out = setup
    (images / "11.tif").unlink()
    with pytest.raises(SubmissionError, match="no test image .* 11"):
        write_submission(pred, images, csv, out)


def test_cli_submit(setup, capsys) -> None:
    pred, images, csv, out = setup
    args = ["submit", "--binary-input", str(pred), "--images", str(images), "--csv", str(csv), "--output", str(out)]
    assert main(args) == 0
    assert out.is_file()
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    (pred / "11.tif").unlink()
    assert main([*args, "--overwrite"]) == 2
    assert "no prediction" in capsys.readouterr().err


def _npz(path: Path, p1: np.ndarray) -> None:
    np.savez_compressed(path, probabilities=np.stack([1 - p1, p1]).astype(np.float32))


@pytest.fixture
def probs(setup, tmp_path: Path):
    """Two models' probabilities for the test ids, as nnUNetv2_predict --save_probabilities writes them."""
    folders = []
    for name, unsure in (("m1", 0.9), ("m2", 0.2)):
        folder = tmp_path / name
        folder.mkdir()
        for cid in ("11", "12"):
            p = np.full(SHAPE, 0.05, np.float32)
            p[3:5] = 0.9
            p[3:5, :, :6] = unsure
            _npz(folder / f"{cid}.npz", p)
            write_tiff(folder / f"{cid}.tif", np.zeros(SHAPE, np.uint8))
        folders.append(folder)
    return folders


def _zip_volume(out: Path, name: str) -> np.ndarray:
    with zipfile.ZipFile(out) as zf:
        return tifffile.imread(io.BytesIO(zf.read(name)))


def test_cli_submit_from_probabilities(setup, probs, capsys) -> None:
    _, images, csv, out = setup
    base = ["submit", "--images", str(images), "--csv", str(csv), "--output", str(out), "--min-size", "0"]
    m1, m2 = (str(p) for p in probs)
    assert main([*base, "--input", m1, "--input", m2, "--fusion", "prob", "--threshold", "0.5"]) == 0
    vol = _zip_volume(out, "11.tif")  # mean 0.55 on the unsure part: kept
    assert vol.dtype == np.uint8 and vol.shape == SHAPE and vol[3:5].all() and vol.sum() == vol[3:5].size
    args = [*base, "--input", m1, "--input", m2, "--weights", "1", "3", "--threshold", "0.5", "--overwrite"]
    assert main(args) == 0  # logit mean (2.197 + 3 * -1.386) / 4 < 0: the unsure part goes
    vol = _zip_volume(out, "12.tif")
    assert not vol[3:5, :, :6].any() and vol[3:5, :, 6:].all()


def test_submit_from_probabilities_config(setup, probs, tmp_path, capsys) -> None:
    from nnunetv2_topo.postprocessing import FusionSpec, PostprocessConfig, PostprocessFile, save_postprocess_file

    _, images, csv, out = setup
    cfg = tmp_path / "postprocess.json"
    steps = PostprocessConfig(threshold=0.6, min_component_size=0)
    save_postprocess_file(cfg, PostprocessFile(FusionSpec("prob", None, ("a", "b")), steps, {"score": 0.6}))
    base = ["submit", "--images", str(images), "--csv", str(csv), "--output", str(out), "--config", str(cfg)]
    assert main([*base, "--input", str(probs[0]), "--input", str(probs[1])]) == 0
    assert not _zip_volume(out, "11.tif")[3:5, :, :6].any()  # 0.55 < 0.6
    assert main([*base, "--input", str(probs[0]), "--overwrite"]) == 2
    assert "tuned on 2 input(s)" in capsys.readouterr().err
    assert main([*base, "--input", str(probs[0]), "--input", str(probs[1]), "--threshold", "0.5", "--overwrite"]) == 0
    assert "--threshold 0.5 overrides steps.threshold = 0.6" in capsys.readouterr().out
    assert _zip_volume(out, "11.tif")[3:5].all()


def test_submit_probability_errors_write_nothing(setup, probs, capsys) -> None:
    pred, images, csv, out = setup
    base = ["submit", "--images", str(images), "--csv", str(csv), "--output", str(out)]
    _npz(probs[1] / "12.npz", np.full((8, 10, 11), 0.5, np.float32))
    assert main([*base, "--input", str(probs[0]), "--input", str(probs[1])]) == 2
    err = capsys.readouterr().err
    assert "id 12: " in err and "12.npz: shape (8, 10, 11) differs from the first map's (8, 10, 12)" in err
    assert not out.exists() and not list(out.parent.glob(".*partial*"))  # 11 was done: nothing kept
    assert main([*base, "--input", str(probs[1])]) == 2
    assert "id 12: prediction 12.npz has shape (8, 10, 11), the test image 12.tif has (8, 10, 12)" in (
        capsys.readouterr().err
    )
    (probs[1] / "12.npz").unlink()
    (probs[1] / "12.tif").unlink()
    assert main([*base, "--input", str(probs[0]), "--input", str(probs[1])]) == 2
    assert "lacks case(s) 12" in capsys.readouterr().err
    write_tiff(probs[1] / "99.tif", np.zeros(SHAPE, np.uint8))
    assert main([*base, "--input", str(probs[1])]) == 2
    err = capsys.readouterr().err  # one message names the missing and the extra case
    assert "for 1 test id(s) of " in err and ": 12; 1 prediction(s) in " in err
    assert err.rstrip().endswith(": 99; use the test folder and test.csv of the same competition")
    _npz(probs[1] / "12.npz", np.full(SHAPE, 0.5, np.float32))
    assert main([*base, "--input", str(probs[1])]) == 2
    assert "1 prediction(s) in " in capsys.readouterr().err  # 99 is no test id


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ([], "give either --binary-input"),
        (["--binary-input", "P", "--input", "P"], "give either --binary-input"),
        (["--binary-input", "P", "--threshold", "0.3"], "--threshold apply to --input probability maps"),
        (["--binary-input", "P", "--config", "c.json"], "--config apply to --input"),
        (["--input", "P", "--binarize"], "--binarize applies to --binary-input"),
    ],
)
def test_submit_route_errors(setup, capsys, flags, match) -> None:
    pred, images, csv, out = setup
    flags = [str(pred) if f == "P" else f for f in flags]
    assert main(["submit", "--images", str(images), "--csv", str(csv), "--output", str(out), *flags]) == 2
    assert match in capsys.readouterr().err
