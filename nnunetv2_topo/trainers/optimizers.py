"""The ``optimizer`` key: nnU-Net's SGD (momentum 0.99, Nesterov) or torch's AdamW."""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["build_optimizer"]


def build_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """A fresh optimizer of kind ``name`` (``sgd`` | ``adamw``)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr, weight_decay=weight_decay, momentum=0.99, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be sgd or adamw, got {name!r}")
