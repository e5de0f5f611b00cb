"""Choose the ensemble (weights, fusion, checkpoints) and the post-processing by the exact competition score:
``nnunetv2_topo tune``."""

from nnunetv2_topo.tuning.ensemble import EnsembleSpace, Setting
from nnunetv2_topo.tuning.evaluator import CaseSource, Evaluator, TileCountCache
from nnunetv2_topo.tuning.search import (
    ablation,
    choice_stability,
    coordinate_descent,
    cross_validate,
    without_models,
)
from nnunetv2_topo.tuning.space import no_postprocessing, search_space
from nnunetv2_topo.tuning.tuner import TuneOutcome, tune

__all__ = [
    "CaseSource",
    "EnsembleSpace",
    "Evaluator",
    "Setting",
    "TileCountCache",
    "TuneOutcome",
    "ablation",
    "choice_stability",
    "coordinate_descent",
    "cross_validate",
    "no_postprocessing",
    "search_space",
    "tune",
    "without_models",
]
