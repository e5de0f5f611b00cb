"""The learning rates a TopoWarmup configuration may leave ``null``: they follow its optimizer.

``initial_lr: null`` is the optimizer's own LR (:data:`INITIAL_LR_BY_OPTIMIZER`) and ``plateau_min_lr: null`` a fixed
fraction of ``initial_lr`` (:data:`MIN_LR_FRACTION`), so a file that only switches ``optimizer`` does not run SGD at
Muon's LR, and a variant is one key (``optimizer: sgd``).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

__all__ = ["INITIAL_LR_BY_OPTIMIZER", "MIN_LR_FRACTION", "NULL_LR_MEANING", "NULL_MIN_LR_MEANING", "fill_null_lrs"]

INITIAL_LR_BY_OPTIMIZER: dict[str, float] = {"sgd": 1e-2, "adamw": 1e-4, "muon": 2e-2}
"""nnU-Net's SGD LR, the original recipe's AdamW LR, the common Muon LR (the Muon group's; the rest of the network
runs at ``muon_other_lr``)."""

MIN_LR_FRACTION = 1e-3
"""``plateau_min_lr: null`` = 0.1 % of ``initial_lr``."""

NULL_LR_MEANING = "null = by optimizer: " + ", ".join(f"{k} {v:g}" for k, v in INITIAL_LR_BY_OPTIMIZER.items())
NULL_MIN_LR_MEANING = f"null = {MIN_LR_FRACTION:g} × initial_lr"
"""What ``null`` means for ``initial_lr`` and ``plateau_min_lr``, for the keys' one-line meanings."""


def fill_null_lrs(config: MutableMapping[str, Any]) -> None:
    """Replace a ``null`` ``initial_lr`` / ``plateau_min_lr`` of a merged configuration by the values they follow."""
    if config["initial_lr"] is None:
        config["initial_lr"] = INITIAL_LR_BY_OPTIMIZER[config["optimizer"]]
    if config["plateau_min_lr"] is None:
        config["plateau_min_lr"] = config["initial_lr"] * MIN_LR_FRACTION
