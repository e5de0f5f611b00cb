"""Trained nnU-Net model folders for ``predict``: checked, then loaded into nnU-Net's own ``nnUNetPredictor``.

A model folder is what ``nnUNetv2_train`` writes (``<trainer>__<plans>__<configuration>`` with ``dataset.json``,
``plans.json`` and ``fold_*/<checkpoint>``). Every check runs in :func:`check_model_folders` before any weights are
loaded or any case is predicted, and names the folder and the fix.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.nnunet_env import EXT_TRAINER_ENV_VAR as ENV_VAR
from nnunetv2_topo.nnunet_env import ext_trainer_env


class ModelError(TopoError, ValueError):
    """A model folder (or a set of them) that cannot be used; the message names the folder and the fix."""


@dataclass(frozen=True)
class ModelFolder:
    """A checked trained-model folder and the folds to use."""

    path: Path
    folds: tuple[str, ...]
    checkpoint: str
    labels: dict

    @property
    def name(self) -> str:
        return self.path.name


def _available_folds(folder: Path, checkpoint: str) -> list[str]:
    """Folds with ``checkpoint``, as ``nnUNetv2_predict`` detects them (``fold_all`` only when asked for)."""
    folds = [p.name[len("fold_") :] for p in folder.glob("fold_*") if (p / checkpoint).is_file()]
    return sorted((f for f in folds if f != "all"), key=lambda f: int(f) if f.isdigit() else -1)


def _read_json(path: Path, folder: Path) -> dict:
    if not path.is_file():
        raise ModelError(
            f"{folder} is not a trained nnU-Net model folder: {path.name} is missing; pass the "
            "<trainer>__<plans>__<configuration> folder under nnUNet_results/DatasetXXX_Name/"
        )
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ModelError(f"{path}: unreadable JSON ({exc})") from None


def check_model_folder(folder: str | os.PathLike, folds: Sequence[str] | None, checkpoint: str) -> ModelFolder:
    """Check one model folder: dataset.json/plans.json present, one-channel input, two output classes (background +
    one foreground class), and a ``checkpoint`` in every requested fold (``folds=None``: every fold that has one)."""
    path = Path(folder)
    if not path.is_dir():
        raise ModelError(f"model folder {path} does not exist")
    dataset_json = _read_json(path / "dataset.json", path)
    _read_json(path / "plans.json", path)
    available = _available_folds(path, checkpoint)
    if folds is None:
        if not available:
            present = sorted({p.name for p in path.glob("fold_*/*.pth")})
            hint = f" (found: {', '.join(present[:6])}; choose one with --checkpoint)" if present else ""
            raise ModelError(f"model folder {path} has no fold_*/{checkpoint}: is training finished?{hint}")
        use = tuple(available)
    else:
        use = tuple(str(f) for f in folds)
        missing = [f for f in use if not (path / f"fold_{f}" / checkpoint).is_file()]
        if missing:
            raise ModelError(
                f"model folder {path}: fold(s) {', '.join(missing)} have no {checkpoint}; available folds: "
                f"{', '.join(available) or 'none'}"
            )
    channels = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    if len(channels) != 1:
        raise ModelError(f"{path}/dataset.json: the model takes {len(channels)} input channels; predict feeds one (CT)")
    labels = dict(dataset_json.get("labels", {}))
    foreground = [k for k, v in labels.items() if k not in ("background", "ignore") and v != 0]
    if "regions_class_order" in dataset_json or len(foreground) != 1:
        raise ModelError(
            f"{path}/dataset.json: labels {labels} are not one foreground class (plus background/ignore); "
            "predict fuses binary surface models"
        )
    return ModelFolder(path, use, checkpoint, labels)


def check_model_folders(
    folders: Sequence[str | os.PathLike], folds: Sequence[str] | None, checkpoint: str | Sequence[str]
) -> list[ModelFolder]:
    """Check every model folder (see :func:`check_model_folder`) and that all were trained on the same labels.
    ``checkpoint``: one file name for every model, or one per model."""
    if not folders:
        raise ModelError("no model given; pass --model MODEL_DIR (once per model)")
    checkpoints = [checkpoint] * len(folders) if isinstance(checkpoint, str) else list(checkpoint)
    models = [check_model_folder(f, folds, c) for f, c in zip(folders, checkpoints, strict=True)]
    first = models[0]
    for m in models[1:]:
        if m.labels != first.labels:
            raise ModelError(
                f"models trained on different label sets: {first.path} has {first.labels}, {m.path} has {m.labels}; "
                "fuse only models of the same task"
            )
    seen: dict[Path, ModelFolder] = {}
    for m in models:
        key = m.path.resolve()
        if key in seen:
            raise ModelError(f"model folder {m.path} is given twice; to weight it more, use --weights")
        seen[key] = m
    return models


def use_topo_trainers() -> None:
    """List the TopoWarmup trainers' folder in ``nnUNet_extTrainer`` (if it is not listed yet) so that nnU-Net
    resolves their names from the checkpoints, as ``nnUNetv2_predict`` would with the variable exported."""
    os.environ[ENV_VAR] = ext_trainer_env()[ENV_VAR]


def make_predictor(device, use_mirroring: bool):
    """nnU-Net's ``nnUNetPredictor`` as ``nnUNetv2_predict`` builds it: step 0.5, Gaussian weighting, everything on
    the device for CUDA (logits are returned on the CPU either way); no tqdm of its own (``predict`` shows one)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    with contextlib.redirect_stdout(io.StringIO()):  # its CPU notice about perform_everything_on_device
        return nnUNetPredictor(
            tile_step_size=0.5,
            use_gaussian=True,
            use_mirroring=use_mirroring,
            perform_everything_on_device=device.type == "cuda",
            device=device,
            verbose=False,
            allow_tqdm=False,
        )


def load_predictor(model: ModelFolder, device, use_mirroring: bool):
    """An initialised ``nnUNetPredictor`` for ``model`` (its trainer class found through ``nnUNet_extTrainer``)."""
    import torch
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    first = model.path / f"fold_{model.folds[0]}" / model.checkpoint
    try:
        ckpt = torch.load(first, map_location="cpu", weights_only=False)
        trainer_name = ckpt["trainer_name"]
    except Exception as exc:  # torch raises many types on corrupt files
        raise ModelError(f"{first}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc
    del ckpt
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net narrates its search
            found = recursive_find_trainer_class_by_name(trainer_name) is not None
    except RuntimeError:  # nnU-Net's own "not found" when nnUNet_extTrainer is set
        found = False
    if not found:
        raise ModelError(
            f"{first}: trainer class {trainer_name!r} not found in nnU-Net or in {ENV_VAR}="
            f"{os.environ.get(ENV_VAR, '')!r}; add the folder that defines it to {ENV_VAR}"
        )
    predictor = make_predictor(device, use_mirroring)
    folds = tuple(f if f == "all" else int(f) for f in model.folds)
    with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net narrates the trainer search again
        predictor.initialize_from_trained_model_folder(str(model.path), folds, model.checkpoint)
    if predictor.configuration_manager.previous_stage_name is not None:
        raise ModelError(f"{model.path}: cascade configurations (previous stage) are not supported by predict")
    return predictor
