"""Replay the trainer's LR schedule on a recorded (or simulated) validation signal, without training.

The replay drives the same scheduler class the trainer uses, built from a resolved TopoWarmup configuration, on a
one-parameter optimizer: epoch by epoch it starts the epoch (warmup / anneal LR), reads the LR in use and feeds the
epoch's signal after "validation", exactly as ``nnUNetTrainerTopoWarmup`` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from nnunetv2_topo.scheduling.warmup_plateau import WarmupPlateauScheduler

__all__ = ["ReplayResult", "anneal_epochs", "build_scheduler", "ema_series", "replay"]

_MODES = {"val_loss": "min", "val_loss_ema": "min", "ema_fg_dice": "max", "val_score": "max"}


def anneal_epochs(config: Mapping[str, Any]) -> int:
    """Epochs of the final anneal: ``round(plateau_final_anneal * num_epochs)``."""
    return int(round(float(config.get("plateau_final_anneal", 0.0)) * int(config["num_epochs"])))


def build_scheduler(config: Mapping[str, Any], optimizer: torch.optim.Optimizer) -> WarmupPlateauScheduler:
    """The warmup -> plateau -> anneal scheduler of a resolved configuration."""
    return WarmupPlateauScheduler(
        optimizer,
        base_lr=config["initial_lr"],
        warmup_epochs=config["warmup_epochs"],
        mode=_MODES[config["plateau_metric"]],
        factor=config["plateau_factor"],
        patience=config["plateau_patience"],
        min_lr=config["plateau_min_lr"],
        threshold=config.get("plateau_threshold", 1e-4),
        threshold_mode=config.get("plateau_threshold_mode", "rel"),
        cooldown=config["plateau_cooldown"],
        num_epochs=config["num_epochs"],
        anneal_epochs=anneal_epochs(config),
    )


def ema_series(values: Sequence[float], smoothing: float) -> list[float]:
    """``val_loss_ema`` as the trainer logs it: starts at the first finite value; a non-finite epoch keeps the
    previous value."""
    out: list[float] = []
    last = math.nan
    for v in values:
        if not math.isfinite(last):
            last = float(v)
        elif math.isfinite(v):
            last = smoothing * last + (1 - smoothing) * float(v)
        out.append(last)
    return out


@dataclass
class ReplayResult:
    lr: list[float]
    """LR used in every epoch."""
    cuts: list[int] = field(default_factory=list)
    """Epochs after whose validation the plateau cut the LR (the cut LR is used from the next epoch)."""
    min_lr_epoch: int | None = None
    """First epoch whose LR is at (or below) ``plateau_min_lr``; ``None`` if never."""
    stop_epoch: int | None = None
    """First epoch after which :meth:`WarmupPlateauScheduler.should_stop` holds; ``None`` if never."""


def replay(config: Mapping[str, Any], val_loss: Sequence[float], val_score: Mapping[int, float] | None = None,
           num_epochs: int | None = None) -> ReplayResult:  # fmt: skip
    """Replay ``config``'s schedule over ``num_epochs`` (default ``config['num_epochs']``) epochs.

    ``val_loss``: one value per epoch; after its end the last value is held. ``val_score``: epoch -> score of the
    scoring rounds (only read with ``plateau_metric: val_score``; the plateau steps once per round).
    """
    n = int(num_epochs if num_epochs is not None else config["num_epochs"])
    if not val_loss:
        raise ValueError("val_loss is empty: nothing to replay")
    cfg = {**config, "num_epochs": n}
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=cfg["initial_lr"])
    sched = build_scheduler(cfg, optimizer)
    held = list(val_loss) + [val_loss[-1]] * max(0, n - len(val_loss))
    ema = ema_series(held, cfg["plateau_ema_smoothing"])
    metric = cfg["plateau_metric"]
    result = ReplayResult(lr=[])
    scores = dict(val_score or {})
    last_score_epoch = max(scores) if scores else None
    for epoch in range(n):
        lr = sched.start_epoch(epoch)
        result.lr.append(lr)
        if result.min_lr_epoch is None and lr <= cfg["plateau_min_lr"] * (1 + 1e-9):
            result.min_lr_epoch = epoch
        if metric == "val_score":
            every = int(cfg.get("score_every_epochs") or 0)
            if epoch in scores:
                value = scores[epoch]
            elif last_score_epoch is not None and epoch > last_score_epoch and every and (epoch + 1) % every == 0:
                value = scores[last_score_epoch]
            else:
                continue
        elif metric == "val_loss":
            value = held[epoch]
        elif metric == "val_loss_ema":
            value = ema[epoch]
        else:
            raise ValueError(f"plateau_metric {metric!r} cannot be replayed from val_loss/val_score")
        if sched.step_metric(epoch, value):
            result.cuts.append(epoch)
        if result.stop_epoch is None and sched.should_stop():
            result.stop_epoch = epoch
    return result
