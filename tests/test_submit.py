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
    args = ["submit", "--pred", str(pred), "--images", str(images), "--csv", str(csv), "--out", str(out)]
    assert main(args) == 0
    assert out.is_file()
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    (pred / "11.tif").unlink()
    assert main([*args, "--overwrite"]) == 2
    assert "no prediction" in capsys.readouterr().err
