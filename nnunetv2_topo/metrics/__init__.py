"""The Vesuvius leaderboard metric (TopoScore, SurfaceDice@2, VOI), exact and fast.

``leaderboard_score(pred, gt)`` scores one volume; ``evaluate_folders(pred_dir, gt_dir)`` scores a folder pair.
"""

from nnunetv2_topo.metrics.evaluate import EvaluationError, evaluate_folders
from nnunetv2_topo.metrics.leaderboard import MetricInputError, binarize_pair, leaderboard_score
from nnunetv2_topo.metrics.surface_dice import surface_dice
from nnunetv2_topo.metrics.topo_score import topo_counts, topo_score, topo_score_from_counts
from nnunetv2_topo.metrics.voi import voi, voi_score

__all__ = [
    "EvaluationError",
    "MetricInputError",
    "binarize_pair",
    "evaluate_folders",
    "leaderboard_score",
    "surface_dice",
    "topo_counts",
    "topo_score",
    "topo_score_from_counts",
    "voi",
    "voi_score",
]
