"""The ``models/`` of a bundle: slim copies of trained-model folders holding only what prediction reads.

A checkpoint keeps the fields ``nnUNetPredictor.initialize_from_trained_model_folder`` reads (nnunetv2 2.8):
``network_weights`` (the weights predict uses: the EMA where the run kept one), ``trainer_name``, ``init_args``
(its ``configuration``) and ``inference_allowed_mirroring_axes``; optimizer state, grad-scaler state, logging and any
second copy of the weights are dropped. The folder keeps ``plans.json``, ``dataset.json`` and
``dataset_fingerprint.json``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nnunetv2_topo.inference.models import (
    ModelError,
    ModelFolder,
    check_model_folders,
    load_predictor,
    use_topo_trainers,
)
from nnunetv2_topo.kaggle.provided import BundleError

__all__ = [
    "CHECKPOINT_FIELDS",
    "FOLDER_FILES",
    "SlimModel",
    "bundle_names",
    "check_bundled_model",
    "checked_folders",
    "copy_models",
    "slim_copy",
]

CHECKPOINT_FIELDS = ("network_weights", "trainer_name", "init_args", "inference_allowed_mirroring_axes")
FOLDER_FILES = ("plans.json", "dataset.json", "dataset_fingerprint.json")
REQUIRED_FIELDS = ("network_weights", "trainer_name", "init_args")


@dataclass(frozen=True)
class SlimModel:
    """A model copied into the bundle: where it came from, where it is (relative to the bundle), the sizes."""

    source: Path
    relpath: str
    folds: tuple[str, ...]
    full_bytes: int
    slim_bytes: int


def bundle_names(folders: Sequence[ModelFolder]) -> list[str]:
    """``models/<dataset>/<trainer>__<plans>__<configuration>`` per model (``-2``, ``-3`` appended on clashes)."""
    names: list[str] = []
    for m in folders:
        base = f"models/{m.path.resolve().parent.name}/{m.path.name}"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _slim_checkpoint(src: Path) -> dict:
    import torch

    try:
        ckpt = torch.load(src, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types on corrupt files
        raise BundleError(f"{src}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict):
        raise BundleError(f"{src}: not an nnU-Net checkpoint (a {type(ckpt).__name__}, not a dict)")
    missing = [k for k in REQUIRED_FIELDS if k not in ckpt]
    if missing or not isinstance(ckpt.get("init_args"), dict) or "configuration" not in ckpt["init_args"]:
        what = ", ".join(missing) if missing else "init_args['configuration']"
        raise BundleError(f"{src}: not an nnU-Net checkpoint: missing {what}; pass the checkpoint nnUNetv2_train wrote")
    return {k: ckpt[k] for k in CHECKPOINT_FIELDS if k in ckpt}


def slim_copy(model: ModelFolder, dest: Path) -> tuple[int, int]:
    """Copy ``model`` into ``dest`` with slim checkpoints; returns (bytes of the full checkpoints, of the slim)."""
    import torch

    dest.mkdir(parents=True)
    for name in FOLDER_FILES:
        if (model.path / name).is_file():
            shutil.copy2(model.path / name, dest / name)
    full = slim = 0
    for fold in model.folds:
        src = model.path / f"fold_{fold}" / model.checkpoint
        out = dest / f"fold_{fold}" / model.checkpoint
        out.parent.mkdir()
        torch.save(_slim_checkpoint(src), out)
        full += src.stat().st_size
        slim += out.stat().st_size
    return full, slim


def check_bundled_model(model: ModelFolder) -> None:
    """Load the bundled model as predict does (nnU-Net's predictor, the trainer found by name) and every fold's
    weights into its network (strict): the bundle's checkpoints are complete."""
    import torch

    use_topo_trainers()
    try:
        predictor = load_predictor(model, torch.device("cpu"), use_mirroring=True)
    except ModelError as exc:
        raise BundleError(f"the bundled copy of a model does not load: {exc}") from exc
    except Exception as exc:  # nnU-Net / torch errors on a network that does not match the weights
        raise BundleError(f"{model.path}: the model does not load ({type(exc).__name__}: {exc})") from exc
    for fold, weights in zip(model.folds, predictor.list_of_parameters, strict=True):
        try:
            predictor.network.load_state_dict(weights)
        except Exception as exc:
            raise BundleError(f"{model.path}/fold_{fold}: weights do not fit the network ({exc})") from exc


def copy_models(folders: Sequence[ModelFolder], staging: Path, progress: Callable[[str], None]) -> list[SlimModel]:
    """Slim copies of ``folders`` under ``staging/models``, each loaded back as a check."""
    out = []
    for model, rel in zip(folders, bundle_names(folders), strict=True):
        progress(f"  {model.path} (folds {', '.join(model.folds)}) -> {rel}")
        full, slim = slim_copy(model, staging / rel)
        check_bundled_model(ModelFolder(staging / rel, model.folds, model.checkpoint, model.labels))
        progress(f"    checkpoints {full / 1e6:.1f} MB -> {slim / 1e6:.1f} MB; loads with nnU-Net's predictor")
        out.append(SlimModel(model.path, rel, model.folds, full, slim))
    return out


def checked_folders(models: Sequence[Path], folds: Sequence[str] | None, checkpoint: str) -> list[ModelFolder]:
    """The model folders checked as predict checks them (BundleError on failure)."""
    try:
        return check_model_folders(models, folds, checkpoint)
    except ModelError as exc:
        raise BundleError(str(exc)) from exc
