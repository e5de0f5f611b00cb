"""Boundary loss of the seed: binary cross-entropy weighted by a band around the target boundary."""

from __future__ import annotations

from torch import Tensor

from nnunetv2_topo.losses.base import LossTerm
from nnunetv2_topo.losses.masking import FgParts, bce_with_logits, check_map
from nnunetv2_topo.transforms.targets import check_band
from nnunetv2_topo.transforms.topo_targets import compute_batch_target


class BoundaryTerm(LossTerm):
    """``Σ(BCE · w) / Σ w`` per sample (batch mean), ``w`` = band weight: 1 within ``band[0]`` voxels of the target
    boundary (signed Euclidean distance of the target, ignore set to background), linear to 0 at ``band[1]``,
    0 on ignore voxels. A sample without a boundary contributes 0. Not Kervadec's signed-distance loss.

    ``band`` (B, 1, ...) comes precomputed from :class:`~nnunetv2_topo.transforms.TopoTargetsTransform`; when it is
    None it is computed on the fly on the CPU from the labels (correct, slower)."""

    def __init__(self, ignore_label: int | None = 2, band: tuple[float, float] = (3.0, 5.0)) -> None:
        super().__init__(ignore_label)
        self.band = check_band(band)

    def compute(self, parts: FgParts, band: Tensor | None = None, **maps: Tensor) -> Tensor:
        if band is None:
            band = compute_batch_target(parts.labels, "band", parts.ignore_label, boundary_band=self.band)
        w = check_map(band, parts.logit, "band") * parts.valid_f
        dims = parts.spatial_dims
        per_sample = (bce_with_logits(parts) * w).sum(dims) / w.sum(dims).clamp_min(1e-6)
        return per_sample.mean()
