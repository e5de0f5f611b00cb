"""Synthetic Vesuvius-like data: volumes (:mod:`.generator`), the Kaggle folder layout (:mod:`.layout`) and its
CSV files (:mod:`.ids`). The volume API is imported lazily, so ``nnunetv2_topo.synth.ids`` stays light."""

from __future__ import annotations

from typing import Any

__all__ = ["ScrollStyle", "SynthCase", "make_case", "synthesize_case"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from nnunetv2_topo.synth import generator

        return getattr(generator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
