"""Synthetic Vesuvius-like data: layout, file format, determinism, label statistics, touching sheets, CLI."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import KAGGLE_CASES, KAGGLE_SHAPE, KAGGLE_TEST_CASES
from scipy import ndimage

from nnunetv2_topo.cli.main import main as cli_main
from nnunetv2_topo.ids_csv import KaggleCSVError, read_ids_csv
from nnunetv2_topo.synth import ScrollStyle, SheetTopology, make_case, synthesize_case
from nnunetv2_topo.synth.generator import BORDER
from nnunetv2_topo.synth.layout import SynthError, plan_rows, scroll_counts, write_kaggle_dataset


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def cases_64() -> list:
    """Ten 64^3 cases from different seeds and scrolls, for statistics, seen with the sheets stacked along axis 0."""
    scrolls = ["34117", "35360", "26010", "26002", "44430"]
    return [
        synthesize_case((64, 64, 64), np.random.default_rng(s), ScrollStyle.for_scroll(scrolls[s % 5])).moved_to(0)
        for s in range(10)
    ]


def test_sheets_run_along_z_and_cross_every_z_slice() -> None:
    shape = (40, 48, 44)
    case = synthesize_case(shape, np.random.default_rng(3))
    assert case.sheet_axis == 1 and case.image.shape == shape == case.label.shape
    # the default is the axis-0 stack moved to axis 1: same draws, same voxels
    stacked = synthesize_case((48, 40, 44), np.random.default_rng(3), sheet_axis=0)
    np.testing.assert_array_equal(stacked.moved_to(1).label, case.label)
    # every annotated sheet is cut by (nearly) every inner z-slice, as thin curves rather than filled areas
    inner = slice(BORDER, shape[0] - BORDER)
    for k in case.annotated:
        in_slice = (case.sheets[inner] == k).any(axis=(1, 2))
        assert in_slice.mean() >= 0.8
    fg = case.label[inner] == 1
    assert fg.any(axis=(1, 2)).all()
    assert fg.sum(axis=1).max() <= 4 * 5  # along y a column crosses a few 2-5 voxel sheets, never a slab
    with pytest.raises(ValueError, match="sheet_axis"):
        synthesize_case(shape, np.random.default_rng(0), sheet_axis=3)


def test_kaggle_layout_files_and_csvs(kaggle_dir: Path) -> None:
    train, test = _rows(kaggle_dir / "train.csv"), _rows(kaggle_dir / "test.csv")
    assert list(train[0]) == ["id", "scroll_id"] and list(test[0]) == ["id", "scroll_id"]
    assert len(train) == KAGGLE_CASES and len(test) == KAGGLE_TEST_CASES
    train_ids, test_ids = {r["id"] for r in train}, {r["id"] for r in test}
    assert not train_ids & test_ids
    for folder, ids in [("train_images", train_ids), ("train_labels", train_ids), ("test_images", test_ids)]:
        assert {p.name for p in (kaggle_dir / folder).iterdir()} == {f"{i}.tif" for i in ids}
    assert {p.name for p in (kaggle_dir / "test_labels").iterdir()} == {f"{i}.tif" for i in test_ids}
    assert not [p for p in kaggle_dir.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_tiffs_are_uint8_multipage_lzw(kaggle_dir: Path) -> None:
    for path in sorted(kaggle_dir.glob("*/*.tif")):
        with tifffile.TiffFile(path) as tif:
            assert len(tif.pages) == KAGGLE_SHAPE[0], path  # one page per z-slice
            assert all(p.compression == tifffile.COMPRESSION.LZW for p in tif.pages), path
            arr = tif.asarray()
        assert arr.dtype == np.uint8 and arr.shape == KAGGLE_SHAPE, path


def test_dataset_is_deterministic_for_a_seed(kaggle_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    write_kaggle_dataset(again, KAGGLE_CASES, KAGGLE_SHAPE, KAGGLE_TEST_CASES, seed=0, progress=False)
    files = sorted(p.relative_to(kaggle_dir) for p in kaggle_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (kaggle_dir / rel).read_bytes() == (again / rel).read_bytes(), rel

    other = tmp_path / "other"
    write_kaggle_dataset(other, KAGGLE_CASES, KAGGLE_SHAPE, KAGGLE_TEST_CASES, seed=1, progress=False)
    assert (other / "train.csv").read_text() != (kaggle_dir / "train.csv").read_text()


@pytest.mark.e2e
def test_parallel_writing_gives_the_same_files(kaggle_dir: Path, tmp_path: Path) -> None:
    par = tmp_path / "par"
    write_kaggle_dataset(par, KAGGLE_CASES, KAGGLE_SHAPE, KAGGLE_TEST_CASES, seed=0, num_processes=2, progress=False)
    for p in kaggle_dir.rglob("*.tif"):
        assert p.read_bytes() == (par / p.relative_to(kaggle_dir)).read_bytes()


def test_make_case_is_deterministic_and_seed_dependent() -> None:
    a = make_case((24, 30, 28), np.random.default_rng(5))
    b = make_case((24, 30, 28), np.random.default_rng(5))
    c = make_case((24, 30, 28), np.random.default_rng(6))
    assert a[0].shape == a[1].shape == (24, 30, 28)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_make_case_rejects_tiny_shapes() -> None:
    with pytest.raises(ValueError, match="too small"):
        make_case((8, 32, 32), np.random.default_rng(0))


def test_label_values_border_and_ignore_share(cases_64: list) -> None:
    shares = []
    for case in cases_64:
        lab = case.label
        assert set(np.unique(lab)) == {0, 1, 2}
        for axis in range(3):
            for sl in (slice(0, BORDER), slice(-BORDER, None)):
                index = [slice(None)] * 3
                index[axis] = sl
                assert (lab[tuple(index)] == 2).all()
        shares.append((lab == 2).mean())
    # real data: label 2 is 55-71% of voxels in samples; ours must be the majority on average, never all
    assert 0.5 <= np.mean(shares) <= 0.8
    assert max(shares) < 0.9


def test_sheets_are_2_to_5_voxels_thick_and_stacked_along_z(cases_64: list) -> None:
    for case in cases_64:
        sheets = case.sheets
        assert sheets.max() >= 3  # several sheets per volume
        inner = sheets[BORDER + 8 : -BORDER - 8]
        for k in np.unique(inner[inner > 0]):
            per_column = (sheets == k).sum(axis=0)
            full = per_column[per_column > 0]
            assert 2 <= np.median(full) <= 5
        # labels 1 lie on sheets only, and only on annotated ones
        on = np.unique(sheets[case.label == 1])
        assert 0 not in on and set(on) <= set(case.annotated)


def test_touching_sheets_are_face_adjacent_in_the_labels(cases_64: list) -> None:
    found = 0
    for case in cases_64:
        for a, b in case.touching:
            lower = (case.sheets == a) & (case.label == 1)
            upper = (case.sheets == b) & (case.label == 1)
            if (lower[:-1] & upper[1:]).any():  # voxel of sheet b right above a voxel of sheet a
                found += 1
    assert found >= 5  # the merge case appears in most volumes


def test_some_sheets_have_holes_or_end_inside(cases_64: list) -> None:
    incomplete = 0
    for case in cases_64:
        inner = case.sheets[:, BORDER:-BORDER, BORDER:-BORDER]
        for k in range(1, case.sheets.max() + 1):
            cover = (inner == k).any(axis=0)
            if cover.any() and not cover.all():
                incomplete += 1
    assert incomplete >= 3


def _topology_counts(topology: SheetTopology) -> tuple[int, int, float]:
    """(touching pairs, sheets with holes inside the frame, mean gap between neighbouring sheets) over 6 cases."""
    touching = holed = 0
    gaps = []
    for s in range(6):
        case = synthesize_case((48, 48, 48), np.random.default_rng(s), topology=topology).moved_to(0)
        touching += len(case.touching)
        inner = case.sheets[:, BORDER:-BORDER, BORDER:-BORDER]
        for k in range(1, case.sheets.max() + 1):
            cover = (inner == k).any(axis=0)
            filled = ndimage.binary_fill_holes(cover)
            holed += bool((filled & ~cover).any())
            above = (inner == k + 1).any(axis=0) & cover
            if above.any():  # gap = first voxel of sheet k+1 minus last voxel of sheet k, per column
                z = np.arange(inner.shape[0])[:, None, None]
                top = np.where(inner == k, z, -1).max(axis=0)
                bottom = np.where(inner == k + 1, z, 10**6).min(axis=0)
                gaps.append(float(np.mean((bottom - top - 1)[above])))
    return touching, holed, float(np.mean(gaps))


def test_crowded_topology_has_more_touching_pairs_narrower_gaps_and_more_holes() -> None:
    nominal, crowded = _topology_counts(SheetTopology()), _topology_counts(SheetTopology.crowded())
    assert crowded[0] > 1.5 * nominal[0]
    assert crowded[1] > 2 * nominal[1]
    assert crowded[2] < 0.6 * nominal[2]


def test_default_topology_is_the_nominal_generator() -> None:
    a = synthesize_case((24, 30, 28), np.random.default_rng(4))
    b = synthesize_case((24, 30, 28), np.random.default_rng(4), topology=SheetTopology(0.15, (5.0, 16.0), 0.4, 3))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"touch_rate": 2.0}, "touch_rate must be in [0, 1]"),
        ({"hole_rate": -1.0}, "hole_rate must be in [0, 1]"),
        ({"gap": (-1.0, 3.0)}, "gap must be (min, max)"),
        ({"max_holes": 0}, "max_holes must be >= 1"),
    ],
)
def test_sheet_topology_rejects_bad_knobs(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        SheetTopology(**kwargs)


def test_cli_regime_and_knobs_reach_the_generator(tmp_path: Path) -> None:
    args = ["synth", "--cases", "2", "--test-cases", "0", "--shape", "24", "30", "28", "--quiet"]
    assert cli_main(args + ["--output", str(tmp_path / "n")]) == 0
    assert cli_main(args + ["--output", str(tmp_path / "c"), "--regime", "crowded", "--hole-rate", "1"]) == 0
    expected = synthesize_case(
        (24, 30, 28),
        np.random.default_rng([0, 0, 0]),
        ScrollStyle.for_scroll(read_ids_csv(tmp_path / "c" / "train.csv")[0].scroll_id, 0),
        topology=SheetTopology(touch_rate=0.5, gap=(1.5, 6.0), hole_rate=1.0, max_holes=5),
    )
    first = read_ids_csv(tmp_path / "c" / "train.csv")[0].id
    assert np.array_equal(tifffile.imread(tmp_path / "c" / "train_labels" / f"{first}.tif"), expected.label)
    assert not np.array_equal(tifffile.imread(tmp_path / "n" / "train_labels" / f"{first}.tif"), expected.label)


def test_image_sheets_brighter_but_not_thresholdable(cases_64: list) -> None:
    for case in cases_64:
        fg = case.image[case.label == 1].astype(float)
        bg = case.image[case.label == 0].astype(float)
        assert fg.mean() - bg.mean() > 30  # learnable: sheets stand out on average
        # no single threshold separates them: the best balanced accuracy stays clearly below 1
        best = max(((fg >= t).mean() + (bg < t).mean()) / 2 for t in range(0, 256, 4))
        assert best < 0.97


def test_scroll_styles_differ_between_scrolls_and_repeat_for_one() -> None:
    assert ScrollStyle.for_scroll("34117") == ScrollStyle.for_scroll(34117)
    a, b = ScrollStyle.for_scroll("34117"), ScrollStyle.for_scroll("35360")
    assert a.background != b.background and a.contrast != b.contrast


def test_several_scrolls_with_unequal_counts() -> None:
    counts = scroll_counts(12)
    assert sum(counts.values()) == 12 and len(counts) >= 3
    assert len(set(counts.values())) > 1 and min(counts.values()) >= 1
    train, _ = plan_rows(12, 0, seed=0)
    assert sorted(r.scroll_id for r in train) == sorted(s for s, c in counts.items() for _ in range(c))


def test_ids_from_real_csv_reuses_first_rows(real_train_csv: Path) -> None:
    real = _rows(real_train_csv)
    train, test = plan_rows(20, 3, seed=0, ids_from=real_train_csv)
    assert [(r.id, r.scroll_id) for r in train] == [(r["id"], r["scroll_id"]) for r in real[:20]]
    assert not {r.id for r in test} & {r["id"] for r in real}


def test_ids_from_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,scroll\n1,2\n")
    with pytest.raises(KaggleCSVError, match=r"missing column\(s\) scroll_id"):
        read_ids_csv(bad)
    dup = tmp_path / "dup.csv"
    dup.write_text("id,scroll_id\n1,2\n1,3\n")
    with pytest.raises(KaggleCSVError, match="line 3: duplicate id 1"):
        read_ids_csv(dup)
    empty = tmp_path / "empty.csv"
    empty.write_text("id,scroll_id\n,2\n")
    with pytest.raises(KaggleCSVError, match="line 2: empty id"):
        read_ids_csv(empty)
    with pytest.raises(SynthError, match="has 2 rows but --cases 5"):
        plan_rows(5, 0, 0, ids_from=_two_rows(tmp_path))
    with pytest.raises(KaggleCSVError, match="no such CSV"):
        read_ids_csv(tmp_path / "nope.csv")


def _two_rows(tmp_path: Path) -> Path:
    p = tmp_path / "two.csv"
    p.write_text("id,scroll_id\n11,1\n12,1\n")
    return p


def test_cli_writes_dataset_and_refuses_non_empty_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "d"
    args = ["synth", "--output", str(out), "--cases", "3", "--test-cases", "1", "--shape", "16", "18", "20", "--quiet"]
    assert cli_main(args) == 0
    assert "wrote 3 training and 1 test cases" in capsys.readouterr().out
    assert tifffile.imread(next((out / "test_labels").iterdir())).shape == (16, 18, 20)
    before = (out / "train.csv").read_text()

    assert cli_main(args + ["--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert f"--output {out} is not empty" in err and "--overwrite" in err
    assert (out / "train.csv").read_text() == before  # untouched

    assert cli_main(args + ["--seed", "3", "--overwrite"]) == 0
    assert (out / "train.csv").read_text() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no temporary or old folder left


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--cases", "0"], "--cases must be >= 1"),
        (["--test-cases", "-1"], "--test-cases must be >= 0"),
        (["--shape", "8", "32", "32"], "--shape must be three sizes >= 10"),
        (["-np", "0"], "-np must be >= 1"),
        (["--ids-from", "/nonexistent/train.csv"], "no such CSV file"),
        (["--touch-rate", "1.5"], "--touch-rate: touch_rate must be in [0, 1], got 1.5"),
        (["--hole-rate", "-0.1"], "--hole-rate: hole_rate must be in [0, 1], got -0.1"),
        (["--gap", "6", "2"], "--gap: gap must be (min, max) with 0 <= min <= max voxels, got (6.0, 2.0)"),
        (["--max-holes", "0"], "--max-holes: max_holes must be >= 1, got 0"),
    ],
)
def test_cli_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str) -> None:
    out = tmp_path / "d"
    assert cli_main(["synth", "--output", str(out), "--quiet", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_cli_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    assert cli_main(["synth", "--output", str(f), "--quiet"]) == 2
    assert f"--output {f} is a file; give a folder" in capsys.readouterr().err
