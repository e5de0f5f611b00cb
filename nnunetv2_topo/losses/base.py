"""Common base of the loss terms and the declaration each term makes of itself.

A term is a module usable on its own (``term(logits, target)``) whose ``compute`` the compound loss calls with
shared :class:`~nnunetv2_topo.losses.masking.FgParts` (computed once per scale). Its :class:`TermSpec` says what
the compound loss, the configuration and the target transform need to know; the registry
(:mod:`nnunetv2_topo.losses.registry`) lists the specs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from nnunetv2_topo import IGNORE_LABEL
from nnunetv2_topo.losses.masking import FgParts, batch_mean, check_map
from nnunetv2_topo.setting_checks import Param
from nnunetv2_topo.transforms.topo_targets import TARGETS, compute_batch_target


class LossTerm(nn.Module):
    """One term on 2-channel logits with an ignore label; ``term(logits, target, **maps)`` returns a scalar.

    Shapes: ``logits`` ``(B, 2, *spatial)`` (``*spatial`` = ``Z, Y, X`` or ``Y, X``), ``target`` integer labels
    ``(B, 1, *spatial)`` (``(B, *spatial)`` accepted), precomputed ``maps`` (``skeleton``, ``band``)
    ``(B, 1, *spatial)`` or None (computed on the fly).

    Reduction: a per-sample term implements :meth:`per_sample`, which gives each sample's value ``(B,)`` and the
    samples the value is defined for (bool ``(B,)``: at least one annotated voxel, and for skeleton recall and the
    boundary loss a non-empty skeleton/band); the term is the mean over those samples only, 0 when there is none.
    A sample that is entirely ignore therefore neither counts as 0 in the mean nor dilutes the gradient of the
    others. A term defined on the whole batch (Dice, CE: nnU-Net's own reductions) overrides :meth:`compute`.

    Calling the module prepares the shared tensors in fp32 with autocast disabled, so the term is safe under
    fp16/bf16 autocast.
    """

    def __init__(self, ignore_label: int | None = IGNORE_LABEL) -> None:
        super().__init__()
        self.ignore_label = ignore_label

    def per_sample(self, parts: FgParts, **maps: Tensor) -> tuple[Tensor, Tensor]:
        """``(values (B,), counted (B,) bool)``: each sample's value and whether it enters the batch mean."""
        raise NotImplementedError(f"{type(self).__name__} implements neither per_sample nor compute")

    def prepare(self, parts: FgParts, **maps: Tensor) -> None:
        """Called for every weighted term of a scale before any term's :meth:`compute` (a term with host work
        starts its device-to-host copy here); nothing by default."""

    def compute(self, parts: FgParts, **maps: Tensor) -> Tensor | None:
        """The term's scalar value on the shared ``parts`` of one scale: by default the mean of
        :meth:`per_sample` over the counted samples (:func:`~nnunetv2_topo.losses.masking.batch_mean`)."""
        values, counted = self.per_sample(parts, **maps)
        return batch_mean(values, counted)

    def forward(self, logits: Tensor, target: Tensor, **maps: Tensor | None) -> Tensor | None:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            parts = FgParts(logits, target, self.ignore_label)
            return self.compute(parts, **{k: v for k, v in maps.items() if v is not None})  # None: computed here

    def set_step(self, step: int | None) -> None:
        """The training step, for a term on a step grid (``betti_matching``); nothing by default."""

    @staticmethod
    def target_map(parts: FgParts, name: str, given: Tensor | None, **params: Any) -> Tensor:
        """The precomputed target ``name`` (B, 1, ...) as fp32, 0 on ignore voxels; computed on the fly on the CPU
        from the labels when ``given`` is None (correct, slower). ``params``: the target's parameters by key."""
        if given is None:
            given = compute_batch_target(parts.labels, name, parts.ignore_label, **params)
        return check_map(given, parts.logit, name) * parts.valid_f


@dataclass(frozen=True)
class TermSpec:
    """What a loss term declares about itself.

    - ``name``: its key in ``loss_weights`` and in the logs (``train_loss_<name>``).
    - ``term``: the :class:`LossTerm` class, built as ``term(ignore_label, **{param.arg: value})``.
    - ``every_scale``: applied at every deep-supervision scale with nnU-Net's scale weights (Dice, CE, focal);
      False: at full resolution only unless ``TopologyLoss(topology_at_all_scales=True)``.
    - ``target``: the precomputed target it reads (a name in :data:`nnunetv2_topo.transforms.TARGETS`) or None;
      the target's parameters are then passed to the term too (for its on-the-fly fallback).
    - ``params``: its own parameters (configuration key, argument, default, checks).
    - ``run_options``: ``TopologyLoss`` arguments set by the run rather than the configuration (``batch_dice``).
    """

    name: str
    term: type[LossTerm]
    every_scale: bool = False
    target: str | None = None
    params: tuple[Param, ...] = ()
    run_options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.target is not None and self.target not in TARGETS:
            raise ValueError(f"loss term {self.name!r}: unknown target {self.target!r}; known: {list(TARGETS)}")

    @property
    def all_params(self) -> tuple[Param, ...]:
        """Its own parameters and those of its target."""
        return self.params + (TARGETS[self.target].params if self.target else ())
