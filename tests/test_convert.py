"""nnUNetv2_convert_vesuvius: layout, sidecars, dataset.json, hard links, splits, and every bad input."""

from __future__ import annotations

import csv
import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

from nnunetv2_topo.conversion import convert_vesuvius
from nnunetv2_topo.conversion.convert_vesuvius import convert, main
from nnunetv2_topo.conversion.splits import SplitError, by_scroll_folds, make_splits, stratified_folds
from nnunetv2_topo.io import write_tiff

DS = "Dataset005_Vesuvius"


def _ids(kaggle: Path, csv_name: str) -> list[str]:
    with open(kaggle / csv_name, newline="") as f:
        return [r["id"] for r in csv.DictReader(f)]


def _scrolls(path: Path) -> dict[str, str]:
    with open(path, newline="") as f:
        return {r["id"]: r["scroll_id"] for r in csv.DictReader(f)}


def _run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _assert_nothing_written(env: SimpleNamespace) -> None:
    assert list(env.raw.iterdir()) == []  # no dataset, no hidden temporary folder
    assert list(env.preprocessed.iterdir()) == []


# --- layout -------------------------------------------------------------------------------------------------------


def test_layout_sidecars_and_dataset_json(kaggle_dir: Path, nnunet_env: SimpleNamespace, capsys) -> None:
    rc, out, _ = _run(capsys, "--input", str(kaggle_dir), "--dataset-id", "5", "-np", "1", "--quiet")
    assert rc == 0, out
    ds = nnunet_env.raw / DS
    train, test = _ids(kaggle_dir, "train.csv"), _ids(kaggle_dir, "test.csv")
    assert sorted(p.name for p in (ds / "imagesTr").iterdir()) == sorted(
        [f"{i}_0000.tif" for i in train] + [f"{i}.json" for i in train]
    )
    assert sorted(p.name for p in (ds / "labelsTr").iterdir()) == sorted(
        [f"{i}.tif" for i in train] + [f"{i}.json" for i in train]
    )
    assert sorted(p.name for p in (ds / "imagesTs").iterdir()) == sorted(
        [f"{i}_0000.tif" for i in test] + [f"{i}.json" for i in test]
    )
    for sidecar in ds.glob("*/*.json"):
        assert json.loads(sidecar.read_text()) == {"spacing": [1.0, 1.0, 1.0]}
    dj = json.loads((ds / "dataset.json").read_text())
    assert dj["channel_names"] == {"0": "CT"}
    assert dj["labels"] == {"background": 0, "surface": 1, "ignore": 2}
    assert dj["numTraining"] == len(train)
    assert dj["file_ending"] == ".tif"
    assert dj["overwrite_image_reader_writer"] == "Tiff3DIO"
    assert f"wrote {ds}: {len(train)} training, {len(test)} test cases" in out
    assert "nnUNetv2_plan_and_preprocess -d 5 -c 3d_fullres" in out


def test_link_mode_hard_links(kaggle_dir: Path, nnunet_env: SimpleNamespace) -> None:
    convert(kaggle_dir, 5, num_processes=1, progress=False)
    ds = nnunet_env.raw / DS
    for case in _ids(kaggle_dir, "train.csv"):
        src, dst = kaggle_dir / "train_images" / f"{case}.tif", ds / "imagesTr" / f"{case}_0000.tif"
        assert os.stat(src).st_ino == os.stat(dst).st_ino and os.stat(dst).st_nlink >= 2
        assert os.path.samefile(kaggle_dir / "train_labels" / f"{case}.tif", ds / "labelsTr" / f"{case}.tif")


def test_copy_mode_copies(kaggle_dir: Path, nnunet_env: SimpleNamespace) -> None:
    s = convert(kaggle_dir, 5, mode="copy", num_processes=1, progress=False)
    assert s.methods == {"copy": s.num_train + s.num_test}
    for case in _ids(kaggle_dir, "train.csv"):
        src, dst = kaggle_dir / "train_images" / f"{case}.tif", nnunet_env.raw / DS / "imagesTr" / f"{case}_0000.tif"
        assert not os.path.samefile(src, dst) and src.read_bytes() == dst.read_bytes()


def test_link_falls_back_to_copy_across_file_systems(kaggle_dir, nnunet_env, monkeypatch) -> None:
    def no_link(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(convert_vesuvius.os, "link", no_link)
    s = convert(kaggle_dir, 5, mode="link", num_processes=1, progress=False)
    assert s.methods == {"copy": s.num_train + s.num_test}
    case = _ids(kaggle_dir, "train.csv")[0]
    dst = nnunet_env.raw / DS / "labelsTr" / f"{case}.tif"
    assert dst.read_bytes() == (kaggle_dir / "train_labels" / f"{case}.tif").read_bytes()


@pytest.mark.e2e
def test_parallel_conversion_matches_serial(kaggle_dir: Path, nnunet_env: SimpleNamespace) -> None:
    convert(kaggle_dir, 5, num_processes=2, progress=False, mode="copy")
    convert(kaggle_dir, 6, num_processes=1, progress=False, mode="copy")
    a, b = nnunet_env.raw / DS, nnunet_env.raw / "Dataset006_Vesuvius"
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        if rel.name != "dataset.json":  # holds the dataset name
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


# --- splits -------------------------------------------------------------------------------------------------------


def test_splits_written_to_raw_and_preprocessed(kaggle_dir: Path, nnunet_env: SimpleNamespace) -> None:
    convert(kaggle_dir, 5, folds=3, num_processes=1, progress=False)
    pre = nnunet_env.preprocessed / DS / "splits_final.json"
    raw = nnunet_env.raw / DS / "splits_final.json"
    splits = json.loads(pre.read_text())
    assert json.loads(raw.read_text()) == splits and len(splits) == 3
    cases = sorted(_ids(kaggle_dir, "train.csv"))
    vals = [c for s in splits for c in s["val"]]
    assert sorted(vals) == cases  # every case validated exactly once
    for s in splits:
        assert sorted(s["train"] + s["val"]) == cases and not set(s["train"]) & set(s["val"])


def test_split_none_writes_no_split_file(kaggle_dir: Path, nnunet_env: SimpleNamespace) -> None:
    convert(kaggle_dir, 5, split="none", num_processes=1, progress=False)
    assert not (nnunet_env.raw / DS / "splits_final.json").exists()
    assert not (nnunet_env.preprocessed / DS).exists()


def test_stratified_splits_on_real_ids(real_train_csv: Path) -> None:
    scroll_of = _scrolls(real_train_csv)
    folds = stratified_folds(scroll_of, 5)
    assert sorted(c for f in folds for c in f) == sorted(scroll_of)
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    for scroll in set(scroll_of.values()):
        n = sum(1 for s in scroll_of.values() if s == scroll)
        for f in folds:
            in_fold = sum(1 for c in f if scroll_of[c] == scroll)
            assert abs(in_fold - n / 5) < 1, (scroll, in_fold, n)
    assert folds == stratified_folds(scroll_of, 5)  # deterministic
    assert folds != stratified_folds(scroll_of, 5, seed=1)


def test_by_scroll_splits_on_real_ids(real_train_csv: Path) -> None:
    scroll_of = _scrolls(real_train_csv)
    folds = by_scroll_folds(scroll_of, 5)
    assert sorted(c for f in folds for c in f) == sorted(scroll_of)
    for scroll in set(scroll_of.values()):  # never splits a scroll
        holding = [k for k, f in enumerate(folds) if any(scroll_of[c] == scroll for c in f)]
        assert len(holding) == 1, scroll
    # greedy, largest scroll first into the emptiest fold: 382 | 176 | 130 | 88 | 17 + 13
    assert sorted(len(f) for f in folds) == [30, 88, 130, 176, 382]
    splits = make_splits(scroll_of, "by-scroll", 5)
    assert [s["val"] for s in splits] == folds


def test_split_errors() -> None:
    scroll_of = {"a": "1", "b": "1", "c": "2", "d": "2"}
    with pytest.raises(SplitError, match="by-scroll needs at least as many scrolls as folds.*2 scroll"):
        by_scroll_folds(scroll_of, 3)
    with pytest.raises(SplitError, match="4 training cases cannot fill 5 folds"):
        stratified_folds(scroll_of, 5)
    with pytest.raises(SplitError, match="--folds must be >= 2"):
        stratified_folds(scroll_of, 1)
    with pytest.raises(SplitError, match="unknown split mode"):
        make_splits(scroll_of, "random")


# --- bad inputs ----------------------------------------------------------------------------------------------------


def test_ids_without_files_are_reported_and_skipped(kaggle_copy: Path, nnunet_env, capsys) -> None:
    with open(kaggle_copy / "train.csv", "a") as f:
        f.write("999999,34117\n")
    only_image = _ids(kaggle_copy, "train.csv")[0]
    (kaggle_copy / "train_labels" / f"{only_image}.tif").unlink()
    rc, out, _ = _run(capsys, "--input", str(kaggle_copy), "--dataset-id", "5", "-np", "1", "--quiet")
    assert rc == 0
    assert "skipped 2 id(s) listed without files" in out
    assert "train id 999999: no image and label file" in out and f"train id {only_image}: no label file" in out
    dj = json.loads((nnunet_env.raw / DS / "dataset.json").read_text())
    assert dj["numTraining"] == len(_ids(kaggle_copy, "train.csv")) - 2
    assert not (nnunet_env.raw / DS / "imagesTr" / f"{only_image}_0000.tif").exists()


def _break(kaggle: Path, what: str) -> str:
    """Damage one training case of a Kaggle folder; returns the expected message fragment."""
    case = _ids(kaggle, "train.csv")[1]
    image, label = kaggle / "train_images" / f"{case}.tif", kaggle / "train_labels" / f"{case}.tif"
    if what == "shape":
        write_tiff(label, np.zeros((10, 12, 14), np.uint8))
        return f"{label}: shape (10, 12, 14) differs from its image {image}"
    if what == "values":
        lab = tifffile.imread(label)
        lab[5, 5, 5], lab[6, 6, 6] = 3, 255
        write_tiff(label, lab)
        return f"{label}: label values 3, 255 outside {{0, 1, 2}}"
    if what == "2d":
        tifffile.imwrite(image, np.zeros((40, 36), np.uint8))
        return f"{image}: expected a 3-D volume"
    if what == "uint16":
        tifffile.imwrite(image, np.zeros((32, 40, 36), np.uint16))
        return f"{image}: dtype uint16, expected uint8"
    if what == "garbage":
        image.write_bytes(b"this is not a tiff")
        return f"{image}: unreadable"
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["shape", "values", "2d", "uint16", "garbage"])
def test_bad_volumes_fail_with_file_named_and_nothing_written(kaggle_copy, nnunet_env, capsys, what) -> None:
    expected = _break(kaggle_copy, what)
    rc, _, err = _run(capsys, "--input", str(kaggle_copy), "--dataset-id", "5", "-np", "1", "--quiet")
    assert rc == 2
    assert "nothing was written" in err and expected in err
    case = _ids(kaggle_copy, "train.csv")[1]
    assert f"remove id {case} from train.csv" in err  # the fix
    _assert_nothing_written(nnunet_env)


def test_header_verify_skips_decoding_but_checks_shapes(kaggle_copy, nnunet_env, capsys) -> None:
    _break(kaggle_copy, "values")
    assert convert(kaggle_copy, 5, verify="header", num_processes=1, progress=False).num_train == 6
    expected = _break(kaggle_copy, "shape")
    rc, _, err = _run(capsys, "--input", str(kaggle_copy), "--dataset-id", "6", "--verify", "header", "--quiet")
    assert rc == 2 and expected in err


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda k: (k / "train.csv").unlink(), "train.csv: missing; --input must be the Kaggle folder"),
        (lambda k: os.rename(k / "train_labels", k / "labels"), "train_labels: missing"),
        (lambda k: (k / "train.csv").write_text("id,scroll\n1,2\n"), "missing column(s) scroll_id"),
        (lambda k: os.rename(k / "test_images", k / "x"), "test_images: missing but test.csv lists test ids"),
        (lambda k: (k / "train.csv").write_text("id,scroll_id\n42,1\n"), "none of its ids has both"),
    ],
)
def test_bad_input_folders(kaggle_copy, nnunet_env, capsys, damage, message) -> None:
    damage(kaggle_copy)
    rc, _, err = _run(capsys, "--input", str(kaggle_copy), "--dataset-id", "5", "--quiet")
    assert rc == 2 and message in err, err
    _assert_nothing_written(nnunet_env)


def test_missing_input_folder(nnunet_env, capsys, tmp_path) -> None:
    rc, _, err = _run(capsys, "--input", str(tmp_path / "nope"), "--dataset-id", "5")
    assert rc == 2 and "nope: no such folder" in err


def test_missing_nnunet_raw(kaggle_dir, monkeypatch, capsys) -> None:
    monkeypatch.delenv("nnUNet_raw", raising=False)
    rc, _, err = _run(capsys, "--input", str(kaggle_dir), "--dataset-id", "5")
    assert rc == 2 and "nnUNet_raw is not set" in err and "export nnUNet_raw=" in err


def test_existing_dataset_needs_overwrite(kaggle_dir, kaggle_copy, nnunet_env, capsys) -> None:
    assert _run(capsys, "--input", str(kaggle_dir), "--dataset-id", "5", "--quiet")[0] == 0
    marker = nnunet_env.raw / DS / "dataset.json"
    before = marker.read_text()
    rc, _, err = _run(capsys, "--input", str(kaggle_dir), "--dataset-id", "5", "--quiet")
    assert rc == 2 and f"{nnunet_env.raw / DS}: already exists; pass --overwrite" in err

    # a failing --overwrite leaves the old dataset as it was
    _break(kaggle_copy, "values")
    rc, _, err = _run(capsys, "--input", str(kaggle_copy), "--dataset-id", "5", "--overwrite", "--quiet")
    assert rc == 2 and marker.read_text() == before
    assert sorted(p.name for p in nnunet_env.raw.iterdir()) == [DS]

    with open(kaggle_dir / "train.csv") as f:
        n = len(f.readlines()) - 1
    rc, _, _ = _run(capsys, "--input", str(kaggle_dir), "--dataset-id", "5", "--overwrite", "--folds", "2", "--quiet")
    assert rc == 0 and sorted(p.name for p in nnunet_env.raw.iterdir()) == [DS]
    assert len(json.loads((nnunet_env.preprocessed / DS / "splits_final.json").read_text())) == 2
    assert json.loads(marker.read_text())["numTraining"] == n


@pytest.mark.parametrize("where", ["raw", "preprocessed", "results"])
def test_dataset_id_taken_by_another_name(kaggle_dir, nnunet_env, capsys, where) -> None:
    other = getattr(nnunet_env, where) / "Dataset005_Other"
    other.mkdir()
    rc, _, err = _run(capsys, "--input", str(kaggle_dir), "--dataset-id", "5", "--overwrite")
    assert rc == 2 and f"dataset id 5 is already used by {other}" in err
    assert not (nnunet_env.raw / DS).exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset-id", "1000"], "--dataset-id must be between 1 and 999"),
        (["--dataset-id", "5", "--name", "my data"], "is not a valid folder name"),
        (["--dataset-id", "5", "-np", "0"], "-np must be >= 1"),
        (["--dataset-id", "5", "--split", "by-scroll"], "by-scroll needs at least as many scrolls as folds"),
        (["--dataset-id", "5", "--folds", "7"], "6 training cases cannot fill 7 folds"),
    ],
)
def test_bad_arguments(kaggle_dir, nnunet_env, capsys, args, message) -> None:
    rc, _, err = _run(capsys, "--input", str(kaggle_dir), *args)
    assert rc == 2 and message in err, err
    _assert_nothing_written(nnunet_env)


@pytest.mark.parametrize("args", [["--mode", "symlink"], ["--split", "random"], ["--verify", "some"]])
def test_argparse_choices(kaggle_dir, nnunet_env, capsys, args) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--input", str(kaggle_dir), "--dataset-id", "5", *args])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_console_script_exit_code(kaggle_dir, nnunet_env) -> None:
    import subprocess
    import sys

    script = Path(sys.executable).with_name("nnUNetv2_convert_vesuvius")
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    env = dict(os.environ)
    env.pop("nnUNet_raw")
    proc = subprocess.run(
        [str(script), "--input", str(kaggle_dir), "--dataset-id", "5"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2
    assert "nnUNetv2_convert_vesuvius: error: environment variable nnUNet_raw is not set" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_top_level_shim_is_the_package_converter() -> None:
    """``dataset_conversion/`` (``python -m dataset_conversion.convert_vesuvius`` in a checkout) only re-exports."""
    import dataset_conversion.convert_vesuvius as shim

    assert shim.main is main and shim.convert is convert
