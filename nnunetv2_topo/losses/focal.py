"""α-balanced focal loss (Lin et al. 2017) on the softmax foreground probability."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nnunetv2_topo import IGNORE_LABEL
from nnunetv2_topo.losses.base import LossTerm, TermSpec
from nnunetv2_topo.losses.masking import FgParts
from nnunetv2_topo.setting_checks import Param, closed_unit, non_negative, number

ALPHA = Param("focal_alpha", "alpha", 0.25, "float in [0, 1]", "focal loss alpha (foreground weight)", number,
              closed_unit)  # fmt: skip
GAMMA = Param("focal_gamma", "gamma", 2.0, "float >= 0", "focal loss gamma", number, non_negative)


class FocalTerm(LossTerm):
    """``α_t · (1 − p_t)^γ · BCE`` with ``α_t = α`` on foreground, ``1 − α`` on background; the mean over each
    sample's annotated voxels, averaged over the samples that have any (all-ignore samples left out). Computed from
    log-sigmoids of the logit, so it stays finite for any logit and any ``γ >= 0`` (``γ = 0``, ``α = 0.5`` is half
    the BCE)."""

    def __init__(
        self, ignore_label: int | None = IGNORE_LABEL, alpha: float = ALPHA.default, gamma: float = GAMMA.default
    ) -> None:
        super().__init__(ignore_label)
        self.alpha = ALPHA.checked(alpha)
        self.gamma = GAMMA.checked(gamma)

    def per_sample(self, parts: FgParts, **maps: Tensor) -> tuple[Tensor, Tensor]:
        t = parts.target
        signed = parts.logit * (2.0 * t - 1.0)  # logit of p_t
        log_pt = F.logsigmoid(signed)
        loss = log_pt * ((1.0 - 2.0 * self.alpha) * t + (self.alpha - 1.0))  # -alpha_t * log(p_t)
        if self.gamma != 0.0:
            loss = loss * torch.exp(self.gamma * (log_pt - signed))  # (1 - p_t)^gamma, log(1 - p_t) = log_pt - z
        return parts.voxel_mean(loss), parts.labelled


SPEC = TermSpec("focal", FocalTerm, every_scale=True, params=(ALPHA, GAMMA))
