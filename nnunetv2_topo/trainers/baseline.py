"""nnU-Net's own trainer on a TopoWarmup budget, for side-by-side comparisons (demo, benchmarks).

``nnUNetTrainer_TopoBudget`` is ``nnUNetTrainer`` unchanged — DC+CE loss, SGD 1e-2 with the poly schedule,
clipping at 12 — except that it takes ``num_epochs``, ``num_iterations_per_epoch`` and
``num_val_iterations_per_epoch`` from the same ``nnUNet_topo_config`` file as the TopoWarmup trainers, so both
train for exactly the same number of iterations, and ``seed`` (seeded as the TopoWarmup trainers seed, so runs
with the same seed draw the same patches and augmentations). Every other key of that file is validated and then
ignored. Its checkpoints carry the configuration (``topo_state``), so ``--c`` keeps the budget it was started with
under the same resume guard as the TopoWarmup trainers.
"""

from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_topo.trainers.checkpoint import TOPO_STATE_KEY, nnunet_payload, write_checkpoint
from nnunetv2_topo.trainers.run_config import fold_folder, run_config
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
        name = type(self).__name__
        run = run_config(
            fold_folder(plans, configuration, fold, name), resume=bool(plans.get("continue_training")),
            variant_defaults={}, variant_name=name, consistency=False,
        )  # fmt: skip
        super().__init__(plans, configuration, fold, dataset_json, device)
        config = self.topo_config = run.config
        self.config_history = run.history
        for key in BUDGET_KEYS:
            setattr(self, key, config[key])
        self.seed = config["seed"]
        budget = ", ".join(f"{key}={config[key]}" for key in (*BUDGET_KEYS, "seed"))
        origin = f"from {run.source}" if run.source else "nnU-Net's defaults"
        if run.notes and not run.source:
            origin = "the saved configuration"
        self.print_to_log_file(
            f"{name}: nnUNetTrainer with {budget} ({origin}); loss, optimizer and schedule are nnU-Net's own",
            also_print_to_console=True,
        )
        for note in run.notes:
            self.print_to_log_file(f"Configuration: {note}", also_print_to_console=True)
        for warning in run.warnings:
            self.print_to_log_file(f"WARNING (configuration): {warning}", also_print_to_console=True)

    def initialize(self) -> None:
        seed_weights(self.seed)
        super().initialize()

    def on_train_start(self) -> None:
        if not self.was_initialized:
            self.initialize()
        seed_data(self.seed, self.current_epoch, self.local_rank)
        super().on_train_start()

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint plus the configuration (``topo_state``: what ``--c`` resumes with)."""
        if self.local_rank != 0 or self.disable_checkpointing:
            super().save_checkpoint(filename)  # nnU-Net's message / no-op
            return
        state = {"config": dict(self.topo_config), "config_history": list(self.config_history)}
        write_checkpoint({**nnunet_payload(self), TOPO_STATE_KEY: state}, filename)
