"""The ``optimizer`` key: nnU-Net's SGD (momentum 0.99, Nesterov), torch's AdamW, or Muon + AdamW/SGD
(:mod:`.muon`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from nnunetv2_topo.trainers.muon import MuonHybrid, split_muon_parameters

__all__ = ["OPTIMIZERS", "build_optimizer"]

OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw", "muon")


def build_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter] | torch.nn.Module,
    lr: float,
    weight_decay: float,
    config: Mapping[str, Any] | None = None,
) -> torch.optim.Optimizer:
    """A fresh optimizer of kind ``name`` (``sgd`` | ``adamw`` | ``muon``). ``muon`` needs the network as
    ``params`` (it splits the parameters by role) and reads ``muon_other``, ``muon_other_lr`` and
    ``muon_weight_decay`` from ``config``."""
    if name == "muon":
        if not isinstance(params, torch.nn.Module):
            raise TypeError("optimizer 'muon' needs the network (it splits the parameters by role)")
        cfg = dict(config or {})
        muon, other = split_muon_parameters(params)
        return MuonHybrid(muon, other, lr, other=cfg.get("muon_other", "adamw"), other_lr=cfg.get("muon_other_lr"),
                          weight_decay=weight_decay, muon_weight_decay=cfg.get("muon_weight_decay", 0.1))  # fmt: skip
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    if name == "sgd":
        return torch.optim.SGD(params, lr, weight_decay=weight_decay, momentum=0.99, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
