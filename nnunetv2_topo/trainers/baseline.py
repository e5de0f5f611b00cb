"""nnU-Net's own trainer on a TopoWarmup budget, for side-by-side comparisons (demo, benchmarks).

``nnUNetTrainer_TopoBudget`` is ``nnUNetTrainer`` unchanged — DC+CE loss, SGD 1e-2 with the poly schedule,
clipping at 12 — except that it takes ``num_epochs``, ``num_iterations_per_epoch`` and
``num_val_iterations_per_epoch`` from the same ``nnUNet_topo_config`` file as the TopoWarmup trainers, so both
train for exactly the same number of iterations, and ``seed`` (seeded as the TopoWarmup trainers seed, so runs
with the same seed draw the same patches and augmentations). Every other key of that file is validated and then
ignored.
"""

from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_topo.trainers.config import config_from_environment
from nnunetv2_topo.trainers.seeding import seed_data, seed_weights

BUDGET_KEYS = ("num_epochs", "num_iterations_per_epoch", "num_val_iterations_per_epoch")


class nnUNetTrainer_TopoBudget(nnUNetTrainer):
    """``nnUNetTrainer`` with the epoch/iteration budget of ``nnUNet_topo_config`` (everything else nnU-Net's)."""

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 (nnU-Net's signature)
    ) -> None:
        config, path = config_from_environment(variant_name=type(self).__name__)
        super().__init__(plans, configuration, fold, dataset_json, device)
        for key in BUDGET_KEYS:
            setattr(self, key, config[key])
        self.seed = config["seed"]
        budget = ", ".join(f"{key}={config[key]}" for key in (*BUDGET_KEYS, "seed"))
        origin = f"from {path}" if path else "nnU-Net's defaults"
        self.print_to_log_file(
            f"{type(self).__name__}: nnUNetTrainer with {budget} ({origin}); loss, optimizer and schedule are "
            "nnU-Net's own",
            also_print_to_console=True,
        )

    def initialize(self) -> None:
        seed_weights(self.seed)
        super().initialize()

    def on_train_start(self) -> None:
        if not self.was_initialized:
            self.initialize()
        seed_data(self.seed, self.current_epoch, self.local_rank)
        super().on_train_start()
