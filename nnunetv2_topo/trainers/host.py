"""The trainer a mixin of this package is mixed into, as the type checker sees it.

nnU-Net ships no type hints, so mypy cannot see what ``EarlyStopMixin`` and ``ResumeMixin`` read from the
``nnUNetTrainerTopoWarmup`` they end up in. :class:`TrainerHost` declares exactly that (nnU-Net's attributes and
hooks, and those ``nnUNetTrainerTopoWarmup.__init__`` sets); the mixins take it as their base only under
``typing.TYPE_CHECKING`` — at run time their base is ``object`` and these declarations do nothing.
"""

from __future__ import annotations

from typing import Any

import torch

from nnunetv2_topo.scheduling.plateau_driver import PlateauDriver
from nnunetv2_topo.trainers.guarded_step import GuardedStep
from nnunetv2_topo.trainers.score_controller import ScoreRoundController
from nnunetv2_topo.trainers.weight_ema import WeightEMA

__all__ = ["TrainerHost"]


class TrainerHost:
    """The attributes and hooks of ``nnUNetTrainerTopoWarmup`` that its mixins use (declarations only)."""

    # nnU-Net's nnUNetTrainer
    network: torch.nn.Module
    optimizer: torch.optim.Optimizer
    current_epoch: int
    initial_lr: float
    weight_decay: float
    output_folder: str
    was_initialized: bool
    logger: Any  # nnunetv2.training.logging.nnunet_logger.nnUNetLogger (untyped)

    def print_to_log_file(self, *args: Any, also_print_to_console: bool = True, add_timestamp: bool = True) -> None:
        raise NotImplementedError

    def on_epoch_start(self) -> None:
        raise NotImplementedError

    def run_training(self) -> None:
        raise NotImplementedError

    def on_train_end(self) -> None:
        raise NotImplementedError

    # nnUNetTrainerTopoWarmup.__init__ / configure_optimizers / initialize
    topo_config: dict[str, Any]
    resuming: bool
    plateau_driver: PlateauDriver | None
    weight_ema: WeightEMA | None
    guarded_step: GuardedStep
    score_rounds: ScoreRoundController
