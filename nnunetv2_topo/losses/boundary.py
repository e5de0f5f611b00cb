"""Boundary loss of the original five-term recipe: binary cross-entropy weighted by a band around the target
boundary."""

from __future__ import annotations

from torch import Tensor

from nnunetv2_topo import IGNORE_LABEL
from nnunetv2_topo.losses.base import LossTerm, TermSpec
from nnunetv2_topo.losses.masking import FgParts, bce_with_logits
from nnunetv2_topo.transforms.targets import BOUNDARY_BAND


class BoundaryTerm(LossTerm):
    """``Σ(BCE · w) / Σ w`` per sample, ``w`` = band weight: 1 within ``band[0]`` voxels of the target boundary
    (signed Euclidean distance of the target, ignore set to background), linear to 0 at ``band[1]``, 0 on ignore
    voxels. Averaged over the samples with a non-empty band: a sample without a boundary (or entirely ignore) is
    left out, not counted as 0. Not Kervadec's signed-distance loss.

    ``band`` (B, 1, ...) comes precomputed from :class:`~nnunetv2_topo.transforms.TopoTargetsTransform`; when it is
    None it is computed on the fly on the CPU from the labels (correct, slower)."""

    def __init__(
        self, ignore_label: int | None = IGNORE_LABEL, band: tuple[float, float] = BOUNDARY_BAND.default
    ) -> None:
        super().__init__(ignore_label)
        self.band = BOUNDARY_BAND.checked(band)

    def per_sample(self, parts: FgParts, band: Tensor | None = None, **maps: Tensor) -> tuple[Tensor, Tensor]:
        w = self.target_map(parts, "band", band, boundary_band=self.band)
        dims = parts.spatial_dims
        total = w.sum(dims)
        return (bce_with_logits(parts) * w).sum(dims) / total.clamp_min(1e-6), total > 0


SPEC = TermSpec("boundary", BoundaryTerm, target="band")
