"""Reading foreground probability maps, and pairing the cases of several inputs (models) by id.

Inputs: nnU-Net's ``<case>.npz`` (key ``probabilities``, shape ``(C, Z, Y, X)``, foreground = channel 1), written by
``nnUNetv2_predict --save_probabilities`` and ``nnUNetv2_train ... --npz``; float TIFF/NIfTI maps with values in
[0, 1]; integer/bool volumes (a binary segmentation is a probability map of 0s and 1s). An input is a folder of
such files or an nnU-Net trained-model folder, whose ``fold_*/validation/*.npz`` are pooled (out-of-fold
predictions). Every failure raises :class:`ProbabilityError` naming the file and the fix.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.input_checks import label_map_problem
from nnunetv2_topo.io import VolumeError, case_id, is_volume_file, read_volume
from nnunetv2_topo.postprocessing.fusion import Fusion, check_fusion_weights

NPZ_KEY = "probabilities"
NNUNET_SUFFIX = ".npz"
_CHUNK = 1 << 18  # bytes decompressed at a time: .npz reads never hold a second copy of the volume


class ProbabilityError(TopoError, ValueError):
    """A probability input that cannot be used; the message names the file and the fix."""


def _read_npz_foreground(path: Path) -> np.ndarray:
    """Channel 1 of ``probabilities`` without loading channel 0 (one copy of the volume, not C)."""
    try:
        with zipfile.ZipFile(path) as zf:
            member = f"{NPZ_KEY}.npy"
            if member not in zf.namelist():
                keys = ", ".join(n.removesuffix(".npy") for n in zf.namelist()) or "none"
                raise ProbabilityError(
                    f"{path}: no key {NPZ_KEY!r} (keys: {keys}); expected nnU-Net's <case>.npz from "
                    "nnUNetv2_predict --save_probabilities or nnUNetv2_train ... --npz"
                )
            with cast(zipfile.ZipExtFile, zf.open(member)) as f:  # (typeshed: IO[bytes], which lacks readinto)
                version = np.lib.format.read_magic(f)
                if version not in ((1, 0), (2, 0)):  # rare header versions: plain (full) load
                    return _checked_channel(path, np.load(path)[NPZ_KEY])
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read_header(f)
                _check_npz_shape(path, shape)
                if fortran or dtype.hasobject:
                    return _checked_channel(path, np.load(path)[NPZ_KEY])
                n = int(np.prod(shape[1:]))
                _skip(f, n * dtype.itemsize, path)
                out = np.empty(n, dtype)
                view = out.view(np.uint8).data
                got = 0
                while got < view.nbytes:
                    k = f.readinto(view[got : got + _CHUNK])
                    if not k:
                        raise ProbabilityError(f"{path}: truncated {NPZ_KEY} array; write the file again")
                    got += k
    except ProbabilityError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ProbabilityError(f"{path}: unreadable .npz ({type(exc).__name__}: {exc})") from exc
    fg = out.reshape(shape[1:])
    if fg.dtype != np.float32:
        if not np.issubdtype(fg.dtype, np.floating):
            raise ProbabilityError(f"{path}: {NPZ_KEY} has dtype {fg.dtype}; expected float probabilities")
        fg = fg.astype(np.float32)
    return fg


def _skip(f, nbytes: int, path: Path) -> None:
    while nbytes > 0:
        chunk = f.read(min(nbytes, _CHUNK))
        if not chunk:
            raise ProbabilityError(f"{path}: truncated {NPZ_KEY} array; write the file again")
        nbytes -= len(chunk)


def _check_npz_shape(path: Path, shape: tuple[int, ...]) -> None:
    if len(shape) != 4:
        raise ProbabilityError(f"{path}: {NPZ_KEY} has shape {shape}; expected (C, Z, Y, X) with C = 2")
    if shape[0] != 2:
        raise ProbabilityError(
            f"{path}: {NPZ_KEY} has {shape[0]} channel(s); expected 2 (background, foreground). Train with the "
            "Vesuvius labels (0 background, 1 surface, 2 ignore) so nnU-Net predicts two classes"
        )


def _checked_channel(path: Path, arr: np.ndarray) -> np.ndarray:
    _check_npz_shape(path, arr.shape)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ProbabilityError(f"{path}: {NPZ_KEY} has dtype {arr.dtype}; expected float probabilities")
    return np.ascontiguousarray(arr[1], np.float32)


def _check_range(path: Path, p: np.ndarray) -> np.ndarray:
    if p.size == 0:
        raise ProbabilityError(f"{path}: empty volume {p.shape}")
    lo, hi = float(np.min(p)), float(np.max(p))
    if np.isnan(lo) or np.isnan(hi):
        raise ProbabilityError(f"{path}: holds NaN values; probabilities must be numbers in [0, 1]")
    if lo < 0 or hi > 1:
        raise ProbabilityError(
            f"{path}: values span [{lo:g}, {hi:g}], outside [0, 1]; pass probabilities (softmax/sigmoid outputs), "
            "not logits or intensities"
        )
    return p


def read_probability(path: str | os.PathLike) -> np.ndarray:
    """float32 (Z, Y, X) foreground probability of one case file (.npz, float or integer TIFF/NIfTI)."""
    path = Path(path)
    if not path.is_file():
        raise ProbabilityError(f"{path}: no such file")
    if path.name.lower().endswith(NNUNET_SUFFIX):
        return _check_range(path, _read_npz_foreground(path))
    try:
        volume = read_volume(path)
    except VolumeError as exc:
        raise ProbabilityError(str(exc)) from exc
    if volume.dtype == bool or np.issubdtype(volume.dtype, np.integer):
        problem = label_map_problem(volume)
        if problem:
            raise ProbabilityError(f"{path}: {problem}")
        return (volume != 0).astype(np.float32)
    if not np.issubdtype(volume.dtype, np.floating):
        raise ProbabilityError(f"{path}: dtype {volume.dtype} is not a probability map; expected float or integer")
    return _check_range(path, volume.astype(np.float32, copy=False))


def _is_input_file(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and (p.name.lower().endswith(NNUNET_SUFFIX) or is_volume_file(p))


def _index_folder(folder: Path) -> dict[str, Path]:
    by_case: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if _is_input_file(p):
            by_case.setdefault(case_id(p), []).append(p)
    out: dict[str, Path] = {}
    for cid, paths in by_case.items():
        npz = [p for p in paths if p.name.lower().endswith(NNUNET_SUFFIX)]
        chosen = npz if npz else paths  # nnU-Net writes <case>.tif beside <case>.npz: the .npz wins
        if len(chosen) > 1:
            raise ProbabilityError(
                f"{folder}: several files for case {cid} ({', '.join(p.name for p in chosen)}); keep one"
            )
        out[cid] = chosen[0]
    return out


FINAL_CHECKPOINT = "checkpoint_final.pth"
VALIDATION = "validation"


def validation_folder(checkpoint: str) -> str:
    """The fold sub-folder holding the out-of-fold predictions of ``checkpoint``: ``validation`` for
    ``checkpoint_final.pth`` (what ``nnUNetv2_train ... --val --npz`` writes), ``validation_<name>`` for
    ``checkpoint_<name>.pth`` (e.g. ``validation_best_score``)."""
    if checkpoint == FINAL_CHECKPOINT:
        return VALIDATION
    return VALIDATION + "_" + checkpoint.removeprefix("checkpoint_").removesuffix(".pth")


def _checkpoint_of(folder_name: str) -> str:
    if folder_name == VALIDATION:
        return FINAL_CHECKPOINT
    return "checkpoint_" + folder_name.removeprefix(VALIDATION + "_") + ".pth"


def model_checkpoints(folder: str | os.PathLike) -> list[str]:
    """Checkpoints with out-of-fold predictions in a model folder (``fold_*/validation[_<name>]/``), final first;
    empty for any other folder."""
    names = {_checkpoint_of(p.name) for p in Path(folder).glob(f"fold_*/{VALIDATION}*") if p.is_dir()}
    names.discard("checkpoint_.pth")
    return sorted(names, key=lambda n: (n != FINAL_CHECKPOINT, n))


def model_folds(folder: str | os.PathLike, checkpoint: str = FINAL_CHECKPOINT) -> list[Path]:
    """The ``fold_*/validation`` folders (of ``checkpoint``: :func:`validation_folder`) of an nnU-Net trained-model
    folder (empty for any other folder)."""
    return sorted(p for p in Path(folder).glob(f"fold_*/{validation_folder(checkpoint)}") if p.is_dir())


def index_cases(path: str | os.PathLike, checkpoint: str | None = None) -> dict[str, Path]:
    """Case id -> file of one input: a folder of case files, or an nnU-Net trained-model folder (folds pooled; the
    out-of-fold predictions of ``checkpoint``, default ``checkpoint_final.pth``; ignored for other folders)."""
    path = Path(path)
    if not path.is_dir():
        raise ProbabilityError(f"{path}: not a folder; give a folder of <case>.npz/.tif/.nii.gz or a model folder")
    available = model_checkpoints(path)
    if available:
        checkpoint = checkpoint or FINAL_CHECKPOINT
        folds = model_folds(path, checkpoint)
        if not folds:
            raise ProbabilityError(
                f"{path}: no out-of-fold predictions of {checkpoint} (no fold_*/{validation_folder(checkpoint)}/); "
                f"this model folder has them for {', '.join(available)}"
            )
        out: dict[str, Path] = {}
        for fold in folds:
            for p in sorted(fold.glob("*" + NNUNET_SUFFIX)):
                cid = case_id(p)
                if cid in out:
                    raise ProbabilityError(
                        f"{path}: case {cid} is in two folds ({out[cid].parent.parent.name}, {fold.parent.name}); "
                        "out-of-fold predictions must come from one fold each"
                    )
                out[cid] = p
        if not out:
            raise ProbabilityError(
                f"{path}: model folder without validation probabilities (no fold_*/{folds[0].name}/*.npz); run "
                "nnUNetv2_train DATASET CONFIG FOLD -tr TRAINER --val --npz for each fold"
            )
        return out
    out = _index_folder(path)
    if not out:
        raise ProbabilityError(f"{path}: holds no case files (.npz, .tif, .tiff, .nii, .nii.gz)")
    return out


def paired_cases(
    inputs: Sequence[str | os.PathLike], checkpoints: Sequence[str | None] | None = None
) -> dict[str, list[Path]]:
    """Cases present in every input, each with one path per input in input order; a missing case is an error.
    ``checkpoints``: per input, which checkpoint's out-of-fold predictions a model folder gives (see
    :func:`index_cases`)."""
    if not inputs:
        raise ProbabilityError("no inputs given")
    checkpoints = [None] * len(inputs) if checkpoints is None else list(checkpoints)
    indexes = [index_cases(p, c) for p, c in zip(inputs, checkpoints, strict=True)]
    every = set().union(*indexes)
    problems = []
    for path, index in zip(inputs, indexes, strict=True):
        missing = sorted(every - set(index))
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            problems.append(f"{path} lacks case(s) {shown}")
    if problems:
        raise ProbabilityError("inputs must hold the same cases: " + "; ".join(problems))
    return {cid: [index[cid] for index in indexes] for cid in sorted(every)}


def fuse_probability_files(
    paths: Sequence[str | os.PathLike], weights: Sequence[float] | None = None, mode: str = "logit"
) -> np.ndarray:
    """One case's fused foreground probability from one probability file per model (see :class:`Fusion`; the
    live-model counterpart is :func:`nnunetv2_topo.inference.predict.fused_probability`). A model of weight 0 is
    not read.

    Holds at most the accumulator, one map being read and the result: ~3 float32 copies of the volume.
    """
    weights = check_fusion_weights(weights, len(paths))
    used = [(path, w) for path, w in zip(paths, weights, strict=True) if w > 0]  # weight 0: not read
    if len(used) == 1:
        return read_probability(used[0][0])
    fusion = Fusion(mode)
    for path, weight in used:
        p = read_probability(path)
        try:
            fusion.add_probability(p, weight)
        except ValueError as exc:
            raise ProbabilityError(
                f"{path}: {exc} ({paths[0]}); the inputs must be predictions of the same cases"
            ) from exc
        del p
    return fusion.probability()
