"""Reading and writing volumes: uint8 multi-page LZW TIFFs (the Kaggle layout) and NIfTI.

Every failure raises :class:`VolumeError` naming the file and what to do about it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

TIFF_SUFFIXES = (".tif", ".tiff")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
VOLUME_SUFFIXES = TIFF_SUFFIXES + NIFTI_SUFFIXES


class VolumeError(ValueError):
    """A volume file that cannot be used; the message names the file and the fix."""


def case_id(path: str | os.PathLike) -> str:
    """The case id of a file: its name up to the first '.' (``1407735.tif`` -> ``1407735``)."""
    return Path(path).name.split(".", 1)[0]


def is_volume_file(path: str | os.PathLike) -> bool:
    name = Path(path).name.lower()
    return any(name.endswith(s) for s in VOLUME_SUFFIXES) and not name.startswith(".")


def read_volume(path: str | os.PathLike) -> np.ndarray:
    """Read a 3-D volume (TIFF pages = z, or NIfTI) as a numpy array in (Z, Y, X) order."""
    path = Path(path)
    name = path.name.lower()
    if not path.is_file():
        raise VolumeError(f"{path}: no such file")
    try:
        if name.endswith(TIFF_SUFFIXES):
            import tifffile

            arr = tifffile.imread(path)
        elif name.endswith(NIFTI_SUFFIXES):
            import SimpleITK as sitk

            arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        else:
            raise VolumeError(f"{path}: unsupported file type; use .tif/.tiff or .nii/.nii.gz")
    except VolumeError:
        raise
    except ValueError as exc:
        if "imagecodecs" in str(exc):
            raise VolumeError(
                f"{path}: this TIFF is LZW-compressed and needs the 'imagecodecs' package: pip install imagecodecs"
            ) from exc
        raise VolumeError(f"{path}: unreadable volume ({exc})") from exc
    except Exception as exc:  # tifffile/SimpleITK raise many types on corrupt files
        raise VolumeError(f"{path}: unreadable volume ({type(exc).__name__}: {exc})") from exc
    if arr.ndim != 3:
        raise VolumeError(f"{path}: expected a 3-D volume, got shape {tuple(arr.shape)}")
    return arr


def tiff_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a TIFF's first series without decoding its pixels."""
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise VolumeError(f"{path}: no such file")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return tuple(series.shape), np.dtype(series.dtype)
    except Exception as exc:  # tifffile raises many types on corrupt files
        raise VolumeError(f"{path}: unreadable TIFF ({type(exc).__name__}: {exc})") from exc


def volume_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """Shape of a volume file: from the header for TIFFs, by reading otherwise."""
    if Path(path).name.lower().endswith(TIFF_SUFFIXES):
        return tiff_header(path)[0]
    return tuple(read_volume(path).shape)


def index_volumes(folder: str | os.PathLike, role: str = "input") -> dict[str, Path]:
    """``{case id: path}`` of the volume files in ``folder`` (sorted by file name).

    Raises :class:`VolumeError` when the folder is missing or holds two files for one case id. ``role`` names the
    folder in the message ("prediction", "ground-truth", ...). An empty result is returned as is.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise VolumeError(f"{role} folder {folder} does not exist or is not a directory")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not is_volume_file(path):
            continue
        cid = case_id(path)
        if cid in found:
            raise VolumeError(
                f"{role} folder {folder} holds two files for case '{cid}': {found[cid].name} and {path.name}; keep one"
            )
        found[cid] = path
    return found


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write to; it replaces ``path`` only if the block succeeds.

    A failure (or Ctrl-C) removes the temporary file, so ``path`` is never left half-written.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Build a folder in a hidden sibling and swap it into ``target`` only if the block succeeds.

    An existing ``target`` is replaced as a whole (renamed aside, then deleted); on failure the partial folder is
    removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.rename(target, old)
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_tiff(path: str | os.PathLike, volume: np.ndarray, compression: str = "lzw") -> None:
    """Write a 3-D uint8 volume as a multi-page TIFF (one page per z-slice), LZW-compressed by default.

    The file is written to a temporary name first and renamed, so a failure never leaves a partial file.
    """
    import tifffile

    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise VolumeError(f"{path}: expected a 3-D volume to write, got shape {volume.shape}")
    if volume.dtype != np.uint8:
        raise VolumeError(f"{path}: expected uint8 data to write, got {volume.dtype}")
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, volume, compression=compression, photometric="minisblack")
