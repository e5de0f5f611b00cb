"""Checks on a Kaggle Vesuvius folder and on each of its volumes, with messages that name the file and the fix."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.input_checks import label_value_problem
from nnunetv2_topo.io import VolumeError, read_volume, tiff_header

VERIFY_MODES = ("full", "header")


class ConversionError(TopoError):
    """A user error: the message names the bad file/key/value and how to fix it."""


@dataclass
class CaseResult:
    """Outcome of checking (and placing) one case in a worker process."""

    case: str
    problems: list[str] = field(default_factory=list)
    method: str = ""  # "link" or "copy" once the files are placed
    nbytes: int = 0


def find_tiff(folder: Path, case: str) -> Path | None:
    """``folder/<case>.tif`` (or ``.tiff``) if it exists."""
    for suffix in (".tif", ".tiff"):
        p = folder / f"{case}{suffix}"
        if p.is_file():
            return p
    return None


def _fix(case: str, csv_name: str) -> str:
    return f"replace the file or remove id {case} from {csv_name}"


def check_volume(
    path: Path, case: str, csv_name: str, full: bool, problems: list[str]
) -> tuple[tuple[int, ...], np.ndarray | None] | None:
    """Shape (and, with ``full``, the decoded data) of a 3-D uint8 volume; a problem is appended otherwise."""
    try:
        if full:
            data = read_volume(path)
            shape, dtype = data.shape, data.dtype
        else:
            data = None
            shape, dtype = tiff_header(path)
    except VolumeError as exc:
        problems.append(f"{exc}; {_fix(case, csv_name)}")
        return None
    if len(shape) != 3:
        problems.append(
            f"{path}: expected a 3-D volume (a multi-page TIFF, one page per z-slice), got shape {shape}; "
            f"{_fix(case, csv_name)}"
        )
        return None
    if dtype != np.uint8:
        problems.append(
            f"{path}: dtype {dtype}, expected uint8 as in the Kaggle data; convert it to uint8 or "
            f"remove id {case} from {csv_name}"
        )
        return None
    return shape, data


def check_case(case: str, image: Path, label: Path | None, csv_name: str, full: bool) -> list[str]:
    """Problems with one case (empty list = fine): readable 3-D uint8 volumes, equal shapes, labels in {0, 1, 2}."""
    problems: list[str] = []
    img = check_volume(image, case, csv_name, full, problems)
    if label is None:
        return problems
    lab = check_volume(label, case, csv_name, full, problems)
    if img is None or lab is None:
        return problems
    if img[0] != lab[0]:
        problems.append(
            f"{label}: shape {lab[0]} differs from its image {image} {img[0]}; a label must have its image's "
            f"shape: {_fix(case, csv_name)}"
        )
    if lab[1] is not None:
        problem = label_value_problem(lab[1])
        if problem:
            problems.append(
                f"{label}: {problem}; remap them (binary 0/255 masks such as deprecated_train_labels are not "
                f"training labels) or remove id {case} from {csv_name}"
            )
    return problems


def nbytes(*paths: Path | None) -> int:
    return sum(os.path.getsize(p) for p in paths if p is not None)
