"""Checked settings: value parsers, range checks and :class:`Param`, one named setting with its default.

The parsers raise ``ValueError`` with a fragment ("must be >= 0") that the caller prefixes with the setting's
name and source: the loss API (``focal_alpha must be >= 0, got -1``) and the configuration file
(``f.yaml: key 'focal_alpha' = -1 is invalid: must be >= 0``) share the same checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Checked",
    "Param",
    "at_least_one",
    "band_pair",
    "boolean",
    "closed_unit",
    "half_open_unit",
    "integer",
    "non_negative",
    "number",
    "open_unit",
    "positive",
]


def number(value: Any) -> float:
    """A finite real number; numeric strings are accepted because YAML 1.1 reads ``1e-4`` as a string."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError("must be a number") from None
    if not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError("must be finite")
    return value


def boolean(value: Any) -> bool:
    """``true`` or ``false`` (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {type(value).__name__} {value!r}")
    return value


def integer(value: Any) -> int:
    """An ``int`` (not a bool, not a float with an integral value)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer, not {type(value).__name__} {value!r}")
    return int(value)


def positive(v: float) -> None:
    if v <= 0:
        raise ValueError("must be > 0")


def non_negative(v: float) -> None:
    if v < 0:
        raise ValueError("must be >= 0")


def at_least_one(v: int) -> None:
    if v < 1:
        raise ValueError("must be >= 1")


def open_unit(v: float) -> None:
    if not 0.0 < v < 1.0:
        raise ValueError("must lie in (0, 1)")


def closed_unit(v: float) -> None:
    if not 0.0 <= v <= 1.0:
        raise ValueError("must lie in [0, 1]")


def half_open_unit(v: float) -> None:
    if not 0.0 <= v < 1.0:
        raise ValueError("must lie in [0, 1)")


def band_pair(value: Any) -> tuple[float, float]:
    """Two radii ``(inner, outer)`` in voxels with ``0 <= inner < outer``."""
    if isinstance(value, str) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError("must be a pair [inner, outer] (voxels)")
    inner, outer = (number(v) for v in value)
    if not 0 <= inner < outer:
        raise ValueError("must satisfy 0 <= inner < outer")
    return (inner, outer)


class Checked:
    """Mixin of a setting with ``parse`` and an optional ``check`` (both raise ``ValueError("must ...")``)."""

    parse: Callable[[Any], Any]
    check: Callable[[Any], None] | None

    def validate(self, value: Any) -> Any:
        """The parsed, range-checked value."""
        parsed = self.parse(value)
        if self.check is not None:
            self.check(parsed)
        return parsed


@dataclass(frozen=True)
class Param(Checked):
    """One named setting: its configuration key, constructor argument, default, meaning and checks.

    ``parse`` converts (and may reject) a value, ``check`` range-checks the parsed value; both raise
    ``ValueError`` with a "must ..." fragment. :meth:`validate` returns the parsed value, :meth:`checked` does the
    same but names the setting and the value in the error (for direct API use).
    """

    key: str
    arg: str
    default: Any
    type_name: str
    meaning: str
    parse: Callable[[Any], Any]
    check: Callable[[Any], None] | None = None

    def checked(self, value: Any) -> Any:
        try:
            return self.validate(value)
        except ValueError as exc:
            raise ValueError(f"{self.key} {exc} ({self.type_name}), got {value!r}") from None
