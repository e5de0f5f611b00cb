"""TopoWarmup trainer variants, selected by name with ``nnUNetv2_train ... -tr NAME``.

Each variant only sets ``topo_defaults``; the file named by ``nnUNet_topo_config`` still overrides any key.
"""

from __future__ import annotations

from typing import Any, ClassVar

from nnunetv2_topo.trainers.config import FIVE_TERM_LOSS_WEIGHTS
from nnunetv2_topo.trainers.topo_warmup import nnUNetTrainerTopoWarmup

__all__ = [
    "EPOCH_VARIANTS",
    "scaled_warmup",
    "nnUNetTrainerTopoWarmup_AdamW",
    "nnUNetTrainerTopoWarmup_BettiMatching",
    "nnUNetTrainerTopoWarmup_Muon",
    "nnUNetTrainerTopoWarmup_Phased",
    "nnUNetTrainerTopoWarmup_SGD",
    "nnUNetTrainerTopoWarmup_DiceFocal",
    "nnUNetTrainerTopoWarmup_FiveTerm",
    "nnUNetTrainerTopoWarmup_SkelRecall",
    "nnUNetTrainerTopoWarmup_clDice",
    "nnUNetTrainerTopoWarmup_5epochs",
    "nnUNetTrainerTopoWarmup_50epochs",
    "nnUNetTrainerTopoWarmup_100epochs",
    "nnUNetTrainerTopoWarmup_250epochs",
    "nnUNetTrainerTopoWarmup_500epochs",
    "nnUNetTrainerTopoWarmup_2000epochs",
    "nnUNetTrainerTopoWarmup_4000epochs",
]


class nnUNetTrainerTopoWarmup_FiveTerm(nnUNetTrainerTopoWarmup):
    """The original five-term recipe (dice 0.3, focal 0.4 with alpha 0.25, boundary 0.15, clDice 0.10, connectivity
    0.05), the default loss until the variant benchmark measured it below nnUNetTrainer; kept reproducible."""

    topo_defaults: ClassVar[dict[str, Any]] = {"loss_weights": dict(FIVE_TERM_LOSS_WEIGHTS)}


class nnUNetTrainerTopoWarmup_DiceFocal(nnUNetTrainerTopoWarmup):
    """The original recipe's "Update #2": Dice 0.5 + focal 0.5, the three topology terms off."""

    topo_defaults: ClassVar[dict[str, Any]] = {"loss_weights": {"dice": 0.5, "focal": 0.5}}


class nnUNetTrainerTopoWarmup_SkelRecall(nnUNetTrainerTopoWarmup):
    """CE 1 + Dice 1 + skeleton recall 1 (the competition host's recipe, with per-sample skeleton targets)."""

    topo_defaults: ClassVar[dict[str, Any]] = {"loss_weights": {"ce": 1.0, "dice": 1.0, "skeleton_recall": 1.0}}


class nnUNetTrainerTopoWarmup_clDice(nnUNetTrainerTopoWarmup):
    """CE 1 + Dice 1 + clDice 0.5."""

    topo_defaults: ClassVar[dict[str, Any]] = {"loss_weights": {"ce": 1.0, "dice": 1.0, "cldice": 0.5}}


class nnUNetTrainerTopoWarmup_AdamW(nnUNetTrainerTopoWarmup):
    """The original recipe's optimizer, AdamW (its LR 1e-4 by ``initial_lr: null``) with weight decay 1e-5, with the
    default loss."""

    topo_defaults: ClassVar[dict[str, Any]] = {"optimizer": "adamw", "weight_decay": 1e-5}


class nnUNetTrainerTopoWarmup_SGD(nnUNetTrainerTopoWarmup):
    """nnU-Net's SGD (LR 1e-2, momentum 0.99, Nesterov) with the default loss: the default optimizer until Muon
    measured ahead of it (``benchmarks/results/trainers-phased-betti-muon.md``)."""

    topo_defaults: ClassVar[dict[str, Any]] = {"optimizer": "sgd"}


PHASED_LOSS_SCHEDULE: dict[str, dict[str, int]] = {
    "cldice": {"start": 170, "ramp": 40},
    "skeleton_recall": {"start": 400, "ramp": 40},
}
"""``_Phased`` over nnU-Net's 1,000 epochs: CE + Dice alone until their training loss has made 80 % of its drop
(measured at 1/6 of a run), clDice from there, skeleton recall once the pseudo Dice has reached 90 % of its final
value (0.4 of a run), each ramped in over 4 % of the run (``docs/explanation/phasing.md``: the measurement)."""


class nnUNetTrainerTopoWarmup_Phased(nnUNetTrainerTopoWarmup):
    """The original recipe's plan: CE + Dice first, then the topology terms one at a time (clDice 0.5 from epoch
    170, skeleton recall 0.5 from epoch 400, each ramped over 40 epochs; ``PHASED_LOSS_SCHEDULE``)."""

    topo_defaults: ClassVar[dict[str, Any]] = {
        "loss_weights": {"ce": 1.0, "dice": 1.0, "cldice": 0.5, "skeleton_recall": 0.5},
        "loss_schedule": PHASED_LOSS_SCHEDULE,
    }


class nnUNetTrainerTopoWarmup_BettiMatching(nnUNetTrainerTopoWarmup):
    """The default loss plus the Betti-matching term (weight 0.01 on 32³ crops every 4th step: the term is a sum
    over persistence pairs, ~10-20 on a 32³ crop of a fair prediction) as a fine-tuning phase over the last 20 % of
    nnU-Net's 1,000 epochs (from epoch 800, ramped over 50)."""

    topo_defaults: ClassVar[dict[str, Any]] = {
        "loss_weights": {"ce": 1.0, "dice": 1.0, "cldice": 0.5, "betti_matching": 0.01},
        "loss_schedule": {"betti_matching": {"start": 800, "ramp": 50}},
        "betti_matching_crop": 32,
        "betti_matching_every": 4,
    }


class nnUNetTrainerTopoWarmup_Muon(nnUNetTrainerTopoWarmup):
    """Muon (LR 0.02) for the hidden conv weights and AdamW (3e-4) for the rest, the default loss: the default
    trainer's optimizer, pinned by name (the 7th place's Muon + AdamW at the common Muon defaults)."""

    topo_defaults: ClassVar[dict[str, Any]] = {"optimizer": "muon"}


EPOCH_VARIANTS: tuple[int, ...] = (5, 50, 100, 250, 500, 2000, 4000)


def scaled_warmup(num_epochs: int) -> int:
    """Warmup of a ``_<N>epochs`` variant: the default 10 epochs, but at most a tenth of the run and at least one
    epoch (``min(10, max(1, N // 10))``: 5 -> 1, 50 -> 5, 100 and more -> 10). The final anneal
    (``plateau_final_anneal``) is a fraction of ``num_epochs`` and scales by itself."""
    return min(10, max(1, num_epochs // 10))


def _epochs(num_epochs: int) -> dict[str, Any]:
    return {"num_epochs": num_epochs, "warmup_epochs": scaled_warmup(num_epochs)}


# the ``_<N>epochs`` variants in nnU-Net's naming, one per EPOCH_VARIANTS entry (tests/test_trainer_discovery.py
# checks that they agree)


class nnUNetTrainerTopoWarmup_5epochs(nnUNetTrainerTopoWarmup):
    """nnUNetTrainerTopoWarmup with 5 epochs (warmup 1 epochs)."""

    topo_defaults: ClassVar[dict[str, Any]] = _epochs(5)
    topo_fixed_keys: ClassVar[tuple[str, ...]] = ("num_epochs",)


class nnUNetTrainerTopoWarmup_50epochs(nnUNetTrainerTopoWarmup):
    """nnUNetTrainerTopoWarmup with 50 epochs (warmup 5 epochs)."""

    topo_defaults: ClassVar[dict[str, Any]] = _epochs(50)
    topo_fixed_keys: ClassVar[tuple[str, ...]] = ("num_epochs",)


class nnUNetTrainerTopoWarmup_100epochs(nnUNetTrainerTopoWarmup):
    """nnUNetTrainerTopoWarmup with 100 epochs (warmup 10 epochs)."""

    topo_defaults: ClassVar[dict[str, Any]] = _epochs(100)
    topo_fixed_keys: ClassVar[tuple[str, ...]] = ("num_epochs",)


class nnUNetTrainerTopoWarmup_250epochs(nnUNetTrainerTopoWarmup):
    """nnUNetTrainerTopoWarmup with 250 epochs (warmup 10 epochs)."""

    topo_defaults: ClassVar[dict[str, Any]] = _epochs(250)
    topo_fixed_keys: ClassVar[tuple[str, ...]] = ("num_epochs",)


class nnUNetTrainerTopoWarmup_500epochs(nnUNetTrainerTopoWarmup):
    """nnUNetTrainerTopoWarmup with 500 epochs (warmup 10 epochs)."""

    topo_defaults: ClassVar[dict[str, Any]] = _epochs(500)
    topo_fixed_keys: ClassVar[tuple[str, ...]] = ("num_epochs",)


class nnUNetTrainerTopoWarmup_2000epochs(nnUNetTrainerTopoWarmup):
    """nnUNetTrainerTopoWarmup with 2000 epochs (warmup 10 epochs)."""

    topo_defaults: ClassVar[dict[str, Any]] = _epochs(2000)
    topo_fixed_keys: ClassVar[tuple[str, ...]] = ("num_epochs",)


class nnUNetTrainerTopoWarmup_4000epochs(nnUNetTrainerTopoWarmup):
    """nnUNetTrainerTopoWarmup with 4000 epochs (warmup 10 epochs)."""

    topo_defaults: ClassVar[dict[str, Any]] = _epochs(4000)
    topo_fixed_keys: ClassVar[tuple[str, ...]] = ("num_epochs",)
