"""The loss adapter: ``TopologyLoss`` behind nnU-Net's ``self.loss(output, target)`` call, its parameters from the
configuration, and the extra per-voxel target channels (skeleton, band) it reads.

The extra targets are computed by ``TopoTargetsTransform`` inside nnU-Net's data pipeline (inserted just after
deep-supervision downsampling, so they ride on the full-resolution scale only: the loss reads them nowhere else),
split off the batch before nnU-Net's code sees the target, and handed to the loss through
:attr:`TopoLossCall.extras` right before the call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from torch import nn

from nnunetv2_topo.losses import TopologyLoss
from nnunetv2_topo.trainers.config import loss_keys
from nnunetv2_topo.transforms import TopoTargetsTransform, split_topo_targets

if TYPE_CHECKING:
    from nnunetv2_topo.losses import TopologyLoss

__all__ = ["TopoLossCall", "deep_supervision_weights", "loss_parameters"]


def deep_supervision_weights(num_scales: int, lowest_nonzero: bool) -> list[float]:
    """nnU-Net's weights: 1/2^i per scale, the lowest 0 (1e-6 with ``lowest_nonzero``: DDP without compile, where
    every parameter must receive a gradient), normalised. One scale (a 2-stage network): ``[1.0]``."""
    if num_scales == 1:  # nnU-Net's rule would zero the only weight and divide by 0
        return [1.0]
    weights = np.array([1 / (2**i) for i in range(num_scales)])
    weights[-1] = 1e-6 if lowest_nonzero else 0
    return list(weights / weights.sum())


def loss_parameters(
    config: Mapping[str, Any], ignore_label: int | None, ds_weights: list[float] | None, batch_dice: bool
) -> dict[str, Any]:
    """Keyword arguments of ``TopologyLoss`` from the configuration (every term parameter it declares)."""
    kwargs: dict[str, Any] = {
        "weights": dict(config["loss_weights"]),
        "ignore_label": ignore_label,
        "ds_weights": ds_weights,
        "batch_dice": batch_dice,
    }
    kwargs.update({k: config[k] for k in loss_keys() if k not in ("loss_weights", "loss_schedule")})
    return kwargs


class TopoLossCall(nn.Module):
    """Adapts ``TopologyLoss`` to nnU-Net's ``self.loss(output, target)`` call (see the module docstring)."""

    def __init__(self, loss: TopologyLoss, ignore_label: int | None = None) -> None:
        super().__init__()
        self.topology_loss = loss
        self.ignore_label = ignore_label
        self.extras: dict[str, torch.Tensor] = {}
        self.step: int | None = None
        """The next training step (set per epoch by the loss schedule; counts the calls with autograd on)."""

    @classmethod
    def from_parameters(cls, **kwargs: Any) -> TopoLossCall:
        return cls(TopologyLoss(**kwargs), kwargs.get("ignore_label"))

    @property
    def required_targets(self) -> tuple[str, ...]:
        """The precomputed targets the loss reads, in channel order."""
        return tuple(getattr(self.topology_loss, "required_targets", ()))

    @property
    def target_params(self) -> dict[str, Any]:
        """The parameters of :attr:`required_targets` by configuration key."""
        return dict(getattr(self.topology_loss, "target_params", {}))

    @property
    def last_terms(self) -> dict[str, float]:
        return dict(getattr(self.topology_loss, "last_terms", {}))

    @property
    def last_term_values(self) -> Mapping[str, float]:
        """:attr:`last_terms` without a host-device sync until read (``TopologyLoss.last_term_values``)."""
        values = getattr(self.topology_loss, "last_term_values", None)
        return self.last_terms if values is None else values

    def set_schedule(self, factors: Mapping[str, float] | None) -> None:
        """Per-term weight factors (``TopologyLoss.set_schedule``); None = the configured weights."""
        self.topology_loss.set_schedule(factors)

    def forward(self, output: Any, target: Any) -> torch.Tensor:
        if not isinstance(output, (list, tuple)):  # deep supervision disabled
            output, target = [output], [target]
        if self.step is not None and torch.is_grad_enabled():  # a training step: terms on a step grid see it
            self.topology_loss.set_step(self.step)
            self.step += 1
        try:
            return self.topology_loss(list(output), list(target), **self.extras)
        finally:
            self.extras = {}  # one batch's targets never leak into the next call

    # ------------------------------------------------------------------ extra target channels
    def targets_transform(self, ignore_label: int | None = None) -> Any | None:
        """The transform computing :attr:`required_targets` (None when the loss needs none); ``ignore_label``
        defaults to the loss's."""
        if not self.required_targets:
            return None

        ignore = self.ignore_label if ignore_label is None else ignore_label
        return TopoTargetsTransform(self.required_targets, ignore, **self.target_params)

    def insert_targets_transform(self, transforms: ComposeTransforms) -> ComposeTransforms:
        """nnU-Net's ``transforms`` with :meth:`targets_transform` just after deep-supervision downsampling (last
        without it): the targets are appended to the full-resolution scale only."""
        extra = self.targets_transform()
        if extra is None:
            return transforms
        position = next(
            (i + 1 for i, t in enumerate(transforms.transforms) if isinstance(t, DownsampleSegForDSTransform)),
            len(transforms.transforms),
        )
        transforms.transforms.insert(position, extra)
        return transforms

    def take_targets(self, batch: dict, device: torch.device) -> dict:
        """``batch`` with the extra channels split off ``batch['target']`` (labels only, as nnU-Net expects); the
        extras go, on ``device``, to the next loss call.

        The full-resolution target moves to ``device`` whole (the loader's contiguous, pinned tensor: an
        asynchronous copy) and is split there: slicing or decoding it on the host first would copy pageable,
        non-contiguous channels, a blocking copy every step (``tests/test_step_hygiene.py``)."""
        if not self.required_targets:
            self.extras = {}
            return batch

        target = batch["target"]
        if isinstance(target, (list, tuple)):
            target = [target[0].to(device, non_blocking=True), *target[1:]]
        else:
            target = target.to(device, non_blocking=True)
        labels, self.extras = split_topo_targets(target, self.required_targets)
        return {**batch, "target": labels}
