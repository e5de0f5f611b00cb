"""Exponential moving average of the network weights (``ema_decay``), on torch's own ``AveragedModel``.

``ema = decay * ema + (1 - decay) * weights`` after every optimizer step, for parameters and buffers alike
(``get_ema_multi_avg_fn``; the first update copies the weights). The trainer validates with the averaged weights,
saves them as ``network_weights`` (what ``nnUNetv2_predict`` loads) and keeps the raw weights and this state for
``--c``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch._dynamo import OptimizedModule
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["WeightEMA", "unwrap_network"]


def unwrap_network(network: nn.Module) -> nn.Module:
    """The plain module behind DDP's ``.module`` and torch.compile's ``_orig_mod`` (whose state_dict keys are the
    ones nnU-Net saves)."""
    module = network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network
    if isinstance(module, OptimizedModule):
        module = module._orig_mod
    return module


class WeightEMA:
    """The EMA of ``module``'s parameters and buffers (``decay`` in (0, 1))."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        self.decay = float(decay)
        self.averaged = AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.averaged.update_parameters(module)

    @property
    def num_updates(self) -> int:
        return int(self.averaged.n_averaged)

    def weights(self) -> dict[str, torch.Tensor]:
        """The averaged weights under the plain module's state_dict keys (before the first update: the copy)."""
        return self.averaged.module.state_dict()

    def state_dict(self) -> dict[str, Any]:
        """Decay and update count; the averaged weights are the checkpoint's ``network_weights`` (stored once)."""
        return {"decay": self.decay, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any], weights: dict[str, torch.Tensor] | None = None) -> None:
        """Restore :meth:`state_dict` with the averaged ``weights`` (``network_weights`` of the checkpoint); an
        older state holding the averaged model itself (``averaged``) needs none."""
        if "averaged" in state:
            self.averaged.load_state_dict(state["averaged"])
            return
        if weights is None:
            raise ValueError("WeightEMA.load_state_dict needs the averaged weights (the checkpoint's network_weights)")
        self.averaged.module.load_state_dict(weights)
        self.averaged.n_averaged.fill_(int(state["num_updates"]))

    @contextmanager
    @torch.no_grad()
    def applied_to(self, module: nn.Module) -> Iterator[None]:
        """``module`` holds the averaged weights inside the block and its own weights again afterwards (copied in
        place, so the optimizer's references stay valid)."""
        raw = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(self.weights())
        try:
            yield
        finally:
            module.load_state_dict(raw)
