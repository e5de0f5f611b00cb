"""Untrained nnU-Net model folders: what ``nnUNetv2_train`` leaves for prediction (``dataset.json``, ``plans.json``,
``fold_*/checkpoint_final.pth``), with random weights and no training. For ``predict`` tests and cost benchmarks:
prediction time and memory do not depend on the weights, and equality with ``nnUNetv2_predict`` holds for any."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from nnunetv2_topo.reduced_plans import standalone_plans, vesuvius_dataset_json


def write_untrained_model_folder(
    root: str | Path,
    trainer: str = "nnUNetTrainer",
    plans_name: str = "nnUNetPlans_tiny",
    patch: Sequence[int] = (16, 16, 16),
    features: Sequence[int] = (4, 8, 16),
    folds: Sequence[int] = (0,),
    seed: int = 0,
    labels: dict | None = None,
) -> Path:
    """``root/<trainer>__<plans_name>__3d_fullres`` with one checkpoint per fold (a PlainConvUNet of
    :func:`~nnunetv2_topo.reduced_plans.standalone_plans`, weights drawn from ``seed`` and the fold); returns the
    folder."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = standalone_plans(patch, features, dataset_name="Dataset999_Predict", plans_name=plans_name)
    dataset_json = vesuvius_dataset_json(4)
    if labels is not None:
        dataset_json["labels"] = labels
    folder = Path(root) / f"{trainer}__{plans_name}__3d_fullres"
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=1))
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    for fold in folds:
        torch.manual_seed(seed * 100 + fold)
        net = nnUNetTrainer.build_network_architecture(pm, cm, 1, 2, enable_deep_supervision=False)
        (folder / f"fold_{fold}").mkdir()
        checkpoint = {
            "network_weights": net.state_dict(),
            "trainer_name": trainer,
            "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": fold, "dataset_json": dataset_json},
            "inference_allowed_mirroring_axes": (0, 1, 2),
        }
        torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder
