"""The plateau driver: which signal the warmup -> ``ReduceLROnPlateau`` schedule follows, and when it is stepped.

:class:`PlateauDriver` owns a :class:`~nnunetv2_topo.scheduling.warmup_plateau.WarmupPlateauScheduler`, the choice of
the signal (``plateau_metric``), the exponential moving average of the validation loss (``val_loss_ema``) and the text
logged when the LR is cut. It needs no trainer: the TopoWarmup trainer feeds it one validation loss per epoch (and one
competition score per scoring round), and a replay of a training log feeds it the logged values the same way::

    driver = PlateauDriver.from_config(config, optimizer)
    for epoch, val_loss in enumerate(val_losses):
        lr = driver.start_epoch(epoch)          # the LR this epoch trains with
        driver.end_epoch(epoch, val_loss)       # after validation: True when the LR was cut

Signals (``plateau_metric``): ``val_loss`` (nnU-Net's per-epoch validation loss), ``val_loss_ema`` (its EMA with
smoothing ``plateau_ema_smoothing``), ``ema_fg_dice`` (nnU-Net's EMA pseudo Dice, mode max) and ``val_score`` (the
competition score of a scoring round, mode max, stepped once per round).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch

from nnunetv2_topo.scheduling.warmup_plateau import WarmupPlateauScheduler

__all__ = ["PLATEAU_METRICS", "PLATEAU_MODES", "PlateauDriver", "final_anneal_epochs", "smoothed"]

PLATEAU_METRICS: tuple[str, ...] = ("val_loss", "val_loss_ema", "ema_fg_dice", "val_score")
"""Signals the plateau scheduler can follow (the ``plateau_metric`` key)."""

PLATEAU_MODES: dict[str, Literal["min", "max"]] = {
    "val_loss": "min",
    "val_loss_ema": "min",
    "ema_fg_dice": "max",
    "val_score": "max",
}
"""``ReduceLROnPlateau``'s mode for each signal."""

ROUND_METRICS: frozenset[str] = frozenset({"val_score"})
"""Signals that arrive once per scoring round, not once per epoch."""


class _EarlyStop(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by the trainer at the end of an epoch after which :meth:`PlateauDriver.should_stop` holds; its
    ``run_training`` ends the run as a finished one (``on_train_end``: ``checkpoint_final.pth``, final validation)."""


def final_anneal_epochs(config: Mapping[str, Any]) -> int:
    """Epochs of the final anneal of a configuration: ``round(plateau_final_anneal * num_epochs)`` (0 without the
    key)."""
    return int(round(float(config.get("plateau_final_anneal", 0.0)) * int(config["num_epochs"])))


def smoothed(previous: float, value: float, smoothing: float) -> float:
    """One EMA step: ``smoothing * previous + (1 - smoothing) * value``. Starts at the first finite value (a
    non-finite ``previous``) and holds its last value over a non-finite ``value``."""
    if not math.isfinite(previous):
        return float(value)
    if not math.isfinite(value):
        return float(previous)
    return smoothing * previous + (1 - smoothing) * float(value)


class PlateauDriver:
    """Warmup -> ``ReduceLROnPlateau`` on the chosen validation signal (see the module docstring).

    Args:
        optimizer: the optimizer whose param groups are driven.
        base_lr: LR at the end of warmup (``initial_lr``).
        warmup_epochs: linear warmup epochs (0: none).
        metric: one of :data:`PLATEAU_METRICS`.
        ema_smoothing: ``val_loss_ema = s * previous + (1 - s) * val_loss`` (0: no smoothing).
        early_stop: :meth:`should_stop` may end the run once the LR sits at ``min_lr`` without improvement.
        log: where the LR-cut messages go (``print`` by default; the trainer passes its log file).
        **schedule: the :class:`~nnunetv2_topo.scheduling.warmup_plateau.WarmupPlateauScheduler` settings, with its
            defaults: ``factor``, ``patience``, ``min_lr``, ``cooldown``, ``threshold``, ``threshold_mode``
            (``ReduceLROnPlateau``'s) and ``num_epochs``, ``anneal_epochs`` (the final linear anneal over the last
            ``anneal_epochs`` of ``num_epochs`` epochs; 0: none).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        base_lr: float,
        warmup_epochs: int,
        metric: str = "val_loss",
        ema_smoothing: float = 0.9,
        early_stop: bool = False,
        log: Callable[[str], None] | None = None,
        **schedule: Any,
    ) -> None:
        if metric not in PLATEAU_MODES:
            raise ValueError(f"metric must be one of {', '.join(PLATEAU_METRICS)}, got {metric!r}")
        if not 0.0 <= ema_smoothing < 1.0:
            raise ValueError(f"ema_smoothing must lie in [0, 1), got {ema_smoothing}")
        self.metric = metric
        self.ema_smoothing = float(ema_smoothing)
        self.early_stop = bool(early_stop)
        self.scheduler = WarmupPlateauScheduler(
            optimizer, base_lr=base_lr, warmup_epochs=warmup_epochs, mode=PLATEAU_MODES[metric], **schedule
        )
        self.val_loss_ema = math.nan
        """The EMA of the validation loss after the last :meth:`end_epoch` (NaN before the first finite loss)."""
        self.log = log or print

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], optimizer: torch.optim.Optimizer, log: Callable[[str], None] | None = None
    ) -> PlateauDriver:
        """The driver of a resolved TopoWarmup configuration (``initial_lr``, ``warmup_epochs`` and the
        ``plateau_*`` keys; threshold keys absent from ``config`` take torch's defaults)."""
        return cls(
            optimizer,
            base_lr=config["initial_lr"],
            warmup_epochs=config["warmup_epochs"],
            metric=config["plateau_metric"],
            factor=config["plateau_factor"],
            patience=config["plateau_patience"],
            min_lr=config["plateau_min_lr"],
            cooldown=config["plateau_cooldown"],
            threshold=config.get("plateau_threshold", 1e-4),
            threshold_mode=config.get("plateau_threshold_mode", "rel"),
            num_epochs=config["num_epochs"],
            anneal_epochs=final_anneal_epochs(config),
            ema_smoothing=config["plateau_ema_smoothing"],
            early_stop=config.get("plateau_early_stop", False),
            log=log,
        )

    # ------------------------------------------------------------------ per epoch
    @property
    def per_round(self) -> bool:
        """True when the signal arrives once per scoring round (``val_score``), not once per epoch."""
        return self.metric in ROUND_METRICS

    @property
    def unit(self) -> str:
        """What one plateau step counts: ``epochs`` or ``scoring rounds``."""
        return "scoring rounds" if self.per_round else "epochs"

    def current_lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def start_epoch(self, epoch: int) -> float:
        """Set the LR of ``epoch`` (warmup, first plateau epoch) and return the LR in use."""
        return self.scheduler.start_epoch(epoch)

    def phase(self, epoch: int) -> str:
        """``warmup i/n`` or ``plateau phase``, for the epoch log."""
        if self.scheduler.in_warmup(epoch):
            return f"warmup {epoch + 1}/{self.scheduler.warmup_epochs}"
        if self.scheduler.in_anneal(epoch):
            start, end = self.scheduler.anneal_start, self.scheduler.num_epochs
            assert start is not None and end is not None  # in_anneal: there is an anneal
            return f"final anneal {epoch - start + 1}/{end - start}"
        return "plateau phase"

    def should_stop(self) -> bool:
        """With ``early_stop``: True once the LR has sat at ``plateau_min_lr`` for more than ``plateau_patience``
        plateau steps without improvement (:meth:`WarmupPlateauScheduler.should_stop`); identical on every DDP rank
        (the signal is). The trainer then ends the run after this epoch (:class:`_EarlyStop`)."""
        return self.early_stop and self.scheduler.should_stop()

    def stop_message(self, epoch: int) -> str:
        """The log line of an early stop after ``epoch``."""
        s = self.scheduler
        return (
            f"Early stop after epoch {epoch}: the LR has sat at plateau_min_lr {s.plateau.min_lrs[0]:g} for "
            f"{s.floor_bad_epochs} {self.unit} without improvement of {self.metric} (> plateau_patience "
            f"{s.plateau.patience}); ending the run as finished (checkpoint_final.pth, final validation). "
            "plateau_early_stop: false trains every epoch"
        )

    def signal_value(self, val_loss: float, ema_fg_dice: float | None = None, val_score: float | None = None) -> float:
        """The value of the followed signal for these observations (``val_loss_ema``: the current EMA, so call it
        after :meth:`update_ema`; NaN when the signal was not observed)."""
        values = {"val_loss": val_loss, "val_loss_ema": self.val_loss_ema, "ema_fg_dice": ema_fg_dice}
        value = val_score if self.per_round else values[self.metric]
        return math.nan if value is None else float(value)

    def update_ema(self, val_loss: float) -> float:
        """Add one epoch's validation loss to ``val_loss_ema`` and return it."""
        self.val_loss_ema = smoothed(self.val_loss_ema, float(val_loss), self.ema_smoothing)
        return self.val_loss_ema

    def end_epoch(
        self, epoch: int, val_loss: float, ema_fg_dice: float | None = None, val_score: float | None = None
    ) -> bool:
        """After validation of ``epoch``: update ``val_loss_ema``, then step the plateau on the followed signal (a
        per-round signal only when ``val_score`` is given and finite). Returns True when the LR was cut."""
        self.update_ema(val_loss)
        if self.per_round:
            if val_score is None or not math.isfinite(val_score):
                return False
            return self.end_round(epoch, val_score)
        return self._step(epoch, self.signal_value(val_loss, ema_fg_dice))

    def end_round(self, epoch: int, val_score: float) -> bool:
        """A scoring round of the weights of ``epoch`` finished with ``val_score``: step the plateau when it follows
        ``val_score`` (otherwise nothing). Returns True when the LR was cut."""
        if not self.per_round:
            return False
        return self._step(epoch, float(val_score))

    def _step(self, epoch: int, value: float) -> bool:
        lr_before = self.current_lr()
        reduced = self.scheduler.step_metric(epoch, value)
        if reduced:
            self.log(
                f"ReduceLROnPlateau: no improvement of {self.metric} for more than {self.scheduler.plateau.patience} "
                f"{self.unit}; lr {lr_before:.4g} -> {self.current_lr():.4g} from the next epoch"
            )
        return reduced

    def status(self, epoch: int) -> str | None:
        """The plateau's state after ``epoch`` for the epoch log (None during warmup)."""
        if self.scheduler.in_warmup(epoch):
            return None
        if self.scheduler.in_anneal(epoch):
            return f"final anneal: lr {self.current_lr():.4g} (the plateau is not stepped)"
        plateau = self.scheduler.plateau
        return (
            f"plateau ({self.metric}): best {plateau.best:.4g}, {self.unit} without improvement "
            f"{plateau.num_bad_epochs}/{plateau.patience}"
        )

    # ------------------------------------------------------------------ state
    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Drive ``optimizer`` from now on (a resume that switched the optimizer kind); the schedule's state, the
        plateau's LR and cuts included, stays."""
        self.scheduler.optimizer = self.scheduler.plateau.optimizer = optimizer

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state (:meth:`WarmupPlateauScheduler.state_dict`) plus the signal and ``val_loss_ema``."""
        return {**self.scheduler.state_dict(), "metric": self.metric, "val_loss_ema": self.val_loss_ema}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` of a driver with the same settings (also a bare scheduler state of older
        checkpoints: ``val_loss_ema`` then stays as it is; see :meth:`resume_ema`). A resume whose configuration
        may differ uses :meth:`resume`."""
        self.scheduler.load_state_dict(dict(state), reset_signal=False)
        if "val_loss_ema" in state:
            self.val_loss_ema = float(state["val_loss_ema"])

    def resume(self, state: Mapping[str, Any], saved_config: Mapping[str, Any], epoch: int) -> list[str]:
        """Continue a run at ``epoch`` from the :meth:`state_dict` it saved under ``saved_config``, with this
        driver's configuration (``nnUNetv2_train --c``, and ``nnunetv2_topo schedule`` replaying a resumed run).
        Call it with the optimizer holding the LR the run last trained with. Returns the lines to log:

        * ``plateau_metric`` changed: the LR and its cuts are kept; the best value, bad epochs, cooldown and the
          early stop's count start afresh on the new signal.
        * ``num_epochs`` changed (an extension): the plateau continues at its own LR with its cuts and counters
          (inside or after the old final anneal that is the LR before the anneal: the anneal is re-planned at the
          end of the new run); the early stop's count starts afresh, so an early-stopped run trains on.
        """
        saved_metric = state.get("metric") or saved_config.get("plateau_metric")
        switched = saved_metric is not None and saved_metric != self.metric
        self.scheduler.load_state_dict(dict(state), reset_signal=switched if saved_metric is not None else None)
        if "val_loss_ema" in state:
            self.val_loss_ema = float(state["val_loss_ema"])
        lines = []
        if switched:
            s = self.scheduler
            lines.append(
                f"plateau_metric changed on resume ({saved_metric} -> {self.metric}): the LR "
                f"{s.plateau_lr():.4g} and its {s.num_reductions} cuts are kept; the best value, the "
                f"{self.unit} without improvement, the cooldown and the early stop's count start afresh on "
                f"{self.metric}"
            )
        old_epochs = state.get("num_epochs") or saved_config.get("num_epochs")
        if old_epochs is not None and int(old_epochs) != self.scheduler.num_epochs:
            old_anneal = state.get("anneal_epochs")
            if old_anneal is None:
                old_anneal = final_anneal_epochs({**saved_config, "num_epochs": old_epochs})
            lines.append(self._length_change(int(old_epochs), int(old_anneal), epoch))
        return lines

    def _length_change(self, old_epochs: int, old_anneal: int, epoch: int) -> str:
        s = self.scheduler
        assert s.num_epochs is not None
        last = self.current_lr()
        lr = s.planned_lr(epoch)
        old_start = max(old_epochs - old_anneal, s.warmup_epochs) if old_anneal > 0 else None
        was_annealing = old_start is not None and epoch - 1 >= old_start
        stopped = s.floor_bad_epochs > s.plateau.patience
        s.floor_bad_epochs = 0
        if s.in_warmup(epoch):
            why = "still in warmup"
        elif s.in_anneal(epoch):
            assert s.num_epochs is not None and s.anneal_start is not None  # in_anneal: there is an anneal
            why = f"the final anneal, re-planned over the last {s.num_epochs - s.anneal_start} epochs of the new length"
        elif was_annealing:
            why = (
                f"the plateau's LR before the final anneal of the {old_epochs}-epoch run (which had brought it to "
                f"{last:.4g}): the anneal is re-planned at the new end"
            )
        else:
            why = "the plateau's LR, its cuts and counters unchanged"
        anneal = (
            f"the final anneal now begins at epoch {s.anneal_start}"
            if s.anneal_start is not None
            else "no final anneal (plateau_final_anneal 0)"
        )
        verb = "Extending" if s.num_epochs > old_epochs else "Shortening"
        stop = "; the early stop's count starts afresh" if stopped else ""
        return (
            f"{verb} the run: num_epochs {old_epochs} -> {s.num_epochs} at epoch {epoch}; the LR continues at "
            f"{lr:.4g} ({why}); {anneal}{stop}"
        )

    def resume_ema(self, logged: list[float]) -> None:
        """Seed ``val_loss_ema`` from the logged EMA values of a run whose checkpoint did not store it (the last
        finite one)."""
        finite = [float(v) for v in logged if v is not None and math.isfinite(float(v))]
        if finite:
            self.val_loss_ema = finite[-1]
