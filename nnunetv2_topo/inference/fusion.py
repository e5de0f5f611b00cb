"""Re-export of the fusion rule, which lives in :mod:`nnunetv2_topo.postprocessing.fusion` (an algorithm: the
``postprocess.json`` format and ``tune`` need it without the inference workflow)."""

from nnunetv2_topo.postprocessing.fusion import (
    FUSION_MODES,
    LOGIT_CLAMP,
    Fusion,
    check_fusion_weights,
    logit_to_probability,
    probability_to_logit,
)

__all__ = [
    "FUSION_MODES",
    "LOGIT_CLAMP",
    "Fusion",
    "check_fusion_weights",
    "logit_to_probability",
    "probability_to_logit",
]
