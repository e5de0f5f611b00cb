"""Thin re-export of the TopoWarmup trainers for nnU-Net's ``nnUNet_extTrainer`` search.

nnU-Net imports this file as a top-level module and looks the trainer up by name; every name here is the very class
object of :mod:`nnunetv2_topo.trainers` (nothing is defined in this file).
"""

import nnunetv2_topo.trainers as _trainers

globals().update({_name: getattr(_trainers, _name) for _name in _trainers.__all__})
__all__ = list(_trainers.__all__)
