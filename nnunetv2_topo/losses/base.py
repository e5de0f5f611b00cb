"""Common base of the loss terms: a module usable on its own (``term(logits, target)``) whose ``compute`` the
compound loss calls with shared :class:`~nnunetv2_topo.losses.masking.FgParts` (computed once per scale)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nnunetv2_topo.losses.masking import FgParts


class LossTerm(nn.Module):
    """One term on 2-channel logits ``(B, 2, *spatial)`` and labels ``(B, 1, *spatial)`` with an ignore label.

    Subclasses implement :meth:`compute`. Calling the module prepares the shared tensors in fp32 with autocast
    disabled, so the term is safe under fp16/bf16 autocast.
    """

    def __init__(self, ignore_label: int | None = 2) -> None:
        super().__init__()
        self.ignore_label = ignore_label

    def compute(self, parts: FgParts, **maps: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, logits: Tensor, target: Tensor, **maps: Tensor | None) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            parts = FgParts(logits, target, self.ignore_label)
            return self.compute(parts, **maps)
