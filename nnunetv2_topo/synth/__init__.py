"""Synthetic Vesuvius-like data: volumes (:mod:`.generator`) and the Kaggle folder layout (:mod:`.layout`; its
CSV files: :mod:`nnunetv2_topo.ids_csv`). The volume API is imported lazily, so importing the package is light."""

from __future__ import annotations

from typing import Any

__all__ = ["ScrollStyle", "SheetTopology", "SynthCase", "make_case", "synthesize_case"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from nnunetv2_topo.synth import generator  # scipy: loaded on first use, not by `nnunetv2_topo synth --help`

        return getattr(generator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
