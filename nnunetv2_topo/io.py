"""Reading and writing volumes: uint8 multi-page LZW TIFFs (the Kaggle layout) and NIfTI.

Every failure raises :class:`VolumeError` naming the file and what to do about it.
"""

from __future__ import annotations

import os
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
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tifffile.imwrite(tmp, volume, compression=compression, photometric="minisblack")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
