"""Foreground probability and ignore mask shared by every loss term.

nnU-Net's network emits 2-channel logits ``(B, 2, *spatial)`` (background, surface). The softmax foreground
probability equals ``sigmoid(l1 − l0)``, so every term works on that single fp32 logit. Voxels labelled
``ignore_label`` are masked: their logit is replaced by the constant 0 (``torch.where``), so neither the loss value
nor any gradient depends on the logits there and their gradient is exactly 0; terms that look at neighbourhoods
(clDice, connectivity) see probability 0 there, like the target, whose ignore voxels count as background.
"""

from __future__ import annotations

from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor

FOREGROUND_LABEL = 1


def check_logits(logits: Tensor, name: str = "logits") -> None:
    """Raise ``ValueError`` unless ``logits`` is a floating tensor ``(B, 2, Y, X)`` or ``(B, 2, Z, Y, X)``."""
    if not isinstance(logits, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor (B, 2, ...), got {type(logits).__name__}")
    if logits.ndim not in (4, 5) or logits.shape[1] != 2 or not logits.is_floating_point():
        raise ValueError(
            f"{name} must be floating-point 2-channel logits (B, 2, Y, X) or (B, 2, Z, Y, X) "
            f"(background, foreground), got shape {tuple(logits.shape)} dtype {logits.dtype}"
        )


def check_target(target: Tensor, logits: Tensor, name: str = "target") -> Tensor:
    """Labels ``(B, 1, *spatial)`` matching ``logits``; ``(B, *spatial)`` is accepted and given the channel axis."""
    if not isinstance(target, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of integer labels, got {type(target).__name__}")
    if target.ndim == logits.ndim - 1:
        target = target.unsqueeze(1)
    if target.shape[0] != logits.shape[0] or target.shape[1] != 1 or target.shape[2:] != logits.shape[2:]:
        raise ValueError(
            f"{name} must hold labels of shape (B, 1, *spatial) = {(logits.shape[0], 1, *logits.shape[2:])} "
            f"to match the logits, got {tuple(target.shape)}"
        )
    return target


def working_dtype(logits: Tensor) -> torch.dtype:
    """fp32 for half-precision logits (autocast), otherwise the logits' own dtype (float64 stays float64)."""
    return torch.promote_types(logits.dtype, torch.float32)


def check_map(value: Tensor, logits: Tensor, name: str) -> Tensor:
    """A per-voxel target map (skeleton, band) must be ``(B, 1, *spatial)`` exactly: no broadcasting across the
    batch (the defect of the public skeleton-recall trainer). Returned as fp32 on the logits' device."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor (B, 1, *spatial), got {type(value).__name__}")
    expected = (logits.shape[0], 1, *logits.shape[2:])
    if tuple(value.shape) != expected:
        raise ValueError(f"{name} must have shape (B, 1, *spatial) = {expected}, got {tuple(value.shape)}")
    return value.to(device=logits.device, dtype=working_dtype(logits))


class FgParts:
    """Per-scale tensors the terms share, computed once per call, all fp32 ``(B, 1, *spatial)`` unless noted.

    ``logit``: foreground logit ``l1 − l0``, 0 at ignore voxels. ``target``: 0/1 foreground (ignore → 0).
    ``valid``: bool, False at ignore voxels. ``labels``: the original label tensor. ``logits``: the fp32
    2-channel logits (for nnU-Net's Dice and CE). ``prob``/``prob_masked`` are computed on first use.
    "fp32" means at least fp32: half-precision logits are promoted, float64 stays float64.
    """

    def __init__(self, logits: Tensor, target: Tensor, ignore_label: int | None) -> None:
        check_logits(logits)
        target = check_target(target, logits)
        self.ignore_label = ignore_label
        self.labels = target
        self.logits = logits.to(working_dtype(logits))
        if ignore_label is None:
            self.valid = torch.ones_like(target, dtype=torch.bool)
        else:
            self.valid = target != ignore_label
        self.target = (target == FOREGROUND_LABEL).to(self.logits.dtype)
        raw = self.logits[:, 1:2] - self.logits[:, 0:1]
        self.logit = torch.where(self.valid, raw, torch.zeros((), dtype=raw.dtype, device=raw.device))

    @property
    def spatial_dims(self) -> tuple[int, ...]:
        """Dimensions to sum over for per-sample reductions (channel axis included, it has size 1)."""
        return tuple(range(1, self.logit.ndim))

    @cached_property
    def valid_f(self) -> Tensor:
        return self.valid.to(self.logits.dtype)

    @cached_property
    def prob(self) -> Tensor:
        """Softmax foreground probability (0.5 at ignore voxels, where it never reaches the loss)."""
        return torch.sigmoid(self.logit)

    @cached_property
    def prob_masked(self) -> Tensor:
        """Foreground probability with ignore voxels set to 0, as the target has them (for spatial operators)."""
        return self.prob * self.valid_f

    @cached_property
    def masked_logits(self) -> Tensor:
        """The 2-channel fp32 logits with ignore voxels set to 0 (so even inf/NaN there cannot leak in)."""
        return torch.where(self.valid, self.logits, torch.zeros((), dtype=self.logits.dtype, device=self.logits.device))

    @cached_property
    def valid_count(self) -> Tensor:
        """Number of annotated voxels per sample, shape (B,)."""
        return self.valid_f.sum(self.spatial_dims)

    @cached_property
    def labelled(self) -> Tensor:
        """Bool (B,): the sample has at least one annotated (non-ignore) voxel."""
        return self.valid_count > 0

    def voxel_mean(self, values: Tensor) -> Tensor:
        """Each sample's mean of ``values`` ``(B, 1, *spatial)`` over its annotated voxels, shape (B,)
        (0 for an all-ignore sample, which :meth:`batch_mean` then leaves out)."""
        num = (values * self.valid_f).sum(self.spatial_dims)
        return num / self.valid_count.clamp_min(1.0)


def batch_mean(per_sample: Tensor, counted: Tensor) -> Tensor:
    """Mean of ``per_sample`` (B,) over the samples where ``counted`` (bool (B,)) holds; 0 (with a zero gradient)
    when none does. Samples left out contribute neither value nor gradient, whatever ``per_sample`` holds there
    (NaN included). No host-device synchronisation."""
    values = torch.where(counted, per_sample, torch.zeros((), dtype=per_sample.dtype, device=per_sample.device))
    return values.sum() / counted.sum().clamp_min(1).to(per_sample.dtype)


def bce_with_logits(parts: FgParts) -> Tensor:
    """Voxel-wise binary cross-entropy of the foreground logit, numerically stable for any logit magnitude."""
    return F.binary_cross_entropy_with_logits(parts.logit, parts.target, reduction="none")
