"""CPU-side target transforms for the topology losses (run in nnU-Net's data-augmentation workers)."""

from nnunetv2_topo.transforms.targets import compute_band, compute_skeleton, signed_distance
from nnunetv2_topo.transforms.topo_targets import (
    BAND_SCALE,
    TARGET_ORDER,
    TARGETS,
    TargetSpec,
    TopoTargetsTransform,
    compute_batch_target,
    decode_band,
    encode_band,
    split_topo_targets,
)

__all__ = [
    "BAND_SCALE",
    "TARGETS",
    "TARGET_ORDER",
    "TargetSpec",
    "TopoTargetsTransform",
    "compute_band",
    "compute_batch_target",
    "compute_skeleton",
    "decode_band",
    "encode_band",
    "signed_distance",
    "split_topo_targets",
]
