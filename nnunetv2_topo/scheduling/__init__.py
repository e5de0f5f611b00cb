"""LR scheduling for the TopoWarmup trainers: per-epoch linear warmup, then ``ReduceLROnPlateau`` on a validation
signal (:mod:`nnunetv2_topo.scheduling.warmup_plateau`), driven by :class:`PlateauDriver` (which signal, its EMA, the
log text of LR cuts; :mod:`nnunetv2_topo.scheduling.plateau_driver`)."""

from nnunetv2_topo.scheduling.plateau_driver import PLATEAU_METRICS, PLATEAU_MODES, PlateauDriver, smoothed
from nnunetv2_topo.scheduling.warmup_plateau import WarmupPlateauScheduler, warmup_lr

__all__ = ["PLATEAU_METRICS", "PLATEAU_MODES", "PlateauDriver", "WarmupPlateauScheduler", "smoothed", "warmup_lr"]
