"""Skeleton recall (Kirchhoff et al., ECCV 2024) on the per-z-slice medial surface of the target."""

from __future__ import annotations

from torch import Tensor

from nnunetv2_topo import IGNORE_LABEL
from nnunetv2_topo.losses.base import LossTerm, TermSpec
from nnunetv2_topo.losses.masking import FgParts
from nnunetv2_topo.transforms.targets import SKELETON_TUBE


class SkeletonRecallTerm(LossTerm):
    """``1 − (Σ p·skel + s) / (Σ skel + s)`` per sample, ``s = 1e-5``, sums over annotated voxels: the share of
    the target's medial surface that the prediction covers (the paper's ``−recall``, shifted by 1 so the minimum is
    0; same gradient). Averaged over the samples whose skeleton is non-empty: a sample without skeleton (no
    foreground, or entirely ignore) has no recall to measure and is left out, not counted as 0.

    ``skeleton`` (B, 1, ...) comes precomputed from :class:`~nnunetv2_topo.transforms.TopoTargetsTransform` (2-D
    skeleton of every z-slice, ignore → background, optional tube); when None it is computed on the fly on the CPU
    (correct, slower: a host-device round trip and ~10-200 ms per 128³ sample inside the training step)."""

    def __init__(
        self, ignore_label: int | None = IGNORE_LABEL, tube: int = SKELETON_TUBE.default, smooth: float = 1e-5
    ) -> None:
        super().__init__(ignore_label)
        self.tube = SKELETON_TUBE.checked(tube)
        self.smooth = float(smooth)

    def per_sample(self, parts: FgParts, skeleton: Tensor | None = None, **maps: Tensor) -> tuple[Tensor, Tensor]:
        skel = self.target_map(parts, "skeleton", skeleton, skeleton_tube=self.tube)
        dims = parts.spatial_dims
        total = skel.sum(dims)
        recall = ((parts.prob * skel).sum(dims) + self.smooth) / (total + self.smooth)
        return 1.0 - recall, total > 0


SPEC = TermSpec("skeleton_recall", SkeletonRecallTerm, target="skeleton")
