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
    "nnUNetTrainerTopoWarmup_DiceFocal",
    "nnUNetTrainerTopoWarmup_FiveTerm",
    "nnUNetTrainerTopoWarmup_SkelRecall",
    "nnUNetTrainerTopoWarmup_clDice",
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
    """The original recipe's optimizer, AdamW with base LR 1e-4 and weight decay 1e-5, with the default loss."""

    topo_defaults: ClassVar[dict[str, Any]] = {
        "optimizer": "adamw",
        "initial_lr": 1e-4,
        "weight_decay": 1e-5,
        "plateau_min_lr": 1e-7,  # the default's 0.1 % of the base LR
    }


EPOCH_VARIANTS: tuple[int, ...] = (5, 50, 100, 250, 500, 2000, 4000)


def scaled_warmup(num_epochs: int) -> int:
    """Warmup of a ``_<N>epochs`` variant: the default 10 epochs, but at most a tenth of the run and at least one
    epoch (``min(10, max(1, N // 10))``: 5 -> 1, 50 -> 5, 100 and more -> 10). The final anneal
    (``plateau_final_anneal``) is a fraction of ``num_epochs`` and scales by itself."""
    return min(10, max(1, num_epochs // 10))


def _epoch_variant(num_epochs: int) -> type[nnUNetTrainerTopoWarmup]:
    """``nnUNetTrainerTopoWarmup_<N>epochs`` in nnU-Net's naming, defined as a module attribute so nnU-Net's
    ``getattr(module, name)`` discovery and pickling find it."""
    name = f"nnUNetTrainerTopoWarmup_{num_epochs}epochs"
    cls = type(
        name,
        (nnUNetTrainerTopoWarmup,),
        {
            "topo_defaults": {"num_epochs": num_epochs, "warmup_epochs": scaled_warmup(num_epochs)},
            "topo_fixed_keys": ("num_epochs",),
            "__module__": __name__,
            "__qualname__": name,
            "__doc__": f"nnUNetTrainerTopoWarmup with {num_epochs} epochs (warmup {scaled_warmup(num_epochs)} epochs).",
        },
    )
    globals()[name] = cls
    __all__.append(name)
    return cls


for _n in EPOCH_VARIANTS:
    _epoch_variant(_n)
del _n
