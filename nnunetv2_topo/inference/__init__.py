"""Inference: fusing several models' maps, and ``predict`` (trained models -> post-processed volumes)."""

from nnunetv2_topo.inference.fusion import (
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
