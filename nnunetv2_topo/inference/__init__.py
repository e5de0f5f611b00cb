"""Probability inputs and multi-model fusion: ``read_probability``, ``paired_cases``, ``Fusion``."""

from nnunetv2_topo.inference.fusion import (
    FUSION_MODES,
    LOGIT_CLAMP,
    Fusion,
    check_fusion_weights,
    logit_to_probability,
    probability_to_logit,
)
from nnunetv2_topo.inference.probabilities import (
    ProbabilityError,
    fuse_probability_files,
    index_cases,
    model_folds,
    paired_cases,
    read_probability,
)

__all__ = [
    "FUSION_MODES",
    "LOGIT_CLAMP",
    "Fusion",
    "ProbabilityError",
    "check_fusion_weights",
    "fuse_probability_files",
    "index_cases",
    "logit_to_probability",
    "model_folds",
    "paired_cases",
    "probability_to_logit",
    "read_probability",
]
