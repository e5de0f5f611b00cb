"""α-balanced focal loss (Lin et al. 2017) on the softmax foreground probability."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from nnunetv2_topo.losses.base import LossTerm
from nnunetv2_topo.losses.masking import FgParts


class FocalTerm(LossTerm):
    """``α_t · (1 − p_t)^γ · BCE`` with ``α_t = α`` on foreground, ``1 − α`` on background; the mean over each
    sample's annotated voxels, averaged over the batch. Computed from log-sigmoids of the logit, so it stays finite
    for any logit and any ``γ >= 0`` (``γ = 0``, ``α = 0.5`` is half the BCE)."""

    def __init__(self, ignore_label: int | None = 2, alpha: float = 0.25, gamma: float = 2.0) -> None:
        super().__init__(ignore_label)
        if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
            raise ValueError(f"focal_alpha must be a number in [0, 1], got {alpha!r}")
        if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma >= 0.0):
            raise ValueError(f"focal_gamma must be a finite number >= 0, got {gamma!r}")
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def compute(self, parts: FgParts, **maps: Tensor) -> Tensor:
        t = parts.target
        signed = parts.logit * (2.0 * t - 1.0)  # logit of p_t
        log_pt = F.logsigmoid(signed)
        loss = log_pt * ((1.0 - 2.0 * self.alpha) * t + (self.alpha - 1.0))  # -alpha_t * log(p_t)
        if self.gamma != 0.0:
            loss = loss * torch.exp(self.gamma * (log_pt - signed))  # (1 - p_t)^gamma, log(1 - p_t) = log_pt - z
        return parts.per_sample_mean(loss)
