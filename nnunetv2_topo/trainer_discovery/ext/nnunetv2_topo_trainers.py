"""Thin re-export of the TopoWarmup trainers for nnU-Net's ``nnUNet_extTrainer`` search.

nnU-Net imports this file as a top-level module and looks the trainer up by name; every name here is the very class
object of :mod:`nnunetv2_topo.trainers` (nothing is defined in this file; the names are written out so that grep
finds them, and ``tests/test_trainer_discovery.py`` checks that they are all of ``nnunetv2_topo.trainers.__all__``).
"""

from nnunetv2_topo.trainers import (
    nnUNetTrainer_TopoBudget,
    nnUNetTrainerTopoWarmup,
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
