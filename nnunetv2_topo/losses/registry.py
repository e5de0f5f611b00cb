"""The loss terms, in the order they are computed and logged: the one list ``TopologyLoss``, the configuration
keys (``loss_weights`` and the term parameters) and the target transform are derived from.

Adding a term: a module with the :class:`~nnunetv2_topo.losses.base.LossTerm` subclass and its
:class:`~nnunetv2_topo.losses.base.TermSpec`, and one entry below.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from nnunetv2_topo.losses import betti_matching, boundary, cldice, dilated_mse, focal, overlap, skeleton_recall
from nnunetv2_topo.losses.base import TermSpec
from nnunetv2_topo.setting_checks import Param, non_negative, number

TERMS: dict[str, TermSpec] = {
    spec.name: spec
    for spec in (
        overlap.DICE,
        overlap.CE,
        focal.SPEC,
        boundary.SPEC,
        cldice.SPEC,
        skeleton_recall.SPEC,
        dilated_mse.SPEC,
        betti_matching.SPEC,
    )
}

TERM_NAMES: tuple[str, ...] = tuple(TERMS)
"""Names of the built-in terms (code that must see terms registered later reads :data:`TERMS`)."""

TERM_ALIASES: dict[str, str] = {"connectivity": "dilated_mse"}
"""Deprecated term names -> their current name: configuration files, ``loss_weights``, ``loss_schedule`` and
``TopologyLoss(weights=...)`` written with an old name keep working (:func:`canonical_term_names`, with a
``FutureWarning``)."""


def canonical_term_names(value: Any, where: str) -> Any:
    """``value`` (a mapping term -> anything) with every deprecated term name of :data:`TERM_ALIASES` replaced by its
    current name, in place of the old key; a ``FutureWarning`` names each. Anything else is returned as it is (the
    callers' checks report it). Raises ``ValueError`` when a term is given under both names."""
    if not isinstance(value, Mapping) or not any(k in TERM_ALIASES for k in value):
        return value
    out: dict[Any, Any] = {}
    for key, item in value.items():
        name = TERM_ALIASES.get(key, key)
        if name != key:
            if name in value:
                raise ValueError(
                    f"{where} names the loss term {name!r} twice: as {name!r} and as {key!r} (its old name)"
                )
            warnings.warn(
                f"{where}: the loss term {key!r} is now called {name!r} (it is a dilated MSE, not a connectivity "
                f"measure); {key!r} still works, rename it to {name!r}",
                FutureWarning,
                stacklevel=3,
            )
        out[name] = item
    return out


def term_params() -> dict[str, tuple[Param, tuple[str, ...]]]:
    """``{parameter key: (Param, names of the terms using it)}`` over the registered terms, in term order."""
    out: dict[str, tuple[Param, tuple[str, ...]]] = {}
    for spec in TERMS.values():
        for param in spec.all_params:
            known, users = out.get(param.key, (param, ()))
            if known != param:
                raise ValueError(f"loss parameter {param.key!r} is declared twice with different definitions")
            out[param.key] = (param, (*users, spec.name))
    return out


def check_weights(value: Any) -> dict[str, float]:
    """Term weights: a mapping of known term names to finite numbers >= 0 (numeric strings accepted, as YAML 1.1
    reads ``1e-3``), not all 0. Returns the positive weights only, in term order (unlisted and 0 mean off)."""
    names = list(TERMS)
    value = canonical_term_names(value, "loss_weights")
    if not isinstance(value, Mapping):
        raise ValueError(f"loss weights must be a mapping term -> weight, not {type(value).__name__}")
    unknown = [k for k in value if k not in TERMS]
    if unknown:
        raise ValueError(f"unknown loss term(s) {unknown}; the terms are {', '.join(names)}")
    for name, weight in value.items():
        try:
            non_negative(number(weight))
        except ValueError as exc:
            raise ValueError(f"weight of loss term {name!r} = {weight!r} is invalid: {exc}") from None
    out = {name: number(value[name]) for name in names if name in value and number(value[name]) > 0}
    if not out:
        raise ValueError(f"all loss weights are 0; give at least one of {', '.join(names)} a weight > 0")
    return out
