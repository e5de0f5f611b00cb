"""Choose post-processing (and fusion) settings by the exact competition score: ``nnunetv2_topo tune``."""

from nnunetv2_topo.tuning.evaluator import CaseSource, Evaluator, TileCountCache
from nnunetv2_topo.tuning.run import TuneOutcome, tune
from nnunetv2_topo.tuning.search import ablation, coordinate_descent, cross_validate
from nnunetv2_topo.tuning.space import no_postprocessing, search_space

__all__ = [
    "CaseSource",
    "Evaluator",
    "TileCountCache",
    "TuneOutcome",
    "ablation",
    "coordinate_descent",
    "cross_validate",
    "no_postprocessing",
    "search_space",
    "tune",
]
