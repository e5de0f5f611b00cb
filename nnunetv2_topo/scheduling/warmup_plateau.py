"""Per-epoch linear warmup followed by ``ReduceLROnPlateau`` on a validation metric.

nnU-Net's ``on_train_epoch_start`` calls ``lr_scheduler.step(current_epoch)``. A ``ReduceLROnPlateau`` stepped there
takes the epoch number as its metric and silently halves the LR every ``patience + 1`` epochs. This scheduler
therefore has two explicit entry points instead of ``step``:

* :meth:`WarmupPlateauScheduler.start_epoch` at the start of every epoch (sets the warmup LR; a no-op afterwards),
* :meth:`WarmupPlateauScheduler.step_metric` once per epoch **after validation** with the (all-gathered) metric.

Calling ``step`` raises a ``TypeError`` that explains this, so the trap cannot be walked into by accident.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

__all__ = ["WarmupPlateauScheduler", "warmup_lr"]


def warmup_lr(base_lr: float, epoch: int, warmup_epochs: int) -> float:
    """The original recipe's warmup: ``base_lr * (epoch + 1) / warmup_epochs`` for ``epoch < warmup_epochs``,
    else base_lr."""
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return base_lr
    return base_lr * (epoch + 1) / warmup_epochs


class WarmupPlateauScheduler:
    """Linear per-epoch warmup, then ``ReduceLROnPlateau`` stepped once per epoch after validation.

    Args:
        optimizer: the optimizer whose param groups are driven.
        base_lr: LR reached at the end of warmup (nnU-Net's ``initial_lr``).
        warmup_epochs: number of warmup epochs (0 disables warmup).
        mode: ``"min"`` for a loss, ``"max"`` for e.g. the EMA pseudo Dice.
        factor: LR multiplier on a plateau, in (0, 1).
        patience: epochs without improvement tolerated before reducing.
        min_lr: lower bound of the LR.
        threshold: improvement needed to count as better (torch's default: relative 1e-4).
        threshold_mode: ``"rel"`` (a fraction of the best value) or ``"abs"`` (in the signal's units).
        cooldown: epochs after a reduction during which bad epochs are not counted.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        base_lr: float,
        warmup_epochs: int = 10,
        mode: Literal["min", "max"] = "min",
        factor: float = 0.5,
        patience: int = 8,
        min_lr: float = 1e-6,
        threshold: float = 1e-4,
        cooldown: int = 0,
        threshold_mode: Literal["rel", "abs"] = "rel",
    ) -> None:
        if base_lr <= 0:
            raise ValueError(f"base_lr must be > 0, got {base_lr}")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must lie in (0, 1), got {factor}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.warmup_epochs = int(warmup_epochs)
        self.plateau = ReduceLROnPlateau(
            optimizer,
            mode=mode,
            factor=factor,
            patience=patience,
            min_lr=min_lr,
            threshold=threshold,
            threshold_mode=threshold_mode,
            cooldown=cooldown,
        )
        self.last_started_epoch: int | None = None
        self.num_plateau_steps = 0
        self.num_reductions = 0

    # ------------------------------------------------------------------ hooks
    def in_warmup(self, epoch: int) -> bool:
        """True while ``epoch`` is a warmup epoch (the plateau scheduler is not stepped then)."""
        return epoch < self.warmup_epochs

    def start_epoch(self, epoch: int) -> float:
        """Set the LR for ``epoch`` (warmup epochs, and the first epoch after warmup); return the LR in use."""
        self.last_started_epoch = int(epoch)
        if self.in_warmup(epoch):
            self._set_lr(warmup_lr(self.base_lr, epoch, self.warmup_epochs))
        elif epoch == self.warmup_epochs and self.num_plateau_steps == 0:
            # first post-warmup epoch: the plateau phase starts from exactly base_lr
            self._set_lr(self.base_lr)
        return self.get_last_lr()[0]

    def step_metric(self, epoch: int, value: float) -> bool:
        """Feed the validation metric of ``epoch``; steps the plateau scheduler only after warmup.

        ``value`` must be identical on every DDP rank (nnU-Net's ``val_losses`` / ``ema_fg_dice`` are). Returns
        True when the LR was reduced.
        """
        if self.in_warmup(epoch):
            return False
        before = [g["lr"] for g in self.optimizer.param_groups]
        self.plateau.step(float(value))
        self.num_plateau_steps += 1
        reduced = any(g["lr"] < b for g, b in zip(self.optimizer.param_groups, before))
        self.num_reductions += int(reduced)
        return reduced

    def step(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "WarmupPlateauScheduler.step() is deliberately unsupported: stepping ReduceLROnPlateau with the epoch "
            "number (as nnU-Net's on_train_epoch_start does) silently cuts the LR. Call start_epoch(epoch) at the "
            "start of an epoch and step_metric(epoch, val_metric) after validation."
        )

    # ------------------------------------------------------------------ state
    def get_last_lr(self) -> list[float]:
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the same LR trajectory (the optimizer's own state holds the LR)."""
        return {
            "base_lr": self.base_lr,
            "warmup_epochs": self.warmup_epochs,
            "last_started_epoch": self.last_started_epoch,
            "num_plateau_steps": self.num_plateau_steps,
            "num_reductions": self.num_reductions,
            "plateau": self.plateau.state_dict(),
        }

    _PLATEAU_COUNTERS = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch", "_last_lr")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the counters (best value, bad epochs, ...) saved by :meth:`state_dict`.

        Hyperparameters (base LR, warmup length, factor, patience, min LR, mode) stay those of this instance, so a
        resumed run may change them in its configuration; with an unchanged configuration the resumed LR trajectory
        is identical to an uninterrupted one.
        """
        self.last_started_epoch = state["last_started_epoch"]
        self.num_plateau_steps = int(state["num_plateau_steps"])
        self.num_reductions = int(state["num_reductions"])
        saved = state["plateau"]
        if saved.get("mode") != self.plateau.mode:
            # a metric switch (val_loss <-> ema_fg_dice) on resume: the saved best value means nothing any more
            self.plateau._reset()
            return
        for key in self._PLATEAU_COUNTERS:
            if key in saved:
                setattr(self.plateau, key, saved[key])

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
