"""Replay the trainer's LR schedule on a recorded (or simulated) validation signal, without training.

The replay drives the trainer's own :class:`~nnunetv2_topo.scheduling.plateau_driver.PlateauDriver`, built by
``PlateauDriver.from_config`` from a resolved TopoWarmup configuration as the trainer builds it, on a one-parameter
optimizer: epoch by epoch it starts the epoch (warmup / plateau / anneal LR), records the LR in use and feeds the
epoch's validation loss (and a scoring round's ``val_score``) to ``end_epoch``, as ``nnUNetTrainerTopoWarmup`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from nnunetv2_topo.scheduling.plateau_driver import PlateauDriver

__all__ = ["ReplayResult", "replay"]


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


def replay(
    config: Mapping[str, Any],
    val_loss: Sequence[float],
    *,
    ema_fg_dice: Sequence[float] | None = None,
    score_rounds: Sequence[tuple[int, int, float]] = (),
    num_epochs: int | None = None,
) -> ReplayResult:
    """Replay ``config``'s schedule over ``num_epochs`` (default ``config['num_epochs']``) epochs.

    ``val_loss`` (and ``ema_fg_dice`` for ``plateau_metric: ema_fg_dice``): one value per epoch; after their end the
    last value is held. ``score_rounds``: ``(scored epoch, applied after epoch, score)`` of the scoring rounds, for
    ``plateau_metric: val_score``; after the last one, a round every ``score_every_epochs`` epochs scores the last
    value again.
    """
    n = int(num_epochs if num_epochs is not None else config["num_epochs"])
    if not val_loss:
        raise ValueError("val_loss is empty: nothing to replay")
    metric = config["plateau_metric"]
    if metric == "ema_fg_dice" and not ema_fg_dice:
        raise ValueError("plateau_metric ema_fg_dice needs the pseudo Dice of every epoch")
    if metric == "val_score" and not score_rounds:
        raise ValueError("plateau_metric val_score needs scoring rounds")
    cfg = {**config, "num_epochs": n}
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg["initial_lr"])
    driver = PlateauDriver.from_config(cfg, optimizer, log=lambda _message: None)

    def held(values: Sequence[float]) -> list[float]:
        return list(values[:n]) + [values[-1]] * max(0, n - len(values))

    losses = held(val_loss)
    dice = held(ema_fg_dice) if ema_fg_dice else [None] * n
    applied: dict[int, list[tuple[int, float]]] = {}
    for scored, after, score in score_rounds:
        applied.setdefault(after, []).append((scored, score))
    every = int(cfg.get("score_every_epochs") or 0)
    if score_rounds and every:
        last_applied = max(after for _, after, _ in score_rounds)
        for epoch in range(last_applied + 1, n):
            if (epoch + 1) % every == 0:
                applied.setdefault(epoch, []).append((epoch, score_rounds[-1][2]))
    result = ReplayResult(lr=[])
    for epoch in range(n):
        lr = driver.start_epoch(epoch)
        result.lr.append(lr)
        if result.min_lr_epoch is None and lr <= cfg["plateau_min_lr"] * (1 + 1e-9):
            result.min_lr_epoch = epoch
        cut = driver.end_epoch(epoch, losses[epoch], ema_fg_dice=dice[epoch])
        for scored, score in applied.get(epoch, []):  # rounds are applied at the end of an epoch, as in the trainer
            cut = driver.end_round(scored, score) or cut
        if cut:
            result.cuts.append(epoch)
        if result.stop_epoch is None and driver.should_stop():
            result.stop_epoch = epoch
    return result
