"""LR scheduling for the TopoWarmup trainers: per-epoch linear warmup, then ``ReduceLROnPlateau`` on a validation
metric (:mod:`nnunetv2_topo.scheduling.warmup_plateau`)."""

from nnunetv2_topo.scheduling.warmup_plateau import WarmupPlateauScheduler, warmup_lr

__all__ = ["WarmupPlateauScheduler", "warmup_lr"]
