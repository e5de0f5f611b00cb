"""The guarded optimizer step: clip the total gradient norm, skip a step whose loss or gradient norm is not finite
(on every DDP rank alike), stop after ``max_consecutive_skips`` skips in a row, log the pre-clip norms."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.trainers.diagnostics import console_log
from nnunetv2_topo.trainers.distributed import all_ranks, all_ranks_tensor

__all__ = ["GuardedStep", "StepResult", "TrainingStoppedError"]


class TrainingStoppedError(TopoError, RuntimeError):
    """Too many consecutive non-finite steps: the message names the loss terms and what to change."""


class StepResult(tuple):
    """``(loss_value, grad_norm, stepped)`` of one step."""

    __slots__ = ()

    def __new__(cls, loss_value: float, grad_norm: float, stepped: bool) -> StepResult:
        return super().__new__(cls, (loss_value, grad_norm, stepped))

    loss_value = property(lambda self: self[0])
    grad_norm = property(lambda self: self[1])
    stepped = property(lambda self: self[2])


class GuardedStep:
    """Backward, unscale (AMP), clip at ``clip_norm``, then step unless the loss (on any rank) or the gradient norm
    is not finite. Owns the skip counters (its :meth:`state_dict`) and the epoch's norm statistics.

    Args:
        clip_norm: the total gradient norm is clipped to this (after AMP unscale).
        max_consecutive_skips: this many skipped steps in a row end training with an error naming the fixes.
        log_every: the pre-clip norm is logged every N global iterations.
        log: where messages go (the trainer's log file).
        initial_lr: named in the error after too many skips (the first fix to try).
    """

    def __init__(
        self,
        clip_norm: float,
        max_consecutive_skips: int,
        log_every: int,
        log: Callable[..., None] = console_log,
        initial_lr: float | None = None,
    ) -> None:
        self.initial_lr = initial_lr
        self.clip_norm = float(clip_norm)
        self.max_consecutive_skips = int(max_consecutive_skips)
        self.log_every = int(log_every)
        self.log = log
        self.consecutive_skips = 0
        self.total_skipped_steps = 0
        self.epoch_grad_norms: list[float] = []
        self.epoch_skipped = 0

    def start_epoch(self) -> None:
        self.epoch_grad_norms = []
        self.epoch_skipped = 0

    def step(
        self,
        loss: torch.Tensor,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        grad_scaler: Any | None = None,
    ) -> StepResult:
        """Backward always runs (under DDP every rank joins the gradient all-reduce), then the update is made or
        skipped on every rank alike. DDP has all-reduced the gradients, so the norm agrees everywhere; the loss does
        not, hence one tiny all-reduce per step (on the device). Loss, norm and the verdict reach the host in one
        transfer: the step's only host-device synchronisation. With AMP the optimizer steps directly: a finite norm
        of the unscaled gradients means ``GradScaler`` found no inf/NaN, and ``GradScaler.step`` would read its
        found-inf flags once more (``.item()``, a second synchronisation); ``GradScaler.update`` lowers the scale
        after an overflow from those flags on the device, as in nnU-Net."""
        if grad_scaler is not None:
            grad_scaler.scale(loss).backward()
            grad_scaler.unscale_(optimizer)  # clip the true gradient, not the scaled one
        else:
            loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(network.parameters(), self.clip_norm).detach().float()
        value = loss.detach().float().reshape(()).to(norm.device)
        allowed = all_ranks_tensor(torch.isfinite(value).float()) * torch.isfinite(norm).float()
        loss_value, grad_norm, verdict = torch.stack([value, norm, allowed]).tolist()
        stepped = verdict > 0.5
        if stepped:
            optimizer.step()
        if grad_scaler is not None:
            grad_scaler.update()  # lowers the scale after an overflow, as in nnU-Net
        return StepResult(loss_value, grad_norm, stepped)

    @staticmethod
    def update_allowed(loss_value: float, grad_norm: float) -> bool:
        """Both finite, the loss on every rank (a collective under DDP)."""
        return all_ranks(math.isfinite(loss_value)) and math.isfinite(grad_norm)

    def record(
        self,
        result: StepResult,
        global_iteration: int,
        lr: float,
        terms: dict[str, float],
        amp_scale: Callable[[], float] | None = None,
        context: str = "",
    ) -> None:
        """Count and log one step's outcome; raise after ``max_consecutive_skips`` skips in a row (``amp_scale``:
        reads the AMP scale, only after a skip; ``context``: where training stands, for the error)."""
        loss_value, grad_norm, stepped = result
        if math.isfinite(grad_norm):
            self.epoch_grad_norms.append(grad_norm)
        if global_iteration % self.log_every == 0:
            self.log(
                f"iteration {global_iteration}: grad norm (pre-clip) {grad_norm:.4g}, loss {loss_value:.4g}, "
                f"lr {lr:.4g}",
                also_print_to_console=False,
            )
        if stepped:
            self.consecutive_skips = 0
            return
        self.consecutive_skips += 1
        self.epoch_skipped += 1
        self.total_skipped_steps += 1
        amp_note = ""
        if amp_scale is not None and math.isfinite(loss_value):
            amp_note = f"; AMP grad scale now {amp_scale():g} (a few early overflows are normal)"
        self.log(
            f"WARNING: iteration {global_iteration}: step skipped, loss {loss_value}, grad norm {grad_norm} "
            f"(non-finite; {self.consecutive_skips} in a row, {self.total_skipped_steps} in total{amp_note})"
        )
        if self.consecutive_skips >= self.max_consecutive_skips:
            listed = ", ".join(f"{k} {v:.4g}" for k, v in terms.items())
            raise TrainingStoppedError(
                f"Training stopped: {self.consecutive_skips} consecutive steps had a non-finite loss or gradient "
                f"norm ({context}last loss {loss_value}, grad norm {grad_norm}, terms: {listed}). Check the input "
                f"data for NaN/inf, lower initial_lr (now {self.initial_lr}) or the weight of the term that is not "
                f"finite (loss_weights in nnUNet_topo_config); max_consecutive_skips={self.max_consecutive_skips}."
            )

    def state_dict(self) -> dict[str, int]:
        return {"consecutive_skips": self.consecutive_skips, "total_skipped_steps": self.total_skipped_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consecutive_skips = int(state.get("consecutive_skips", 0))
        self.total_skipped_steps = int(state.get("total_skipped_steps", 0))
