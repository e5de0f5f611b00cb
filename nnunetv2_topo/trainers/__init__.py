"""The TopoWarmup nnU-Net trainers (``nnUNetv2_train ... -tr nnUNetTrainerTopoWarmup[_VARIANT]``).

nnU-Net finds them by name through ``nnUNet_extTrainer`` (see :mod:`nnunetv2_topo.trainer_discovery`). Every trainer
class of the package is listed here by name (``tests/test_trainer_discovery.py`` checks that none is missing).
"""

from nnunetv2_topo.trainers.baseline import nnUNetTrainer_TopoBudget
from nnunetv2_topo.trainers.topo_warmup import nnUNetTrainerTopoWarmup
from nnunetv2_topo.trainers.variants import (
    nnUNetTrainerTopoWarmup_5epochs,
    nnUNetTrainerTopoWarmup_50epochs,
    nnUNetTrainerTopoWarmup_100epochs,
    nnUNetTrainerTopoWarmup_250epochs,
    nnUNetTrainerTopoWarmup_500epochs,
    nnUNetTrainerTopoWarmup_2000epochs,
    nnUNetTrainerTopoWarmup_4000epochs,
    nnUNetTrainerTopoWarmup_AdamW,
    nnUNetTrainerTopoWarmup_BettiMatching,
    nnUNetTrainerTopoWarmup_clDice,
    nnUNetTrainerTopoWarmup_DiceFocal,
    nnUNetTrainerTopoWarmup_FiveTerm,
    nnUNetTrainerTopoWarmup_Muon,
    nnUNetTrainerTopoWarmup_Phased,
    nnUNetTrainerTopoWarmup_SGD,
    nnUNetTrainerTopoWarmup_SkelRecall,
)

__all__ = [
    "nnUNetTrainerTopoWarmup",
    "nnUNetTrainer_TopoBudget",
    "nnUNetTrainerTopoWarmup_AdamW",
    "nnUNetTrainerTopoWarmup_BettiMatching",
    "nnUNetTrainerTopoWarmup_DiceFocal",
    "nnUNetTrainerTopoWarmup_FiveTerm",
    "nnUNetTrainerTopoWarmup_Muon",
    "nnUNetTrainerTopoWarmup_SGD",
    "nnUNetTrainerTopoWarmup_Phased",
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
