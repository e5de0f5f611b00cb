"""Per-term loss-weight schedules (the ``loss_schedule`` key): a term is off before its start epoch, then ramps
linearly to its ``loss_weights`` value.

``{"cldice": {"start": 2, "ramp": 2}}`` gives clDice the factors 0, 0, 0.5, 1, 1, … of its weight at epochs 0, 1,
2, 3, 4, …: ``factor(epoch) = 0`` for ``epoch < start``, else ``min(1, (epoch − start + 1) / ramp)``. The factor is
a pure function of the epoch, so a resumed run continues the same weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nnunetv2_topo.losses.registry import TERMS, canonical_term_names
from nnunetv2_topo.setting_checks import integer

__all__ = ["parse_loss_schedule", "schedule_factor", "schedule_factors"]


def parse_loss_schedule(value: Any) -> dict[str, dict[str, int]]:
    """``{term: {"start": int >= 0, "ramp": int >= 1}}`` (``ramp`` defaults to 1: the full weight at ``start``).
    Raises ``ValueError`` naming the term and field (``loss_schedule.cldice.ramp must be >= 1, got 0``)."""
    if value is None:
        return {}
    value = canonical_term_names(value, "loss_schedule")
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping term -> {{start: EPOCH, ramp: EPOCHS}}, not {type(value).__name__}")
    out: dict[str, dict[str, int]] = {}
    for term, spec in value.items():
        where = f"loss_schedule.{term}"
        if term not in TERMS:
            raise ValueError(f"{where}: unknown loss term {term!r}; the terms are {', '.join(TERMS)}")
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where} must be a mapping {{start: EPOCH, ramp: EPOCHS}}, got {spec!r}")
        unknown = sorted(set(spec) - {"start", "ramp"})
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; the fields are start, ramp")
        if "start" not in spec:
            raise ValueError(f"{where} needs start (the first epoch with a weight > 0)")
        fields = {}
        for field, low in (("start", 0), ("ramp", 1)):
            raw = spec.get(field, 1)
            try:
                number = integer(raw)
            except ValueError:
                raise ValueError(f"{where}.{field} must be an integer, got {raw!r}") from None
            if number < low:
                raise ValueError(f"{where}.{field} must be >= {low}, got {raw!r}")
            fields[field] = number
        out[str(term)] = fields
    return out


def schedule_factor(spec: Mapping[str, int] | None, epoch: int) -> float:
    """The factor in [0, 1] of a term's weight at ``epoch`` (1 without a schedule)."""
    if spec is None:
        return 1.0
    if epoch < spec["start"]:
        return 0.0
    return min(1.0, (epoch - spec["start"] + 1) / spec["ramp"])


def schedule_factors(schedule: Mapping[str, Mapping[str, int]], epoch: int) -> dict[str, float]:
    """Every scheduled term's factor at ``epoch``."""
    return {term: schedule_factor(spec, epoch) for term, spec in schedule.items()}
