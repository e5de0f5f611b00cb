"""Per-epoch linear warmup, ``ReduceLROnPlateau`` on a validation metric, and an optional final linear anneal.

nnU-Net's ``on_train_epoch_start`` calls ``lr_scheduler.step(current_epoch)``. A ``ReduceLROnPlateau`` stepped there
takes the epoch number as its metric and silently halves the LR every ``patience + 1`` epochs. This scheduler
therefore has two explicit entry points instead of ``step``:

* :meth:`WarmupPlateauScheduler.start_epoch` at the start of every epoch (sets the warmup LR; a no-op afterwards),
* :meth:`WarmupPlateauScheduler.step_metric` once per epoch **after validation** with the (all-gathered) metric.

Calling ``step`` raises a ``TypeError`` that explains this, so the trap cannot be walked into by accident.

The last ``anneal_epochs`` epochs of a run of ``num_epochs`` anneal linearly from the plateau's LR towards 0
(:func:`anneal_factor`; the plateau is not stepped then), so a run ends at a small LR as nnU-Net's poly schedule does
even when the plateau never cut. :meth:`WarmupPlateauScheduler.should_stop` says when the LR has sat at ``min_lr``
for ``patience`` epochs without improvement (nothing left to gain from more epochs of this schedule).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

__all__ = ["WarmupPlateauScheduler", "anneal_factor", "warmup_lr"]


def anneal_factor(epoch: int, num_epochs: int, anneal_epochs: int) -> float:
    """LR multiplier of ``epoch`` in the final anneal: 1 before the last ``anneal_epochs`` epochs, then
    ``(num_epochs - epoch) / (anneal_epochs + 1)`` (linear, ``A/(A+1)`` in the first annealed epoch, ``1/(A+1)`` in
    the last one: no epoch is spent at LR 0)."""
    start = num_epochs - anneal_epochs
    if anneal_epochs <= 0 or epoch < start:
        return 1.0
    return max(num_epochs - epoch, 1) / (anneal_epochs + 1)


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
        threshold: improvement needed to count as better.
        threshold_mode: ``"abs"``: better means ``value < best - threshold`` (mode min); ``"rel"``: ``value <
            best * (1 - threshold)`` (torch's default; with a negative loss, as nnU-Net's Dice terms give, a
            slightly *worse* value counts as better).
        cooldown: epochs after a reduction during which bad epochs are not counted.
        num_epochs: length of the run (needed by the final anneal; ``None``: no anneal).
        anneal_epochs: the last this many epochs anneal linearly from the plateau's LR (:func:`anneal_factor`).
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
        num_epochs: int | None = None,
        anneal_epochs: int = 0,
    ) -> None:
        if base_lr <= 0:
            raise ValueError(f"base_lr must be > 0, got {base_lr}")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must lie in (0, 1), got {factor}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if anneal_epochs < 0 or (anneal_epochs > 0 and num_epochs is None):
            raise ValueError(f"anneal_epochs must be >= 0 and needs num_epochs, got {anneal_epochs}, {num_epochs}")
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
        self.num_epochs = None if num_epochs is None else int(num_epochs)
        self.anneal_epochs = int(anneal_epochs)
        self.last_started_epoch: int | None = None
        self.num_plateau_steps = 0
        self.num_reductions = 0
        self.floor_bad_epochs = 0
        """Plateau steps in a row at ``min_lr`` without improvement (:meth:`should_stop`)."""

    # ------------------------------------------------------------------ hooks
    def in_warmup(self, epoch: int) -> bool:
        """True while ``epoch`` is a warmup epoch (the plateau scheduler is not stepped then)."""
        return epoch < self.warmup_epochs

    @property
    def anneal_start(self) -> int | None:
        """First epoch of the final anneal (``None`` without one)."""
        if self.anneal_epochs <= 0 or self.num_epochs is None:
            return None
        return max(self.num_epochs - self.anneal_epochs, self.warmup_epochs)

    def in_anneal(self, epoch: int) -> bool:
        """True in the final anneal (the plateau scheduler is not stepped then)."""
        start = self.anneal_start
        return start is not None and epoch >= start

    def plateau_lr(self) -> float:
        """The plateau's LR (before the anneal factor), i.e. the LR the anneal starts from."""
        return float(self.plateau.get_last_lr()[0]) if self.num_plateau_steps else self.base_lr

    def planned_lr(self, epoch: int) -> float:
        """The LR :meth:`start_epoch` sets for ``epoch`` (warmup, plateau or anneal), without setting it."""
        if self.in_warmup(epoch):
            return warmup_lr(self.base_lr, epoch, self.warmup_epochs)
        if self.in_anneal(epoch):
            assert self.num_epochs is not None and self.anneal_start is not None
            return self.plateau_lr() * anneal_factor(epoch, self.num_epochs, self.num_epochs - self.anneal_start)
        return self.plateau_lr()

    def start_epoch(self, epoch: int) -> float:
        """Set the LR for ``epoch`` (warmup epochs, the first epoch after warmup, anneal epochs); return the LR in
        use. After warmup and outside the anneal it is the plateau's own LR (after a resume the optimizer may hold
        a warmup or anneal LR; before the first plateau step exactly ``base_lr``)."""
        self.last_started_epoch = int(epoch)
        if self.in_warmup(epoch) or self.in_anneal(epoch) or self.num_plateau_steps == 0:
            self._set_lr(self.planned_lr(epoch))
        else:
            for group, lr in zip(self.optimizer.param_groups, self.plateau.get_last_lr()):
                group["lr"] = float(lr)
        return self.get_last_lr()[0]

    def should_stop(self) -> bool:
        """True once the plateau has cut to ``min_lr`` and then seen ``patience`` more epochs without improvement
        (never during warmup or the final anneal). Identical on every DDP rank when the metric is."""
        if self.num_plateau_steps == 0 or self.in_anneal(self.last_started_epoch or 0):
            return False
        return self.floor_bad_epochs > self.plateau.patience

    def _at_floor(self) -> bool:
        return all(lr <= m + self.plateau.eps for lr, m in zip(self.plateau.get_last_lr(), self.plateau.min_lrs))

    def step_metric(self, epoch: int, value: float) -> bool:
        """Feed the validation metric of ``epoch``; steps the plateau scheduler only after warmup and before the
        final anneal.

        ``value`` must be identical on every DDP rank (nnU-Net's ``val_losses`` / ``ema_fg_dice`` are). Returns
        True when the LR was reduced.
        """
        started = self.last_started_epoch
        if self.in_warmup(epoch) or self.in_anneal(epoch) or (started is not None and self.in_anneal(started)):
            return False  # (a scoring round of an earlier epoch may arrive during the anneal)
        before = [g["lr"] for g in self.optimizer.param_groups]
        best_before = self.plateau.best
        self.plateau.step(float(value))
        self.num_plateau_steps += 1
        # torch resets its bad-epoch counter when it "reduces" at min_lr: count the epochs at the floor here
        at_floor = self._at_floor() and all(b <= m + self.plateau.eps for b, m in zip(before, self.plateau.min_lrs))
        improved = self.plateau.best != best_before
        self.floor_bad_epochs = self.floor_bad_epochs + 1 if at_floor and not improved else 0
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
        """Everything needed to continue the same LR trajectory (the optimizer's own state holds the LR), and the
        run length it was planned for (``num_epochs``, ``anneal_epochs``: an extended run re-plans the anneal)."""
        return {
            "base_lr": self.base_lr,
            "warmup_epochs": self.warmup_epochs,
            "num_epochs": self.num_epochs,
            "anneal_epochs": self.anneal_epochs,
            "last_started_epoch": self.last_started_epoch,
            "num_plateau_steps": self.num_plateau_steps,
            "num_reductions": self.num_reductions,
            "floor_bad_epochs": self.floor_bad_epochs,
            "plateau": self.plateau.state_dict(),
        }

    SIGNAL_COUNTERS = ("best", "num_bad_epochs", "cooldown_counter")
    """``ReduceLROnPlateau`` state that belongs to the followed signal (reset when the signal changes)."""
    LR_COUNTERS = ("last_epoch", "_last_lr")
    """``ReduceLROnPlateau`` state that belongs to the LR (its cuts): kept whatever the signal."""

    def load_state_dict(self, state: dict[str, Any], reset_signal: bool | None = None) -> None:
        """Restore the counters saved by :meth:`state_dict`.

        Hyperparameters (base LR, warmup length, factor, patience, min LR, mode, run length) stay those of this
        instance, so a resumed run may change them in its configuration; with an unchanged configuration the resumed
        LR trajectory is identical to an uninterrupted one. The LR and its cuts are always kept (scaled by new / old
        ``base_lr``). ``reset_signal``: the followed signal changed, so its best value, bad epochs, cooldown and the
        early stop's count start afresh (None: when the saved mode differs, as checkpoints without the signal's name
        tell no more).
        """
        self.last_started_epoch = state["last_started_epoch"]
        self.num_plateau_steps = int(state["num_plateau_steps"])
        self.num_reductions = int(state["num_reductions"])
        self.floor_bad_epochs = int(state.get("floor_bad_epochs", 0))
        saved = state["plateau"]
        if reset_signal is None:
            reset_signal = saved.get("mode", self.plateau.mode) != self.plateau.mode
        keys = self.LR_COUNTERS + (() if reset_signal else self.SIGNAL_COUNTERS)
        merged = {**self.plateau.state_dict(), **{k: saved[k] for k in keys if k in saved}}
        if reset_signal:
            merged.update(best=self.plateau.mode_worse, num_bad_epochs=0, cooldown_counter=0)
            self.floor_bad_epochs = 0
        old_base = float(state.get("base_lr", self.base_lr))
        if old_base != self.base_lr and "_last_lr" in saved:
            # a new base LR on resume scales the plateau's LR alike: its cuts are kept (start_epoch applies it)
            merged["_last_lr"] = [
                max(float(lr) * self.base_lr / old_base, m) for lr, m in zip(saved["_last_lr"], self.plateau.min_lrs)
            ]
        self.plateau.load_state_dict(merged)

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
