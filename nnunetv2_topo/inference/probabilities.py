"""Reading probability maps (minimal stand-in for engineer 9a's module, same interface)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnunetv2_topo.io import VolumeError, case_id, is_volume_file, read_volume


class ProbabilityError(ValueError):
    """A probability map or folder that cannot be used; the message names the file and the fix."""


def read_probability(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    if path.name.endswith(".npz"):
        with np.load(path) as data:
            if "probabilities" not in data:
                raise ProbabilityError(f"{path}: no 'probabilities' array; write it with nnU-Net --save_probabilities")
            probs = data["probabilities"]
        if probs.ndim != 4 or probs.shape[0] != 2:
            raise ProbabilityError(f"{path}: expected probabilities of shape (2, Z, Y, X), got {probs.shape}")
        p1 = probs[1].astype(np.float32)
    else:
        try:
            volume = read_volume(path)
        except VolumeError as exc:
            raise ProbabilityError(str(exc)) from exc
        if not np.issubdtype(volume.dtype, np.floating):
            return (volume != 0).astype(np.float32)
        p1 = volume.astype(np.float32)
    if np.isnan(p1).any() or p1.min() < 0 or p1.max() > 1:
        raise ProbabilityError(f"{path}: probabilities must lie in [0, 1] without NaN")
    return p1


def index_cases(path: str | os.PathLike) -> dict[str, Path]:
    path = Path(path)
    if not path.is_dir():
        raise ProbabilityError(f"{path} is not a folder of probability maps or an nnU-Net trained-model folder")
    folds = sorted(p / "validation" for p in path.glob("fold_*") if (p / "validation").is_dir())
    files = [f for d in folds for f in sorted(d.glob("*.npz"))] if folds else sorted(path.iterdir())
    found: dict[str, Path] = {}
    for f in files:
        if not f.is_file() or not (f.name.endswith(".npz") or is_volume_file(f)):
            continue
        cid = case_id(f)
        if cid in found and found[cid].name.endswith(".npz") == f.name.endswith(".npz"):
            raise ProbabilityError(f"{path}: two files for case '{cid}': {found[cid]} and {f}; keep one")
        if cid not in found or f.name.endswith(".npz"):
            found[cid] = f
    if not found:
        raise ProbabilityError(f"{path} holds no probability maps (.npz, .tif, .nii.gz)")
    return found


def paired_cases(inputs: Sequence[Path]) -> dict[str, list[Path]]:
    indexed = [index_cases(p) for p in inputs]
    all_ids = set().union(*indexed)
    missing = sorted(c for c in all_ids if any(c not in idx for idx in indexed))
    if missing:
        raise ProbabilityError(
            f"case(s) missing in some input: {', '.join(missing[:10])}; every input needs every case"
        )
    return {c: [idx[c] for idx in indexed] for c in sorted(all_ids)}
