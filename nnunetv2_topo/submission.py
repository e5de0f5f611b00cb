"""Write a Kaggle ``submission.zip``: one ``<id>.tif`` per id of test.csv, uint8 0/1, shaped like its test image.

Every check runs before anything is written; the zip is written to a temporary name and renamed.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from nnunetv2_topo.io import TIFF_SUFFIXES, VolumeError, case_id, is_volume_file, read_volume
from nnunetv2_topo.kaggle_csv import KaggleCSVError, read_ids_csv


class SubmissionError(ValueError):
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


def write_submission(
    pred_dir: str | os.PathLike,
    images_dir: str | os.PathLike,
    csv_path: str | os.PathLike,
    out_zip: str | os.PathLike,
    binarize: bool = False,
) -> Path:
    """Check every prediction against test.csv and the test images, then write ``out_zip``; returns its path.

    Refuses (:class:`SubmissionError`) on a missing id, an extra prediction, a shape that differs from the test
    image, or non-binary values (unless ``binarize``).
    """
    ids = read_test_ids(csv_path)
    preds = _index(Path(pred_dir), "prediction")
    images = _index(Path(images_dir), "test image")
    missing = [i for i in ids if i not in preds]
    if missing:
        raise SubmissionError(f"no prediction in {pred_dir} for {len(missing)} test id(s): {', '.join(missing[:10])}")
    extra = sorted(set(preds) - set(ids))
    if extra:
        raise SubmissionError(
            f"{len(extra)} prediction(s) in {pred_dir} are not in {csv_path}: {', '.join(extra[:10])}; "
            "remove them or use the right test.csv"
        )
    no_image = [i for i in ids if i not in images]
    if no_image:
        raise SubmissionError(f"no test image in {images_dir} for id(s): {', '.join(no_image[:10])}")
    volumes: dict[str, np.ndarray] = {}
    for cid in ids:
        try:
            volume = read_volume(preds[cid])
        except VolumeError as exc:
            raise SubmissionError(f"id {cid}: {exc}") from exc
        want = _image_shape(images[cid])
        if volume.shape != want:
            raise SubmissionError(
                f"id {cid}: prediction {preds[cid].name} has shape {volume.shape}, the test image "
                f"{images[cid].name} has {want}"
            )
        volumes[cid] = _binary(volume, cid, preds[cid], binarize)
    return write_volumes_zip(out_zip, ids, ((cid, volumes[cid]) for cid in ids))


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
    tmp = out.with_name(f".{out.name}.partial")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
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
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
