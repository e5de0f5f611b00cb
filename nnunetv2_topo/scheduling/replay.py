"""Replay the trainer's LR schedule on a recorded (or simulated) validation signal, without training.

The replay drives the trainer's own :class:`~nnunetv2_topo.scheduling.plateau_driver.PlateauDriver`, built by
``PlateauDriver.from_config`` from a resolved TopoWarmup configuration as the trainer builds it, on a one-parameter
optimizer: epoch by epoch it starts the epoch (warmup / plateau / anneal LR), records the LR in use and feeds the
epoch's validation loss (and a scoring round's ``val_score``) to ``end_epoch``, as ``nnUNetTrainerTopoWarmup`` does.
A run resumed with another configuration (``--c`` with a larger ``num_epochs``, or a change allowed by
``allow_config_change``) is replayed as the trainer resumes it: a driver of the new configuration continues from the
old one's state (:meth:`PlateauDriver.resume`) at the epoch of the restart.
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
    """First epoch after which :meth:`WarmupPlateauScheduler.should_stop` holds (after the last restart that
    came later: an extended early-stopped run trains on); ``None`` if never."""
    notes: list[tuple[int, str]] = field(default_factory=list)
    """``(epoch, line)``: what the trainer logs at a restart (an extension, a changed ``plateau_metric``)."""


def replay(
    config: Mapping[str, Any],
    val_loss: Sequence[float],
    *,
    ema_fg_dice: Sequence[float] | None = None,
    score_rounds: Sequence[tuple[int, int, float]] = (),
    num_epochs: int | None = None,
    restarts: Sequence[tuple[int, Mapping[str, Any]]] = (),
) -> ReplayResult:
    """Replay ``config``'s schedule over ``num_epochs`` (default: ``num_epochs`` of the last configuration) epochs.

    ``restarts``: ``(epoch, configuration)`` of every later start of the run (``--c``), in epoch order; from that
    epoch on the schedule continues under that configuration (``num_epochs`` overrides the last one's).

    ``val_loss`` (and ``ema_fg_dice`` for ``plateau_metric: ema_fg_dice``): one value per epoch; after their end the
    last value is held. ``score_rounds``: ``(scored epoch, applied after epoch, score)`` of the scoring rounds, for
    ``plateau_metric: val_score``; after the last one, a round every ``score_every_epochs`` epochs scores the last
    value again.
    """
    configs = [(0, dict(config)), *((int(e), dict(c)) for e, c in restarts)]
    n = int(num_epochs if num_epochs is not None else configs[-1][1]["num_epochs"])
    configs[-1][1]["num_epochs"] = n
    if not val_loss:
        raise ValueError("val_loss is empty: nothing to replay")
    metrics = {c["plateau_metric"] for _, c in configs}
    if "ema_fg_dice" in metrics and not ema_fg_dice:
        raise ValueError("plateau_metric ema_fg_dice needs the pseudo Dice of every epoch")
    if "val_score" in metrics and not score_rounds:
        raise ValueError("plateau_metric val_score needs scoring rounds")
    cfg = configs[0][1]
    starts = {epoch: c for epoch, c in configs[1:]}
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg["initial_lr"])
    driver = PlateauDriver.from_config(cfg, optimizer, log=lambda _message: None)

    def held(values: Sequence[float]) -> list[float]:
        return list(values[:n]) + [values[-1]] * max(0, n - len(values))

    losses = held(val_loss)
    dice = held(ema_fg_dice) if ema_fg_dice else [None] * n
    applied: dict[int, list[tuple[int, float]]] = {}
    for scored, after, score in score_rounds:
        applied.setdefault(after, []).append((scored, score))
    every = int(configs[-1][1].get("score_every_epochs") or 0)
    if score_rounds and every:
        last_applied = max(after for _, after, _ in score_rounds)
        for epoch in range(last_applied + 1, n):
            if (epoch + 1) % every == 0:
                applied.setdefault(epoch, []).append((epoch, score_rounds[-1][2]))
    result = ReplayResult(lr=[])
    for epoch in range(n):
        if epoch in starts:  # as nnUNetv2_train --c: the new configuration continues from the saved state
            state, saved = driver.state_dict(), cfg
            cfg = starts[epoch]
            driver = PlateauDriver.from_config(cfg, optimizer, log=lambda _message: None)
            result.notes += [(epoch, line) for line in driver.resume(state, saved, epoch)]
            result.stop_epoch = None  # (an extension restarts the early stop's count)
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
