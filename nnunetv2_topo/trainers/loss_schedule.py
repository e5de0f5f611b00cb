"""The ``loss_schedule`` component of the TopoWarmup trainer: the loss weights of each epoch.

At the start of every training epoch it sets each scheduled term's factor on the loss
(:func:`nnunetv2_topo.losses.schedule.schedule_factors`), logs every weighted term's effective weight as
``loss_weight_<term>`` (one value per epoch in nnU-Net's ``logging``, so in every checkpoint and in
``progress_topo.png``), prints the weights when they change, and sets the loss's step counter to the epoch's first
iteration (the ``betti_matching`` term's step grid and crops). Validation always uses the full weights, so the
validation loss the plateau watches is the same objective at every epoch. The weights are a function of the epoch
alone: a resumed run continues them exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nnunetv2_topo.losses.schedule import schedule_factors

__all__ = ["LOSS_WEIGHT_PREFIX", "LossWeightSchedule"]

LOSS_WEIGHT_PREFIX = "loss_weight_"


class LossWeightSchedule:
    """Args: ``config`` (the resolved configuration: ``loss_weights``, ``loss_schedule``), ``log`` (the trainer's
    ``print_to_log_file``)."""

    def __init__(self, config: Mapping[str, Any], log: Callable[..., None]) -> None:
        self.weights = dict(config["loss_weights"])
        self.schedule = dict(config.get("loss_schedule") or {})
        self.log = log
        self._last: dict[str, float] | None = None

    def weights_at(self, epoch: int) -> dict[str, float]:
        """Every weighted term's effective weight at ``epoch``."""
        factors = schedule_factors(self.schedule, epoch)
        return {term: w * factors.get(term, 1.0) for term, w in self.weights.items()}

    def start_epoch(self, epoch: int, loss: Any, logger: Any, iterations_per_epoch: int) -> dict[str, float]:
        """Set this epoch's weights and step counter on ``loss`` (a ``TopoLossCall``), log them; returns them."""
        loss.set_schedule(schedule_factors(self.schedule, epoch) or None)
        loss.step = epoch * iterations_per_epoch
        weights = self.weights_at(epoch)
        for term, w in weights.items():
            logger.log(f"{LOSS_WEIGHT_PREFIX}{term}", w, epoch)
        if weights != self._last and (self.schedule or self._last is None):
            text = ", ".join(f"{t} {w:g}" for t, w in weights.items())
            changed = "loss weights" if self._last is None else "loss weights changed"
            self.log(f"{changed} (epoch {epoch}): {text}", also_print_to_console=True)
        self._last = weights
        return weights

    @staticmethod
    def start_validation(loss: Any) -> None:
        """Validation runs with the full weights."""
        loss.set_schedule(None)
