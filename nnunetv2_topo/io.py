"""Reading and writing volumes: uint8 multi-page LZW TIFFs (the Kaggle layout) and NIfTI.

Every failure raises :class:`VolumeError` naming the file and what to do about it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from nnunetv2_topo.errors import TopoError

TIFF_SUFFIXES = (".tif", ".tiff")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
VOLUME_SUFFIXES = TIFF_SUFFIXES + NIFTI_SUFFIXES


class VolumeError(TopoError, ValueError):
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
            with _open_tiff(path) as tif:
                arr = tif.asarray()
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
        raise VolumeError(
            f"{path}: expected a 3-D volume, got shape {tuple(arr.shape)} (a volume TIFF has one page per z-slice)"
        )
    return arr


@contextlib.contextmanager
def _open_tiff(path: Path):
    """``tifffile.TiffFile`` of ``path``, refused as truncated when its pages point past the end of the file or its
    shape record promises more pages than are there (tifffile alone reads a cut file as fewer pages)."""
    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL)  # its complaints about a cut file become our one message
    try:
        with tifffile.TiffFile(path) as tif:
            problem = _truncation(tif)
            if problem:
                raise VolumeError(f"{path}: truncated TIFF ({problem}); copy or write the file again")
            yield tif
    finally:
        log.setLevel(level)


def _truncation(tif) -> str | None:
    size = tif.filehandle.size
    for i, page in enumerate(tif.pages):
        ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=False)]
        if ends and max(ends) > size:
            return f"page {i + 1} needs {max(ends)} bytes, the file has {size}"
    shaped = tif.shaped_metadata
    if shaped and "shape" in shaped[0]:
        promised = tuple(int(s) for s in shaped[0]["shape"])
        if int(np.prod(promised)) != int(np.prod(tif.series[0].shape)):
            return f"its header promises shape {promised}, only {len(tif.pages)} page(s) are readable"
    return None


def tiff_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a TIFF's first series without decoding its pixels."""
    path = Path(path)
    if not path.is_file():
        raise VolumeError(f"{path}: no such file")
    try:
        with _open_tiff(path) as tif:
            series = tif.series[0]
            return tuple(series.shape), np.dtype(series.dtype)
    except VolumeError:
        raise
    except Exception as exc:  # tifffile raises many types on corrupt files
        raise VolumeError(f"{path}: unreadable TIFF ({type(exc).__name__}: {exc})") from exc


def volume_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """Shape of a volume file: from the header for TIFFs, by reading otherwise."""
    if Path(path).name.lower().endswith(TIFF_SUFFIXES):
        return tiff_header(path)[0]
    return tuple(read_volume(path).shape)


def index_volumes(
    folder: str | os.PathLike,
    role: str = "input",
    error: type[Exception] = VolumeError,
    required: bool = False,
) -> dict[str, Path]:
    """``{case id: path}`` of the volume files in ``folder`` (sorted by file name): the one way the package
    indexes a folder of volumes by case id.

    Raises ``error`` (default :class:`VolumeError`; a workflow passes its own error class) when the folder is
    missing or holds two files for one case id, and when it holds none if ``required``. ``role`` names the folder
    in the message ("prediction", "ground-truth", ...).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise error(f"{role} folder {folder} does not exist or is not a directory")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not is_volume_file(path):
            continue
        cid = case_id(path)
        if cid in found:
            raise error(
                f"{role} folder {folder} holds two files for case '{cid}': {found[cid].name} and {path.name}; keep one"
            )
        found[cid] = path
    if required and not found:
        raise error(f"{role} folder {folder} holds no volumes ({', '.join(VOLUME_SUFFIXES)})")
    return found


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write to; it replaces ``path`` only if the block succeeds.

    A failure (or Ctrl-C) removes the temporary file, so ``path`` is never left half-written. The temporary name keeps
    the suffix (``.partial-<pid>-<name>``: writers that choose the format by the suffix still work), and an
    ``OSError`` that names the temporary file or no file (a full disk) is re-raised naming ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename is None or os.fspath(exc.filename) == os.fspath(tmp):
            exc.filename = os.fspath(path)
            exc.filename2 = None
        raise
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
    except OSError as exc:
        name = os.fspath(exc.filename) if exc.filename is not None else ""
        if not name or name.startswith(os.fspath(tmp)):  # a file inside the staging folder: name the target
            exc.filename = os.fspath(target) + name[len(os.fspath(tmp)) :]
            exc.filename2 = None
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_tiff(path: str | os.PathLike, volume: np.ndarray, compression: str = "lzw") -> None:
    """Write a 3-D uint8 volume as a multi-page TIFF (one page per z-slice), LZW-compressed by default.

    The file is written to a temporary name first and renamed, so a failure never leaves a partial file.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise VolumeError(f"{path}: expected a 3-D volume to write, got shape {volume.shape}")
    if volume.dtype != np.uint8:
        raise VolumeError(f"{path}: expected uint8 data to write, got {volume.dtype}")
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, volume, compression=compression, photometric="minisblack")
