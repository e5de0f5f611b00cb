"""Exponential moving average of the network weights (``ema_decay``).

``ema = decay * ema + (1 - decay) * weights`` after every optimizer step, for parameters and buffers alike (the
first update copies the weights), as torch's ``AveragedModel`` with ``get_ema_multi_avg_fn`` computes it. It is not
built on ``AveragedModel``: that keeps its update counter in a CPU tensor and copies it to the GPU in every update, a
blocking host-to-device copy per training step. Here the counter is a Python int and the update is one
``torch._foreach_lerp_`` per step, all on the device (``tests/test_step_hygiene.py``). The trainer validates with the
averaged weights, saves them as ``network_weights`` (what ``nnUNetv2_predict`` loads) and keeps the raw weights and
this state for ``--c``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch._dynamo import OptimizedModule

__all__ = ["WeightEMA", "unwrap_network"]


def unwrap_network(network: nn.Module) -> nn.Module:
    """The plain module behind DDP's ``.module`` and torch.compile's ``_orig_mod`` (whose state_dict keys are the
    ones nnU-Net saves)."""
    module = network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network
    if isinstance(module, OptimizedModule):
        module = module._orig_mod
    return module


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    return [t.detach() for t in (*module.parameters(), *module.buffers())]


class WeightEMA:
    """The EMA of ``module``'s parameters and buffers (``decay`` in (0, 1)); ``module`` holds the average (a copy
    of the network, on its device)."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(module).requires_grad_(False)
        self.num_updates = 0
        """Updates so far (a Python int: reading or advancing it never touches the device)."""

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """One EMA step towards ``module``'s weights (the first one copies them); no host-device traffic."""
        averaged, current = _tensors(self.module), _tensors(module)
        if self.num_updates == 0:
            torch._foreach_copy_(averaged, current)
        else:
            floats = [i for i, t in enumerate(averaged) if t.is_floating_point() or t.is_complex()]
            if floats:
                torch._foreach_lerp_([averaged[i] for i in floats], [current[i] for i in floats], 1.0 - self.decay)
            for i in sorted(set(range(len(averaged))) - set(floats)):  # integer buffers, as AveragedModel does
                averaged[i].copy_(averaged[i] * self.decay + current[i] * (1.0 - self.decay))
        self.num_updates += 1

    def weights(self) -> dict[str, torch.Tensor]:
        """The averaged weights under the plain module's state_dict keys (before the first update: the copy)."""
        return self.module.state_dict()

    def state_dict(self) -> dict[str, Any]:
        """Decay and update count; the averaged weights are the checkpoint's ``network_weights`` (stored once)."""
        return {"decay": self.decay, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any], weights: dict[str, torch.Tensor] | None = None) -> None:
        """Restore :meth:`state_dict` with the averaged ``weights`` (``network_weights`` of the checkpoint); an
        older state holding torch's ``AveragedModel`` state itself (``averaged``: ``module.*`` and ``n_averaged``)
        needs none."""
        if "averaged" in state:
            saved = state["averaged"]
            self.module.load_state_dict({k.removeprefix("module."): v for k, v in saved.items() if k != "n_averaged"})
            self.num_updates = int(saved["n_averaged"])
            return
        if weights is None:
            raise ValueError("WeightEMA.load_state_dict needs the averaged weights (the checkpoint's network_weights)")
        self.module.load_state_dict(weights)
        self.num_updates = int(state["num_updates"])

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
