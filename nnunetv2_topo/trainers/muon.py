"""``optimizer: muon``: torch's Muon for the hidden convolution weights, viewed as 2-D ``(C_out, C_in·k³)``, and
AdamW or SGD (``muon_other``) for everything else: the first convolution, the normalisation weights, the biases and
the segmentation heads (nnU-Net's ``seg_layers``).

Learning rates: the schedule (warmup, plateau, anneal) drives one LR for both groups, ``initial_lr`` being the Muon
group's peak; the other group runs at ``muon_other_lr / initial_lr`` times it all along, so a plateau cut or the
anneal scales both alike. :class:`MuonHybrid` is one ``torch.optim.Optimizer`` to nnU-Net (its ``param_groups``
hold the scheduled LR; the LR scheduler, ``GradScaler``, clipping and the checkpoint see a single optimizer).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from nnunetv2_topo.trainers.lr_defaults import MUON_OTHER_LR

__all__ = ["MuonHybrid", "split_muon_parameters"]

HEAD_NAMES: tuple[str, ...] = ("seg_layers",)
"""Parameter-name parts of the segmentation heads (nnU-Net's ``dynamic_network_architectures`` decoders)."""


def split_muon_parameters(network: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(muon, other)``: convolution weights (``ndim >= 3``) except the first one and the heads go to Muon;
    everything else (first convolution, norms, biases, heads, any 1-D or 2-D parameter) to the other optimizer."""
    muon: list[nn.Parameter] = []
    other: list[nn.Parameter] = []
    first_seen = False
    for name, p in network.named_parameters():
        if not p.requires_grad:
            continue
        hidden_conv = p.ndim >= 3 and not any(h in name for h in HEAD_NAMES)
        if hidden_conv and not first_seen:
            first_seen, hidden_conv = True, False  # the stem: its C_in·k³ is tiny (1 channel), Muon does not fit
        (muon if hidden_conv else other).append(p)
    return muon, other


class MuonHybrid(torch.optim.Optimizer):
    """Muon on 2-D views of ``muon_params`` plus AdamW or SGD on ``other_params``, as one optimizer.

    Args:
        muon_params: weights of ndim >= 2; Muon updates ``p.view(p.shape[0], -1)`` (same storage).
        other_params: the rest.
        lr: the Muon group's LR (``initial_lr``; the scheduler sets ``param_groups[i]["lr"]``).
        other: ``"adamw"`` (decoupled ``weight_decay``) or ``"sgd"`` (momentum 0.99, Nesterov, L2
            ``weight_decay``, as nnU-Net's SGD).
        other_lr: the other group's peak LR; it follows the schedule as ``group lr * other_lr / lr``.
        weight_decay: of the other group; ``muon_weight_decay``: Muon's decoupled weight decay.
    """

    def __init__(
        self,
        muon_params: Iterable[nn.Parameter],
        other_params: Iterable[nn.Parameter],
        lr: float,
        other: str = "adamw",
        other_lr: float | None = None,
        weight_decay: float = 3e-5,
        muon_weight_decay: float = 0.1,
    ) -> None:
        if other not in MUON_OTHER_LR:
            raise ValueError(f"muon_other must be one of {', '.join(MUON_OTHER_LR)}, got {other!r}")
        self.muon_params, self.other_params = list(muon_params), list(other_params)
        other_lr = MUON_OTHER_LR[other] if other_lr is None else float(other_lr)
        groups = [
            {"params": self.muon_params, "lr": lr, "lr_ratio": 1.0, "name": "muon"},
            {"params": self.other_params, "lr": lr, "lr_ratio": other_lr / lr, "name": other},
        ]
        super().__init__([g for g in groups if g["params"]], {"lr": lr})
        self.param_groups_by_name = {g["name"]: g for g in self.param_groups}
        # 2-D views sharing storage with the network's weights: Muon's in-place update writes the weights
        self._views = [nn.Parameter(p.detach().view(p.shape[0], -1)) for p in self.muon_params]
        self.muon = torch.optim.Muon(self._views or [nn.Parameter(torch.zeros(1, 1))], lr=lr,
                                     weight_decay=muon_weight_decay)  # fmt: skip
        self.other: torch.optim.Optimizer
        if other == "adamw":
            self.other = torch.optim.AdamW(self.other_params or [nn.Parameter(torch.zeros(1))], lr=other_lr,
                                           weight_decay=weight_decay)  # fmt: skip
        else:
            self.other = torch.optim.SGD(self.other_params or [nn.Parameter(torch.zeros(1))], lr=other_lr,
                                         weight_decay=weight_decay, momentum=0.99, nesterov=True)  # fmt: skip
        self.other_kind = other

    def _sync_lrs(self) -> None:
        for name, inner in (("muon", self.muon), (self.other_kind, self.other)):
            group = self.param_groups_by_name.get(name)
            if group is not None:
                inner.param_groups[0]["lr"] = float(group["lr"]) * float(group["lr_ratio"])

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._sync_lrs()
        for view, p in zip(self._views, self.muon_params):
            view.grad = None if p.grad is None else p.grad.view(view.shape)
        if self._views:
            self.muon.step()
        if self.other_params:
            self.other.step()
        for view in self._views:
            view.grad = None
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The scheduled groups (``param_groups``: ``lr``, ``lr_ratio``, ``name``) and both inner optimizers."""
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        return {"state": {}, "param_groups": groups, "muon": self.muon.state_dict(), "other": self.other.state_dict(),
                "other_kind": self.other_kind}  # fmt: skip

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "muon" not in state_dict or state_dict.get("other_kind") != self.other_kind:
            raise ValueError(
                f"the checkpoint's optimizer state is not a Muon + {self.other_kind} state "
                f"(keys {sorted(state_dict)}, other {state_dict.get('other_kind')!r})"
            )
        for group, saved in zip(self.param_groups, state_dict["param_groups"]):
            group["lr"] = saved["lr"]  # (lr_ratio comes from this run's configuration)
        self.muon.load_state_dict(state_dict["muon"])
        self.other.load_state_dict(state_dict["other"])
        self._sync_lrs()
