"""The ``dilated_mse`` term of the original five-term recipe, which called it "connectivity": a dilated mean squared
error. It does not measure topology (``connectivity`` is still accepted as a deprecated alias of its key, see
:data:`~nnunetv2_topo.losses.registry.TERM_ALIASES`)."""

from __future__ import annotations

import torch
from torch import Tensor

from nnunetv2_topo.losses.base import LossTerm, TermSpec
from nnunetv2_topo.losses.masking import FgParts
from nnunetv2_topo.losses.morphology import soft_dilate


class DilatedMSETerm(LossTerm):
    """Mean over annotated voxels (per sample; batch mean over the samples that have any) of
    ``(maxpool3(p) − maxpool3(t))²``, 3×3×3 max-pooling, probability and target 0 at ignore voxels.

    What it measures, honestly: the squared error between the *dilated* prediction and the *dilated* target. It
    tolerates one-voxel shifts of a boundary, and its gradient reaches only the largest probability of each
    neighbourhood. It counts no components, holes or tunnels: a prediction with a one-voxel gap through a sheet
    scores nearly the same as an intact one (the gap disappears under the dilation). The original recipe called it
    "connectivity"."""

    def per_sample(self, parts: FgParts, **maps: Tensor) -> tuple[Tensor, Tensor]:
        dilated_p = soft_dilate(parts.prob_masked)
        with torch.no_grad():
            dilated_t = soft_dilate(parts.target)
        return parts.voxel_mean((dilated_p - dilated_t) ** 2), parts.labelled


SPEC = TermSpec("dilated_mse", DilatedMSETerm)
