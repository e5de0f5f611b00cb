"""Helpers for the predict tests: tiny nnU-Net trained-model folders written in memory (random weights, no
training: nnU-Net's predictor only needs dataset.json, plans.json and fold_*/checkpoint_final.pth) and test folders
in both input layouts."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from nnunetv2_topo.io import read_volume, write_tiff
from nnunetv2_topo.plans import standalone_plans, vesuvius_dataset_json


def write_model_folder(
    root: Path,
    trainer: str = "nnUNetTrainer",
    plans_name: str = "nnUNetPlans_tiny",
    patch: Sequence[int] = (16, 16, 16),
    features: Sequence[int] = (4, 8, 16),
    folds: Sequence[int] = (0,),
    seed: int = 0,
    labels: dict | None = None,
) -> Path:
    """``root/<trainer>__<plans_name>__3d_fullres`` with one checkpoint per fold (weights drawn from ``seed`` and the
    fold), as nnUNetv2_train would leave it for prediction."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = standalone_plans(patch, features, dataset_name="Dataset999_Predict", plans_name=plans_name)
    dataset_json = vesuvius_dataset_json(4)
    if labels is not None:
        dataset_json["labels"] = labels
    folder = root / f"{trainer}__{plans_name}__3d_fullres"
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=1))
    cm = PlansManager(plans).get_configuration("3d_fullres")
    for fold in folds:
        torch.manual_seed(seed * 100 + fold)
        net = nnUNetTrainer.build_network_architecture(PlansManager(plans), cm, 1, 2, enable_deep_supervision=False)
        (folder / f"fold_{fold}").mkdir()
        checkpoint = {
            "network_weights": net.state_dict(),
            "trainer_name": trainer,
            "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": fold, "dataset_json": dataset_json},
            "inference_allowed_mirroring_axes": (0, 1, 2),
        }
        torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def nnunet_layout(kaggle_images: Path, out: Path, spacing_sidecar: bool = True) -> Path:
    """Copy Kaggle's ``test_images/<id>.tif`` to nnU-Net's ``imagesTs/<id>_0000.tif`` (+ ``<id>.json`` spacing)."""
    out.mkdir(parents=True)
    for p in sorted(kaggle_images.glob("*.tif")):
        cid = p.name[: -len(".tif")]
        shutil.copy(p, out / f"{cid}_0000.tif")
        if spacing_sidecar:
            (out / f"{cid}.json").write_text(json.dumps({"spacing": [1, 1, 1]}))
    return out


def with_zero_border(kaggle_images: Path, out: Path) -> Path:
    """A copy of the test images with zero slabs on three sides (nnU-Net crops them away and pads them back as
    background), so the un-cropping of the logits is exercised."""
    out.mkdir(parents=True)
    for p in sorted(kaggle_images.glob("*.tif")):
        image = read_volume(p).copy()
        image[:3] = 0
        image[:, :, -5:] = 0
        image[:, :2] = 0
        write_tiff(out / p.name, image.astype(np.uint8))
    return out
