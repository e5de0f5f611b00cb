"""Skeleton recall (Kirchhoff et al., ECCV 2024) on the per-z-slice medial surface of the target."""

from __future__ import annotations

from torch import Tensor

from nnunetv2_topo.losses.base import LossTerm
from nnunetv2_topo.losses.masking import FgParts, check_map
from nnunetv2_topo.transforms.topo_targets import compute_batch_target


class SkeletonRecallTerm(LossTerm):
    """``1 − (Σ p·skel + s) / (Σ skel + s)`` per sample (batch mean), ``s = 1e-5``, sums over annotated voxels:
    the share of the target's medial surface that the prediction covers (the paper's ``−recall``, shifted by 1 so
    the minimum is 0; same gradient). A sample without skeleton contributes 0.

    ``skeleton`` (B, 1, ...) comes precomputed from :class:`~nnunetv2_topo.transforms.TopoTargetsTransform` (2-D
    skeleton of every z-slice, ignore → background, optional tube); when None it is computed on the fly on the CPU
    (correct, slower: a host-device round trip and ~10-200 ms per 128³ sample inside the training step)."""

    def __init__(self, ignore_label: int | None = 2, tube: int = 0, smooth: float = 1e-5) -> None:
        super().__init__(ignore_label)
        if isinstance(tube, bool) or int(tube) != tube or tube < 0:
            raise ValueError(f"skeleton_tube must be an integer >= 0, got {tube!r}")
        self.tube = int(tube)
        self.smooth = float(smooth)

    def compute(self, parts: FgParts, skeleton: Tensor | None = None, **maps: Tensor) -> Tensor:
        if skeleton is None:
            skeleton = compute_batch_target(parts.labels, "skeleton", parts.ignore_label, skeleton_tube=self.tube)
        skel = check_map(skeleton, parts.logit, "skeleton") * parts.valid_f
        dims = parts.spatial_dims
        recall = ((parts.prob * skel).sum(dims) + self.smooth) / (skel.sum(dims) + self.smooth)
        return (1.0 - recall).mean()
