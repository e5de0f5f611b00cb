"""Synthetic Vesuvius-like data: volumes (:mod:`.generator`) and the Kaggle folder layout (:mod:`.layout`)."""

from nnunetv2_topo.synth.generator import ScrollStyle, SynthCase, make_case, synthesize_case

__all__ = ["ScrollStyle", "SynthCase", "make_case", "synthesize_case"]
