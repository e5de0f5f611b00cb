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
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg["initial_lr"])
    driver = PlateauDriver.from_config(cfg, optimizer, log=lambda _message: None)
    held = list(val_loss) + [val_loss[-1]] * max(0, n - len(val_loss))
    scores = dict(val_score or {})
    every = int(cfg.get("score_every_epochs") or 0)
    last_round = max(scores) if scores else None
    result = ReplayResult(lr=[])
    for epoch in range(n):
        lr = driver.start_epoch(epoch)
        result.lr.append(lr)
        if result.min_lr_epoch is None and lr <= cfg["plateau_min_lr"] * (1 + 1e-9):
            result.min_lr_epoch = epoch
        score = scores.get(epoch)
        if score is None and last_round is not None and epoch > last_round and every and (epoch + 1) % every == 0:
            score = scores[last_round]  # after the log ends, a round keeps scoring the last value
        if driver.end_epoch(epoch, held[epoch], val_score=score):
            result.cuts.append(epoch)
        if result.stop_epoch is None and driver.should_stop():
            result.stop_epoch = epoch
    return result
