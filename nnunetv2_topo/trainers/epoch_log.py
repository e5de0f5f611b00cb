"""The TopoWarmup keys of nnU-Net's epoch logger (per-term losses, gradient norms, skipped steps, ``val_loss_ema``,
the scoring rounds' ``val_score``) and the per-epoch summary lines of the training log."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from nnunetv2_topo.trainers.diagnostics import TOPO_LOG_KEYS
from nnunetv2_topo.trainers.score_rounds import SCORE_LOG_KEYS

__all__ = ["EpochLog"]


class EpochLog:
    """The TopoWarmup series in nnU-Net's ``logger`` (one value per epoch each, NaN where there is none).

    Args:
        logger: nnU-Net's ``nnUNetLogger``.
        terms: the active loss terms (``train_loss_<term>``, ``val_loss_<term>``).
        scoring: scoring rounds are on (``val_score`` and its parts).
    """

    def __init__(self, logger: Any, terms: Sequence[str], scoring: bool) -> None:
        self.logger = logger
        self.terms = tuple(terms)
        self.scoring = scoring

    @property
    def store(self) -> dict[str, list]:
        return self.logger.local_logger.my_fantastic_logging

    def keys(self) -> list[str]:
        keys = [f"{split}_loss_{t}" for t in self.terms for split in ("train", "val")]
        keys += [f"loss_weight_{t}" for t in self.terms]  # the loss schedule's effective weights
        return keys + list(TOPO_LOG_KEYS) + ["val_loss_ema"] + (list(SCORE_LOG_KEYS) if self.scoring else [])

    def register(self, current_epoch: int) -> None:
        """Add the keys (NaN up to ``current_epoch``: a resumed run whose configuration added a term keeps one value
        per epoch)."""
        for key in self.keys():
            values = self.store.setdefault(key, [])
            values.extend([math.nan] * (current_epoch - len(values)))

    def pad(self, epoch: int) -> None:
        """One value up to ``epoch`` for every TopoWarmup key, also a term dropped on resume (nnU-Net plots
        progress.png up to its shortest list: a list that stopped growing would freeze it)."""
        for key, values in self.store.items():
            if (
                key.startswith(("train_loss_", "val_loss_", "loss_weight_"))
                or key in TOPO_LOG_KEYS
                or key in SCORE_LOG_KEYS
            ):
                values.extend([math.nan] * (epoch + 1 - len(values)))

    def log_scores(self, record: dict[str, Any]) -> None:
        """A scoring round's values at the epoch whose weights were scored."""
        epoch = int(record["epoch"])
        for key, field_ in SCORE_LOG_KEYS.items():
            values = self.store.setdefault(key, [])
            values.extend([math.nan] * (epoch + 1 - len(values)))
            values[epoch] = record[field_]

    def summary(self, epoch: int, clip_norm: float) -> list[str]:
        """The lines logged at the end of ``epoch``: LR, per-term losses, gradient norms and skipped steps."""
        get = self.logger.get_value

        def terms(prefix: str) -> str:
            return ", ".join(f"{t} {get(f'{prefix}_loss_{t}', epoch):.4f}" for t in self.terms)

        return [
            f"lr {get('lrs', epoch):.4g}",
            f"train terms: {terms('train')}",
            f"val terms: {terms('val')}",
            f"grad norm (pre-clip, clip at {clip_norm:g}): mean {get('grad_norm_mean', epoch):.4g}, max "
            f"{get('grad_norm_max', epoch):.4g}; skipped steps {get('skipped_steps', epoch)}",
        ]
