"""The TopoWarmup nnU-Net trainers (``nnUNetv2_train ... -tr nnUNetTrainerTopoWarmup[_VARIANT]``).

nnU-Net finds them by name through ``nnUNet_extTrainer`` (see :mod:`nnunetv2_topo.trainer_discovery`).
"""

from nnunetv2_topo.trainers import variants as _variants
from nnunetv2_topo.trainers.baseline import nnUNetTrainer_TopoBudget
from nnunetv2_topo.trainers.topo_warmup import nnUNetTrainerTopoWarmup

__all__ = ["nnUNetTrainerTopoWarmup", "nnUNetTrainer_TopoBudget"] + [
    n for n in _variants.__all__ if n.startswith("nnUNetTrainer")
]

globals().update({_name: getattr(_variants, _name) for _name in __all__[2:]})
