"""Checks on volumes where they enter a command, shared by the converter, ``evaluate``, ``tune``, ``postprocess`` and
``predict``: ground-truth label values, label maps given where segmentations or probabilities are expected, and test
images against the intensities the model was trained on.

Each check returns a problem fragment (``"label values 3, 255 outside {0, 1, 2} ..."``) or None; the caller adds the
file or case and raises its own error, so one wording serves every command.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from nnunetv2_topo import IGNORE_LABEL
from nnunetv2_topo.io import TIFF_SUFFIXES, is_volume_file, read_volume, tiff_header

__all__ = [
    "VALID_LABELS",
    "TrainingIntensities",
    "distinct_values",
    "dtype_fits",
    "intensity_problem",
    "label_map_problem",
    "label_value_problem",
    "range_problem",
    "test_image_problems",
    "training_intensities",
]

VALID_LABELS = (0, 1, IGNORE_LABEL)
LABEL_MEANING = "0 background, 1 surface, 2 unlabeled"
INTENSITY_FILES = ("dataset_fingerprint.json", "plans.json")


def _show(values: Iterable, limit: int = 8) -> str:
    values = [v.item() if hasattr(v, "item") else v for v in values]
    return ", ".join(map(str, values[:limit])) + (", ..." if len(values) > limit else "")


def distinct_values(volume: np.ndarray) -> np.ndarray:
    """The sorted distinct values of an integer/bool volume (a presence table for small non-negative ranges: ~3x
    faster than ``np.bincount`` on uint8), or of any other volume via ``np.unique``."""
    volume = np.asarray(volume)
    if volume.dtype == bool:
        volume = volume.view(np.uint8)
    if np.issubdtype(volume.dtype, np.integer) and volume.size:
        lo, hi = int(volume.min()), int(volume.max())
        if lo >= 0 and hi < 1 << 16:
            present = np.zeros(hi + 1, bool)
            present[volume.ravel()] = True
            return np.flatnonzero(present).astype(volume.dtype)
    return np.unique(volume)


def _is_integer(volume: np.ndarray) -> bool:
    return volume.dtype == bool or np.issubdtype(volume.dtype, np.integer)


def label_value_problem(labels: np.ndarray) -> str | None:
    """Ground-truth labels must be integers in {0, 1, 2}; the problem, or None. (Valid labels cost a min and a max:
    ~2 ms for 320^3 uint8.)"""
    labels = np.asarray(labels)
    if labels.size == 0:
        return None
    if _is_integer(labels):
        if int(labels.min()) >= 0 and int(labels.max()) <= max(VALID_LABELS):
            return None
        bad = [v for v in distinct_values(labels) if int(v) not in VALID_LABELS]
        return f"label values {_show(bad)} outside {{0, 1, 2}} ({LABEL_MEANING})"
    values = distinct_values(labels)
    if not np.all(np.isin(values, VALID_LABELS)):
        return f"{labels.dtype} labels with values {_show(values)}; expected integers in {{0, 1, 2}}"
    return None


def label_map_problem(volume: np.ndarray) -> str | None:
    """An integer volume given where a segmentation (or a probability map) is expected must be a binary mask:
    0/1, or 0 and one other value. A map that holds the ignore label 2 beside 1 (ground truth, not a prediction) or
    more than two values is refused: counting 2 or 255 as foreground would be silently wrong."""
    volume = np.asarray(volume)
    if not _is_integer(volume) or volume.size == 0:
        return None
    lo, hi = int(volume.min()), int(volume.max())
    if lo >= 0 and hi <= 1:
        return None
    if lo >= 0 and hi == IGNORE_LABEL:
        ints = {0, 2} | ({1} if bool((volume == 1).any()) else set())
    else:
        ints = {int(v) for v in distinct_values(volume)}
    shown = _show(sorted(ints))
    if IGNORE_LABEL in ints and ints <= set(VALID_LABELS) and 1 in ints:
        return (
            f"values {shown}: a label map with the ignore label {IGNORE_LABEL} ({LABEL_MEANING}), not a "
            "prediction; pass predicted segmentations or probability maps (ground truth goes to --gt)"
        )
    if len(ints) > 2:
        return (
            f"{len(ints)} distinct values ({shown}); expected a binary segmentation (0/1) or float probabilities "
            "in [0, 1]"
        )
    return None


@dataclass(frozen=True)
class TrainingIntensities:
    """The foreground intensity range of a model's training images (nnU-Net's dataset fingerprint)."""

    low: float
    high: float
    source: Path

    @property
    def margin(self) -> float:
        return 0.5 * max(self.high - self.low, 1.0)


def training_intensities(model_folder: str | os.PathLike) -> TrainingIntensities | None:
    """From ``dataset_fingerprint.json`` (nnU-Net copies it into the model folder) or else ``plans.json`` of a
    trained-model folder (or an nnU-Net preprocessed folder): channel 0's foreground min and max; None if neither
    file holds them."""
    for name in INTENSITY_FILES:
        path = Path(model_folder) / name
        if not path.is_file():
            continue
        try:
            props = json.loads(path.read_text())["foreground_intensity_properties_per_channel"]["0"]
            low, high = float(props["min"]), float(props["max"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if np.isfinite(low) and np.isfinite(high) and low <= high:
            return TrainingIntensities(low, high, path)
    return None


def intensity_problem(dtype: npt.DTypeLike, low: float, high: float, train: TrainingIntensities) -> str | None:
    """A test image whose values leave the training range by more than half its width; the problem, or None."""
    if low >= train.low - train.margin and high <= train.high + train.margin:
        return None
    return (
        f"{np.dtype(dtype)} image with values [{low:.6g}, {high:.6g}], the model was trained on foreground "
        f"intensities [{train.low:.6g}, {train.high:.6g}] ({train.source}); rescale it to the training data's range "
        "(the Kaggle images are uint8, 0-255)"
    )


def dtype_fits(dtype, trains: Iterable[TrainingIntensities | None]) -> bool:
    """True when no value of the integer ``dtype`` can leave any training range (uint8 under a model trained on
    0-255): the image need not be read to check it."""
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.integer):
        return False
    info = np.iinfo(dtype)
    return all(intensity_problem(dtype, info.min, info.max, t) is None for t in trains if t is not None)


def range_problem(dtype, low: float, high: float, trains: Iterable[TrainingIntensities | None]) -> str | None:
    """The first training range that ``[low, high]`` leaves (see :func:`intensity_problem`), or None."""
    for t in trains:
        problem = None if t is None else intensity_problem(dtype, low, high, t)
        if problem:
            return problem
    return None


def test_image_problems(
    images: Iterable[tuple[str, str | os.PathLike]], trains: Iterable[TrainingIntensities | None]
) -> list[str]:
    """``"case <id>: <problem>"`` for each test image outside a model's training intensities. A uint8 TIFF is
    taken as it is from its header (the training data is uint8); other images are read to find their range. Paths
    that are not TIFF/NIfTI files are skipped."""
    known = [t for t in trains if t is not None]
    if not known:
        return []
    problems = []
    for cid, path in images:
        path = Path(path)
        if not is_volume_file(path):
            continue  # another input format (e.g. a Zarr store) is checked by its own reader
        is_uint8 = path.name.lower().endswith(TIFF_SUFFIXES) and tiff_header(path)[1] == np.uint8
        if is_uint8 and all(intensity_problem(np.uint8, 0, 255, t) is None for t in known):
            continue  # no uint8 image can leave these ranges
        volume = read_volume(path)
        low, high = float(np.nanmin(volume)), float(np.nanmax(volume))
        for t in known:
            problem = intensity_problem(volume.dtype, low, high, t)
            if problem:
                problems.append(f"case {cid} ({path.name}): {problem}")
                break
        del volume
    return problems
