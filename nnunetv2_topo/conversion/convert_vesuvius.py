"""``nnUNetv2_convert_vesuvius``: turn the Kaggle Vesuvius surface-detection folder into an nnU-Net raw dataset.

Writes ``$nnUNet_raw/Dataset{N:03d}_{name}/`` with ``imagesTr/<id>_0000.tif``, ``labelsTr/<id>.tif``,
``imagesTs/<id>_0000.tif``, a spacing sidecar ``<id>.json`` next to every image and label (the name Tiff3DIO looks
for), ``dataset.json`` (ignore label 2, Tiff3DIO) and ``splits_final.json``. The TIFFs are hard-linked by default.
The dataset is built in a hidden sibling folder and renamed into place only when complete.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from nnunetv2_topo import LABELS
from nnunetv2_topo.cli.arguments import add_processes_argument, arg_values
from nnunetv2_topo.conversion.case_checks import (
    VERIFY_MODES,
    CaseResult,
    ConversionError,
    check_case,
    find_tiff,
    nbytes,
)
from nnunetv2_topo.conversion.splits import (
    DEFAULT_SEED,
    SPLIT_MODES,
    SplitError,
    describe_splits,
    make_splits,
    save_splits,
)
from nnunetv2_topo.errors import EXIT_USER_ERROR, TopoError, describe_os_error
from nnunetv2_topo.ids_csv import KaggleCSVError, read_ids_csv
from nnunetv2_topo.io import staged_directory
from nnunetv2_topo.machine import cpu_cores

PROG = "nnUNetv2_convert_vesuvius"
SPACING = {"spacing": [1.0, 1.0, 1.0]}
LINK_FALLBACK_ERRNOS = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES}


@dataclass
class Inputs:
    """What a Kaggle folder holds: cases with both files, and ids listed without files."""

    train: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # id -> (image, label)
    test: dict[str, Path] = field(default_factory=dict)
    scroll_of: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # human-readable reasons


def _read_csv(path: Path) -> list[tuple[str, str]]:
    try:
        return [(r.id, r.scroll_id) for r in read_ids_csv(path)]
    except KaggleCSVError as exc:
        raise ConversionError(str(exc)) from None


def scan_input(root: Path) -> Inputs:
    """Read train.csv/test.csv and match ids to files; missing folders or columns are errors, missing files not."""
    if not root.is_dir():
        raise ConversionError(f"{root}: no such folder; pass the unzipped Kaggle competition folder as --input")
    for name in ("train.csv", "train_images", "train_labels"):
        if not (root / name).exists():
            raise ConversionError(
                f"{root / name}: missing; --input must be the Kaggle folder holding train.csv, train_images/ "
                "and train_labels/ (e.g. the unzipped vesuvius-challenge-surface-detection download)"
            )
    inputs = Inputs()
    for case, scroll in _read_csv(root / "train.csv"):
        image = find_tiff(root / "train_images", case)
        label = find_tiff(root / "train_labels", case)
        if image is None or label is None:
            what = "image and label" if image is None and label is None else "image" if image is None else "label"
            inputs.skipped.append(f"train id {case}: no {what} file")
            continue
        inputs.train[case] = (image, label)
        inputs.scroll_of[case] = scroll
    if (root / "test.csv").is_file():
        if not (root / "test_images").is_dir():
            raise ConversionError(f"{root / 'test_images'}: missing but test.csv lists test ids; add the folder")
        for case, _ in _read_csv(root / "test.csv"):
            image = find_tiff(root / "test_images", case)
            if image is None:
                inputs.skipped.append(f"test id {case}: no image file")
            else:
                inputs.test[case] = image
    if not inputs.train:
        raise ConversionError(
            f"{root / 'train.csv'}: none of its ids has both {root / 'train_images'}/<id>.tif and "
            f"{root / 'train_labels'}/<id>.tif; check that the images and labels were unzipped there"
        )
    return inputs


def _env_folder(var: str, required: bool) -> Path | None:
    value = os.environ.get(var)
    if not value:
        if required:
            raise ConversionError(
                f"environment variable {var} is not set; nnU-Net needs it: export {var}=/path/to/{var} "
                "(and likewise nnUNet_preprocessed and nnUNet_results)"
            )
        return None
    return Path(value)


def _check_target(raw: Path, dataset_id: int, name: str, overwrite: bool) -> Path:
    """The target folder; refuses an existing one (without --overwrite) and an id taken by another name."""
    folder = f"Dataset{dataset_id:03d}_{name}"
    prefix = f"Dataset{dataset_id:03d}_"
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        base = _env_folder(var, required=False)
        if base is None or not base.is_dir():
            continue
        for p in sorted(base.iterdir()):
            if p.is_dir() and p.name.startswith(prefix) and p.name != folder:
                raise ConversionError(
                    f"dataset id {dataset_id} is already used by {p} ({var}); nnU-Net could not tell which dataset "
                    f"-d {dataset_id} means: choose another --dataset-id or remove that folder"
                )
    target = raw / folder
    if target.exists() and not overwrite:
        raise ConversionError(
            f"{target}: already exists; pass --overwrite to replace it (then rerun nnUNetv2_plan_and_preprocess) "
            "or choose another --dataset-id/--name"
        )
    return target


def _place(src: Path, dst: Path, mode: str) -> str:
    """Hard-link ``src`` to ``dst`` (copy where links are impossible, e.g. across file systems) or copy it."""
    if mode == "link":
        try:
            os.link(src, dst)
            return "link"
        except OSError as exc:
            if exc.errno not in LINK_FALLBACK_ERRNOS:
                raise
    shutil.copyfile(src, dst)
    return "copy"


def _write_sidecar(path: Path) -> None:
    path.write_text(json.dumps(SPACING))


def _convert_case(task: tuple[str, str, str, str | None, str, bool, str]) -> CaseResult:
    """Worker: check one case, then link/copy it into the temporary dataset with its spacing sidecars."""
    kind, case, image, label, tmp, full, mode = task
    image_p, label_p = Path(image), Path(label) if label else None
    csv_name = "train.csv" if kind == "train" else "test.csv"
    result = CaseResult(case, check_case(case, image_p, label_p, csv_name, full))
    if result.problems:
        return result
    images_dir = Path(tmp) / ("imagesTr" if kind == "train" else "imagesTs")
    methods = {_place(image_p, images_dir / f"{case}_0000.tif", mode)}
    _write_sidecar(images_dir / f"{case}.json")
    if label_p is not None:
        methods.add(_place(label_p, Path(tmp) / "labelsTr" / f"{case}.tif", mode))
        _write_sidecar(Path(tmp) / "labelsTr" / f"{case}.json")
    result.method = "copy" if "copy" in methods else "link"
    result.nbytes = nbytes(image_p, label_p)
    return result


def _run_tasks(tasks: list[tuple], num_processes: int, progress: bool) -> list[CaseResult]:
    results: list[CaseResult] = []
    with tqdm(total=len(tasks), desc="checking and placing cases", disable=not progress, file=sys.stdout) as bar:
        if num_processes > 1 and len(tasks) > 1:
            with get_context("spawn").Pool(min(num_processes, len(tasks))) as pool:
                for r in pool.imap_unordered(_convert_case, tasks, chunksize=1):
                    results.append(r)
                    bar.update()
        else:
            for t in tasks:
                results.append(_convert_case(t))
                bar.update()
    return results


@dataclass
class Summary:
    target: Path
    num_train: int
    num_test: int
    skipped: list[str]
    methods: dict[str, int]
    nbytes: int
    seconds: float
    splits_files: list[Path]


def _check_options(dataset_id: int, name: str, mode: str, split: str, verify: str, num_processes: int) -> None:
    if not 1 <= dataset_id <= 999:
        raise ConversionError(f"--dataset-id must be between 1 and 999 (nnU-Net uses 3 digits), got {dataset_id}")
    if not name or any(c in name for c in "/\\ \t") or name.startswith("."):
        raise ConversionError(f"--name {name!r} is not a valid folder name; use letters, digits, '-' or '_'")
    if mode not in ("link", "copy"):
        raise ConversionError(f"--mode must be link or copy, got {mode!r}")
    if split not in SPLIT_MODES:
        raise ConversionError(f"--split must be one of {', '.join(SPLIT_MODES)}, got {split!r}")
    if verify not in VERIFY_MODES:
        raise ConversionError(f"--verify must be one of {', '.join(VERIFY_MODES)}, got {verify!r}")
    if num_processes < 1:
        raise ConversionError(f"-np must be >= 1, got {num_processes}")


def _place_cases(
    inputs: Inputs,
    staging: Path,
    input_dir: str | os.PathLike,
    mode: str,
    full: bool,
    num_processes: int,
    progress: bool,
) -> list[CaseResult]:
    """Check every case and place it in ``staging``; any problem aborts with all of them listed."""
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (staging / sub).mkdir()
    tasks: list[tuple[str, str, str, str | None, str, bool, str]]
    tasks = [("train", c, str(i), str(lb), str(staging), full, mode) for c, (i, lb) in inputs.train.items()]
    tasks += [("test", c, str(i), None, str(staging), full, mode) for c, i in inputs.test.items()]
    results = _run_tasks(tasks, num_processes, progress)
    problems = [p for r in sorted(results, key=lambda r: r.case) for p in r.problems]
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ConversionError(f"{len(problems)} problem(s) in {input_dir}; nothing was written:\n  {shown}{more}")
    return results


def _write_dataset_json(staging: Path, dataset_name: str, num_training: int) -> None:
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    generate_dataset_json(
        str(staging),
        channel_names={"0": "CT"},
        labels=LABELS,
        num_training_cases=num_training,
        file_ending=".tif",
        dataset_name=dataset_name,
        description="Vesuvius Challenge surface detection: papyrus recto surfaces in scroll CT; "
        "label 2 = unlabeled (ignored in training)",
        reference="https://www.kaggle.com/competitions/vesuvius-challenge-surface-detection",
        overwrite_image_reader_writer="Tiff3DIO",
        license="Vesuvius Challenge competition data terms (see reference)",
        converted_by=PROG,
    )


def convert(
    input_dir: str | os.PathLike,
    dataset_id: int,
    name: str = "Vesuvius",
    mode: str = "link",
    split: str = "stratified",
    folds: int = 5,
    num_processes: int = 1,
    overwrite: bool = False,
    verify: str = "full",
    seed: int = DEFAULT_SEED,
    progress: bool = True,
) -> Summary:
    """Convert a Kaggle Vesuvius folder into ``$nnUNet_raw/Dataset{id:03d}_{name}``; see the module docstring."""
    t0 = time.perf_counter()
    _check_options(dataset_id, name, mode, split, verify, num_processes)
    raw = _env_folder("nnUNet_raw", required=True)
    assert raw is not None  # required: _env_folder raised otherwise
    target = _check_target(raw, dataset_id, name, overwrite)
    inputs = scan_input(Path(input_dir))
    splits = None
    if split != "none":
        try:
            splits = make_splits(inputs.scroll_of, split, folds, seed)
        except SplitError as exc:
            raise ConversionError(str(exc)) from None

    with staged_directory(target) as staging:
        results = _place_cases(inputs, staging, input_dir, mode, verify == "full", num_processes, progress)
        _write_dataset_json(staging, target.name, len(inputs.train))
        if splits is not None:  # nnU-Net's planner copies this to nnUNet_preprocessed if none is there
            save_splits(staging / "splits_final.json", splits)

    split_files = [target / "splits_final.json"] if splits is not None else []
    pre = _env_folder("nnUNet_preprocessed", required=False)
    if splits is not None and pre is not None:
        save_splits(pre / target.name / "splits_final.json", splits)
        split_files.append(pre / target.name / "splits_final.json")
    methods: dict[str, int] = {}
    for r in results:
        methods[r.method] = methods.get(r.method, 0) + 1
    summary = Summary(
        target=target,
        num_train=len(inputs.train),
        num_test=len(inputs.test),
        skipped=inputs.skipped,
        methods=methods,
        nbytes=sum(r.nbytes for r in results),
        seconds=time.perf_counter() - t0,
        splits_files=split_files,
    )
    if progress and splits is not None:
        print(f"{split} splits ({folds} folds):\n{describe_splits(splits, inputs.scroll_of)}")
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  export nnUNet_raw=$PWD/nnUNet_raw nnUNet_preprocessed=$PWD/nnUNet_preprocessed "
        "nnUNet_results=$PWD/nnUNet_results\n  nnUNetv2_convert_vesuvius --input vesuvius-challenge-surface-detection "
        "--dataset-id 100\n  nnUNetv2_plan_and_preprocess -d 100 -c 3d_fullres --verify_dataset_integrity",
    )
    p.add_argument("--input", required=True, help="Kaggle folder with train.csv, train_images/, train_labels/, ...")
    p.add_argument("--dataset-id", type=int, required=True, help="nnU-Net dataset id N (1-999)")
    p.add_argument("--name", default="Vesuvius", help="dataset name: Dataset{N:03d}_{name} (default: %(default)s)")
    p.add_argument(
        "--mode",
        choices=("link", "copy"),
        default="link",
        help="link: hard-link the TIFFs (no extra disk; copies where links are impossible, e.g. across file "
        "systems); copy: independent copies (default: %(default)s)",
    )
    p.add_argument(
        "--split",
        choices=SPLIT_MODES,
        default="stratified",
        help="splits_final.json: stratified = each scroll in proportion in every fold; by-scroll = whole scrolls "
        "per fold (unseen-scroll validation); none = let nnU-Net make a random split (default: %(default)s)",
    )
    p.add_argument("--folds", type=int, default=5, help="number of cross-validation folds (default: %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the stratified split (default: %(default)s)")
    p.add_argument(
        "--verify",
        choices=VERIFY_MODES,
        default="full",
        help="full: decode every volume (catches bad label values, corrupt data); header: shapes and dtypes "
        "from the TIFF headers only, much faster (default: %(default)s)",
    )
    add_processes_argument(
        p, "worker processes for checking and placing cases (default: min(8, CPUs))", default=min(8, cpu_cores())
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing Dataset{N:03d}_{name}")
    p.add_argument("--quiet", action="store_true", help="no progress bar or split table")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        names = ("name", "mode", "split", "folds", "num_processes", "overwrite", "verify", "seed")
        s = convert(args.input, args.dataset_id, progress=not args.quiet, **arg_values(args, *names))
    except TopoError as exc:  # ConversionError, SplitError, KaggleCSVError, VolumeError
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # a read-only or full nnUNet_raw, permissions
        print(f"{PROG}: error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    placed = ", ".join(f"{n} {'hard-linked' if m == 'link' else 'copied'}" for m, n in sorted(s.methods.items()))
    print(
        f"wrote {s.target}: {s.num_train} training, {s.num_test} test cases ({placed}; "
        f"{s.nbytes / 1e6:.0f} MB in {s.seconds:.1f} s)"
    )
    if s.skipped:
        shown = "\n  ".join(s.skipped[:10]) + (f"\n  ... and {len(s.skipped) - 10} more" if len(s.skipped) > 10 else "")
        print(f"skipped {len(s.skipped)} id(s) listed without files:\n  {shown}")
    for f in s.splits_files:
        print(f"splits: {f}")
    print(f"next: nnUNetv2_plan_and_preprocess -d {int(s.target.name[7:10])} -c 3d_fullres --verify_dataset_integrity")
    return 0


if __name__ == "__main__":
    sys.exit(main())
