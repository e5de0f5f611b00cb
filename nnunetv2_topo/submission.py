"""Write a Kaggle ``submission.zip``: one ``<id>.tif`` per id of test.csv, uint8 0/1, shaped like its test image.

:func:`write_submission` writes binary predictions; :func:`write_checked_submission` any per-id producer of 0/1
volumes (``submit --input`` fuses and post-processes probability maps into one, ``predict`` runs models). Ids and
files are checked before anything is written; the zip is written to a temporary name, one volume at a time, and
renamed only when every volume passed.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import tifffile
from tqdm import tqdm

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.ids_csv import KaggleCSVError, read_ids_csv
from nnunetv2_topo.io import TIFF_SUFFIXES, VolumeError, atomic_path, index_volumes, read_volume
from nnunetv2_topo.postprocessing import binarize as to_mask


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


def _image_shape(path: Path) -> tuple[int, ...]:
    if path.name.lower().endswith(TIFF_SUFFIXES):
        try:
            with tifffile.TiffFile(path) as tif:
                return tuple(tif.series[0].shape)
        except Exception as exc:  # corrupt file: report through read_volume's wording
            raise SubmissionError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from exc
    return read_volume(path).shape


def _binary(volume: np.ndarray, cid: str, path: Path, binarize: bool) -> np.ndarray:
    if binarize:
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


def write_checked_submission(
    csv_path: str | os.PathLike,
    images_dir: str | os.PathLike,
    out_zip: str | os.PathLike,
    sources: Mapping[str, Path],
    produce: Callable[[str], np.ndarray],
    where: str,
) -> Path:
    """Check the ids of ``sources`` (id -> the file a case comes from) against test.csv and the test images, then
    write ``out_zip`` from ``produce(id)`` (a uint8 0/1 volume, made when its turn comes: one case in memory),
    refusing a volume whose shape differs from its test image; returns the zip's path. ``where`` names the
    folder(s) the cases came from, for the messages."""
    ids = read_test_ids(csv_path)
    check_ids(ids, sources, csv_path, where=where)
    images = index_volumes(images_dir, "test image", SubmissionError)
    no_image = [i for i in ids if i not in images]
    if no_image:
        raise SubmissionError(f"no test image in {images_dir} for id(s): {', '.join(no_image[:10])}")

    def checked(cid: str) -> np.ndarray:
        volume = produce(cid)
        want = _image_shape(images[cid])
        if volume.shape != want:
            raise SubmissionError(
                f"id {cid}: prediction {sources[cid].name} has shape {volume.shape}, the test image "
                f"{images[cid].name} has {want}"
            )
        return volume

    bar = tqdm(ids, desc="submission", unit="case", disable=len(ids) < 2)
    return write_volumes_zip(out_zip, ids, ((cid, checked(cid)) for cid in bar))


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
    preds = index_volumes(pred_dir, "prediction", SubmissionError)

    def produce(cid: str) -> np.ndarray:
        try:
            volume = read_volume(preds[cid])
        except VolumeError as exc:
            raise SubmissionError(f"id {cid}: {exc}") from exc
        return _binary(volume, cid, preds[cid], binarize)

    return write_checked_submission(csv_path, images_dir, out_zip, preds, produce, str(pred_dir))


def write_volumes_zip(
    out_zip: str | os.PathLike, ids: Sequence[str], volumes: Iterable[tuple[str, np.ndarray]]
) -> Path:
    """Stream ``(id, volume)`` pairs into a submission zip, one LZW ``<id>.tif`` each; returns its path.

    Every volume must be uint8 with values 0/1 and its id one of ``ids``, given once; all ``ids`` must come.
    The zip is written to a temporary name and renamed at the end, so on any failure (here or in the code producing
    ``volumes``) nothing is left behind. Volumes are consumed one at a time: memory holds one case.
    """
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
