"""Topology-aware loss terms for nnU-Net's 2-channel logits with an ignore label.

``from nnunetv2_topo.losses import TopologyLoss`` — see :class:`~nnunetv2_topo.losses.compound.TopologyLoss`.
The single terms are modules usable on their own: ``FocalTerm()(logits, target)``. Each declares itself in a
:class:`~nnunetv2_topo.losses.base.TermSpec`; :data:`~nnunetv2_topo.losses.registry.TERMS` lists them.
"""

from nnunetv2_topo.losses.base import LossTerm, TermSpec
from nnunetv2_topo.losses.betti_matching import BettiMatchingTerm
from nnunetv2_topo.losses.boundary import BoundaryTerm
from nnunetv2_topo.losses.cldice import ClDiceTerm
from nnunetv2_topo.losses.compound import TermValues, TopologyLoss, default_ds_weights
from nnunetv2_topo.losses.dilated_mse import DilatedMSETerm
from nnunetv2_topo.losses.focal import FocalTerm
from nnunetv2_topo.losses.morphology import soft_dilate, soft_erode, soft_skeleton
from nnunetv2_topo.losses.overlap import CrossEntropyTerm, DiceTerm
from nnunetv2_topo.losses.registry import TERM_NAMES, TERMS, check_weights
from nnunetv2_topo.losses.skeleton_recall import SkeletonRecallTerm

__all__ = [
    "TERMS",
    "TERM_NAMES",
    "BettiMatchingTerm",
    "BoundaryTerm",
    "ClDiceTerm",
    "DilatedMSETerm",
    "CrossEntropyTerm",
    "DiceTerm",
    "FocalTerm",
    "LossTerm",
    "SkeletonRecallTerm",
    "TermSpec",
    "TermValues",
    "TopologyLoss",
    "check_weights",
    "default_ds_weights",
    "soft_dilate",
    "soft_erode",
    "soft_skeleton",
]
