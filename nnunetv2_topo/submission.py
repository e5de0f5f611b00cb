"""Write a Kaggle ``submission.zip``: one ``<id>.tif`` per id of test.csv, uint8 0/1, shaped like its test image.

Two routes: binary predictions (:func:`write_submission`) or probability maps of one or several models, fused and
post-processed (:func:`write_submission_from_probabilities`). Ids and files are checked before anything is
written; the zip is written to a temporary name, one volume at a time, and renamed only when every volume passed.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.io import TIFF_SUFFIXES, VolumeError, atomic_path, case_id, is_volume_file, read_volume
from nnunetv2_topo.kaggle_csv import KaggleCSVError, read_ids_csv

if TYPE_CHECKING:
    from nnunetv2_topo.postprocessing import FusionSpec, PostprocessConfig


class SubmissionError(TopoError, ValueError):
    """The submission cannot be written as asked; the message names the id/file and the fix."""


def read_test_ids(csv_path: str | os.PathLike) -> list[str]:
    """The ``id`` column of test.csv, in order (checked for the column, empty and duplicate ids)."""
    try:
        ids = [row.id for row in read_ids_csv(csv_path, columns=("id",))]
    except KaggleCSVError as exc:
        raise SubmissionError(str(exc)) from None
    if not ids:
        raise SubmissionError(f"{csv_path}: no ids listed")
    return ids


def _index(folder: Path, role: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise SubmissionError(f"{role} folder {folder} does not exist")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and is_volume_file(p):
            if case_id(p) in out:
                raise SubmissionError(f"{role} folder {folder} holds two files for id {case_id(p)}; keep one")
            out[case_id(p)] = p
    return out


def _image_shape(path: Path) -> tuple[int, ...]:
    if path.name.lower().endswith(TIFF_SUFFIXES):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                return tuple(tif.series[0].shape)
        except Exception as exc:  # corrupt file: report through read_volume's wording
            raise SubmissionError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from exc
    return read_volume(path).shape


def _binary(volume: np.ndarray, cid: str, path: Path, binarize: bool) -> np.ndarray:
    if binarize:
        from nnunetv2_topo.postprocessing import binarize as to_mask

        return to_mask(volume).astype(np.uint8)
    values = np.unique(volume)
    if not np.isin(values, (0, 1)).all():
        shown = ", ".join(str(v) for v in values[:6]) + (" …" if values.size > 6 else "")
        raise SubmissionError(
            f"id {cid}: {path.name} is not binary (values {shown}); pass --binarize to map non-zero "
            "(floats: > 0.5) to 1, or post-process it first"
        )
    return volume.astype(np.uint8)


def check_ids(csv_ids: Sequence[str], available, csv_path, kind: str = "prediction", where: str = "") -> None:
    """Refuse (:class:`SubmissionError`) unless the cases ``available`` (ids: a mapping or a sequence) are exactly
    the ids of ``csv_path``; one message lists both the missing and the extra ones (first 10 of each).
    ``kind`` names what a case is ("prediction", "input volume"), ``where`` the folder(s) they came from."""
    available = set(available)
    missing = [i for i in csv_ids if i not in available]
    extra = sorted(available - set(csv_ids))
    if not missing and not extra:
        return
    place = f" in {where}" if where else ""
    parts = []
    if missing:
        parts.append(f"no {kind}{place} for {len(missing)} test id(s) of {csv_path}: {', '.join(missing[:10])}")
    if extra:
        parts.append(f"{len(extra)} {kind}(s){place} not in {csv_path}: {', '.join(extra[:10])}")
    raise SubmissionError("; ".join(parts) + "; use the test folder and test.csv of the same competition")


def _check_shape(cid: str, volume: np.ndarray, source: Path, image: Path) -> None:
    want = _image_shape(image)
    if volume.shape != want:
        raise SubmissionError(
            f"id {cid}: prediction {source.name} has shape {volume.shape}, the test image {image.name} has {want}"
        )


def _write_zip(ids: list[str], produce: Callable[[str], np.ndarray], out_zip: str | os.PathLike) -> Path:
    """Write ``<id>.tif`` for every id, each made by ``produce(id)`` when its turn comes (one case in memory)."""
    from tqdm import tqdm

    bar = tqdm(ids, desc="submission", unit="case", disable=len(ids) < 2)
    return write_volumes_zip(out_zip, ids, ((cid, produce(cid)) for cid in bar))


def write_submission(
    pred_dir: str | os.PathLike,
    images_dir: str | os.PathLike,
    csv_path: str | os.PathLike,
    out_zip: str | os.PathLike,
    binarize: bool = False,
) -> Path:
    """Check every binary prediction against test.csv and the test images, then write ``out_zip``; returns its path.

    Refuses (:class:`SubmissionError`) on a missing id, an extra prediction, a shape that differs from the test
    image, or non-binary values (unless ``binarize``). Ids and files are checked before anything is written;
    shapes and values as each volume is read (a failure leaves no zip behind).
    """
    ids = read_test_ids(csv_path)
    preds = _index(Path(pred_dir), "prediction")
    images = _index(Path(images_dir), "test image")
    check_ids(ids, preds, csv_path, where=str(pred_dir))
    _check_images(ids, images, images_dir)

    def produce(cid: str) -> np.ndarray:
        try:
            volume = read_volume(preds[cid])
        except VolumeError as exc:
            raise SubmissionError(f"id {cid}: {exc}") from exc
        _check_shape(cid, volume, preds[cid], images[cid])
        return _binary(volume, cid, preds[cid], binarize)

    return _write_zip(ids, produce, out_zip)


def _check_images(ids: list[str], images: dict[str, Path], images_dir) -> None:
    no_image = [i for i in ids if i not in images]
    if no_image:
        raise SubmissionError(f"no test image in {images_dir} for id(s): {', '.join(no_image[:10])}")


def write_submission_from_probabilities(
    inputs: Sequence[str | os.PathLike],
    images_dir: str | os.PathLike,
    csv_path: str | os.PathLike,
    out_zip: str | os.PathLike,
    steps: PostprocessConfig | None = None,
    fusion: FusionSpec | None = None,
) -> Path:
    """Fuse the inputs' probabilities per test id, post-process with ``steps``, check and write ``out_zip``.

    ``inputs``: one folder (or nnU-Net model folder) per model, paired by case id (see
    :func:`nnunetv2_topo.inference.paired_cases`); ``fusion``: mode and weights (default: equal-weight logit).
    """
    from nnunetv2_topo.inference import ProbabilityError, fused_probability, paired_cases
    from nnunetv2_topo.postprocessing import FusionSpec, PostprocessConfig, postprocess_volume

    steps = steps if steps is not None else PostprocessConfig()
    fusion = fusion if fusion is not None else FusionSpec()
    ids = read_test_ids(csv_path)
    try:
        cases = paired_cases(inputs)
    except ProbabilityError as exc:
        raise SubmissionError(str(exc)) from exc
    check_ids(ids, cases, csv_path, where=", ".join(str(p) for p in inputs))
    images = _index(Path(images_dir), "test image")
    _check_images(ids, images, images_dir)

    def produce(cid: str) -> np.ndarray:
        try:
            probability = fused_probability(cases[cid], fusion.weights, fusion.mode)
        except ProbabilityError as exc:
            raise SubmissionError(f"id {cid}: {exc}") from exc
        _check_shape(cid, probability, cases[cid][0], images[cid])
        return postprocess_volume(probability, steps)

    return _write_zip(ids, produce, out_zip)


def write_volumes_zip(
    out_zip: str | os.PathLike, ids: Sequence[str], volumes: Iterable[tuple[str, np.ndarray]]
) -> Path:
    """Stream ``(id, volume)`` pairs into a submission zip, one LZW ``<id>.tif`` each; returns its path.

    Every volume must be uint8 with values 0/1 and its id one of ``ids``, given once; all ``ids`` must come.
    The zip is written to a temporary name and renamed at the end, so on any failure (here or in the code producing
    ``volumes``) nothing is left behind. Volumes are consumed one at a time: memory holds one case.
    """
    import tifffile

    expected = set(ids)
    written: set[str] = set()
    out = Path(out_zip)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for cid, volume in volumes:
            if cid not in expected:
                raise SubmissionError(f"id {cid} is not one of the submission's ids; remove it")
            if cid in written:
                raise SubmissionError(f"id {cid} given twice; keep one prediction per id")
            if volume.ndim != 3 or volume.dtype != np.uint8 or volume.max(initial=0) > 1:
                raise SubmissionError(
                    f"id {cid}: expected a 3-D uint8 volume of 0/1, got {volume.dtype} of shape {volume.shape} "
                    f"with maximum {volume.max(initial=0)}"
                )
            buf = io.BytesIO()
            tifffile.imwrite(buf, volume, compression="lzw", photometric="minisblack")
            zf.writestr(f"{cid}.tif", buf.getvalue())
            written.add(cid)
        missing = [i for i in ids if i not in written]
        if missing:
            raise SubmissionError(f"no volume for {len(missing)} id(s): {', '.join(missing[:10])}")
    return out
