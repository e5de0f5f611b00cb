"""Dice and cross-entropy: nnU-Net's own ``MemoryEfficientSoftDiceLoss`` and ``RobustCrossEntropyLoss``,
configured as nnU-Net's ``_build_loss`` does (foreground Dice only, smooth 1e-5, CE with ``ignore_index``)."""

from __future__ import annotations

import torch
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss
from nnunetv2.utilities.helpers import softmax_helper_dim1
from torch import Tensor

from nnunetv2_topo import IGNORE_LABEL
from nnunetv2_topo.losses.base import LossTerm, TermSpec
from nnunetv2_topo.losses.masking import FgParts


class DiceTerm(LossTerm):
    """``1 + nnU-Net's soft Dice loss``, i.e. ``1 − Dice`` of the foreground (minimum 0; nnU-Net logs ``−Dice``).

    Per sample unless ``batch_dice``; ignore voxels masked with nnU-Net's ``loss_mask``. ``ddp`` enables nnU-Net's
    all-gather of the batch-Dice statistics (only used with ``batch_dice``; None = when torch.distributed runs).
    """

    def __init__(
        self, ignore_label: int | None = IGNORE_LABEL, batch_dice: bool = False, ddp: bool | None = None
    ) -> None:
        super().__init__(ignore_label)
        if ddp is None:
            ddp = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.dice = MemoryEfficientSoftDiceLoss(
            apply_nonlin=softmax_helper_dim1, batch_dice=batch_dice, do_bg=False, smooth=1e-5, ddp=bool(ddp)
        )

    def compute(self, parts: FgParts, **maps: Tensor) -> Tensor:
        if parts.ignore_label is None:
            return 1.0 + self.dice(parts.logits, parts.labels)
        labels = torch.where(parts.valid, parts.labels, torch.zeros_like(parts.labels))
        return 1.0 + self.dice(parts.masked_logits, labels, loss_mask=parts.valid)


class CrossEntropyTerm(LossTerm):
    """nnU-Net's cross-entropy: mean over all annotated voxels of the batch (as ``DC_and_CE_loss``), and 0 instead
    of NaN when the whole batch is ignore (without nnU-Net's host-device synchronisation for that check)."""

    def __init__(self, ignore_label: int | None = IGNORE_LABEL) -> None:
        super().__init__(ignore_label)
        ignore_index = -100 if ignore_label is None else int(ignore_label)
        self.ce = RobustCrossEntropyLoss(ignore_index=ignore_index, reduction="none")

    def compute(self, parts: FgParts, **maps: Tensor) -> Tensor:
        per_voxel = self.ce(parts.logits, parts.labels)
        return per_voxel.sum() / parts.valid_count.sum().clamp_min(1.0)


DICE = TermSpec("dice", DiceTerm, every_scale=True, run_options=("batch_dice",))
CE = TermSpec("ce", CrossEntropyTerm, every_scale=True)
