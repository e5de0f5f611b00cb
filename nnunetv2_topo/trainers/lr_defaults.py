"""The learning rates a TopoWarmup configuration may leave ``null``: they follow its optimizer.

``initial_lr: null`` is the optimizer's own LR (:data:`INITIAL_LR_BY_OPTIMIZER`) and ``plateau_min_lr: null`` a fixed
fraction of ``initial_lr`` (:data:`MIN_LR_FRACTION`), so a file that only switches ``optimizer`` does not run SGD at
Muon's LR, and a variant is one key (``optimizer: sgd``).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

__all__ = ["INITIAL_LR_BY_OPTIMIZER", "MIN_LR_FRACTION", "MUON_OTHER_LR", "fill_null_lrs", "null_meaning"]

INITIAL_LR_BY_OPTIMIZER: dict[str, float] = {"sgd": 1e-2, "adamw": 1e-4, "muon": 2e-2}
"""nnU-Net's SGD LR, the original recipe's AdamW LR, the common Muon LR (the Muon group's; the rest of the network
runs at ``muon_other_lr``)."""

MIN_LR_FRACTION = 1e-3
"""``plateau_min_lr: null`` = 0.1 % of ``initial_lr``."""

MUON_OTHER_LR: dict[str, float] = {"adamw": 3e-4, "sgd": INITIAL_LR_BY_OPTIMIZER["sgd"]}
"""``muon_other_lr: null`` (resolved when the optimizer is built, so the saved configuration keeps ``null``): AdamW 3e-4
(the common Muon + AdamW setting), SGD nnU-Net's LR."""

_NULL_MEANINGS = {
    "initial_lr": "null = by optimizer: " + ", ".join(f"{k} {v:g}" for k, v in INITIAL_LR_BY_OPTIMIZER.items()),
    "plateau_min_lr": f"null = {MIN_LR_FRACTION:g} × initial_lr",
    "muon_other_lr": "null = " + ", ".join(f"{v:g} for {k}" for k, v in MUON_OTHER_LR.items()),
}


def null_meaning(key: str) -> str:
    """What ``null`` means for the LR ``key`` (``initial_lr``, ``plateau_min_lr``, ``muon_other_lr``), for its one-line
    meaning in the configuration reference."""
    return _NULL_MEANINGS[key]


def fill_null_lrs(config: MutableMapping[str, Any]) -> None:
    """Replace a ``null`` ``initial_lr`` / ``plateau_min_lr`` of a merged configuration by the values they follow."""
    if config["initial_lr"] is None:
        config["initial_lr"] = INITIAL_LR_BY_OPTIMIZER[config["optimizer"]]
    if config["plateau_min_lr"] is None:
        config["plateau_min_lr"] = config["initial_lr"] * MIN_LR_FRACTION
