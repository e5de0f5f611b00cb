"""From probability maps to binary predictions: reading, fusion, scoring and tuning of the post-processing."""

from nnunetv2_topo.inference.fusion import FUSION_MODES, Fusion, check_fusion_weights
from nnunetv2_topo.inference.probabilities import ProbabilityError, index_cases, paired_cases, read_probability

__all__ = [
    "FUSION_MODES",
    "Fusion",
    "ProbabilityError",
    "check_fusion_weights",
    "index_cases",
    "paired_cases",
    "read_probability",
]
