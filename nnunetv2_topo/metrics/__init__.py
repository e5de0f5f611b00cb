"""The Vesuvius leaderboard metric (TopoScore, SurfaceDice@2, VOI), exact and fast.

``leaderboard_score(pred, gt)`` scores one volume; a folder pair is scored by
:func:`nnunetv2_topo.evaluation.folder_scoring.evaluate_folders`.
"""

from nnunetv2_topo.metrics.leaderboard import MetricInputError, binarize_pair, leaderboard_score
from nnunetv2_topo.metrics.surface_dice import surface_dice
from nnunetv2_topo.metrics.topo_score import topo_counts, topo_score, topo_score_from_counts
from nnunetv2_topo.metrics.voi import voi, voi_score

__all__ = [
    "MetricInputError",
    "binarize_pair",
    "leaderboard_score",
    "surface_dice",
    "topo_counts",
    "topo_score",
    "topo_score_from_counts",
    "voi",
    "voi_score",
]
