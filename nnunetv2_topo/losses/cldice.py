"""clDice (Shit et al., CVPR 2021) with the soft skeleton, on the foreground probability."""

from __future__ import annotations

import torch
from torch import Tensor

from nnunetv2_topo import IGNORE_LABEL
from nnunetv2_topo.losses.base import LossTerm, TermSpec
from nnunetv2_topo.losses.masking import FgParts
from nnunetv2_topo.losses.morphology import soft_skeleton
from nnunetv2_topo.setting_checks import Param, at_least_one, integer

ITERATIONS = Param("cldice_iterations", "iterations", 3, "int >= 1", "soft-skeleton iterations of clDice", integer,
                   at_least_one)  # fmt: skip


class ClDiceTerm(LossTerm):
    """``1 − 2·Tprec·Tsens / (Tprec + Tsens)`` per sample, averaged over the samples with annotated voxels (an
    all-ignore sample would score 0 and is left out), with
    ``Tprec = (Σ skel(p)·t + s) / (Σ skel(p) + s)`` and ``Tsens = (Σ skel(t)·p + s) / (Σ skel(t) + s)``, sums over
    annotated voxels, ``s = 1`` (the reference implementation's smoothing). Probability and target are 0 at ignore
    voxels before skeletonisation. The target's skeleton is computed without autograd; the prediction's uses the
    uint8-index min/max filters of :mod:`~nnunetv2_topo.losses.morphology`."""

    def __init__(
        self, ignore_label: int | None = IGNORE_LABEL, iterations: int = ITERATIONS.default, smooth: float = 1.0
    ) -> None:
        super().__init__(ignore_label)
        if not smooth > 0:
            raise ValueError(f"cldice smooth must be > 0, got {smooth!r}")
        self.iterations = ITERATIONS.checked(iterations)
        self.smooth = float(smooth)

    def per_sample(self, parts: FgParts, **maps: Tensor) -> tuple[Tensor, Tensor]:
        p, t, v = parts.prob_masked, parts.target, parts.valid_f
        dims, s = parts.spatial_dims, self.smooth
        skel_p = soft_skeleton(p, self.iterations) * v
        with torch.no_grad():
            skel_t = soft_skeleton(t, self.iterations) * v
        t_prec = ((skel_p * t).sum(dims) + s) / (skel_p.sum(dims) + s)
        t_sens = ((skel_t * p).sum(dims) + s) / (skel_t.sum(dims) + s)
        return 1.0 - 2.0 * t_prec * t_sens / (t_prec + t_sens), parts.labelled


SPEC = TermSpec("cldice", ClDiceTerm, params=(ITERATIONS,))
