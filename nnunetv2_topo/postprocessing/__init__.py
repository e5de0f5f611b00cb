"""Topology clean-up of sheet predictions: ``postprocess_volume(volume, PostprocessConfig())``."""

from nnunetv2_topo.postprocessing.steps import (
    PostprocessConfig,
    binarize,
    fill_cavities,
    plug_pinholes,
    postprocess_volume,
    remove_small_components,
    separated_closing,
)

__all__ = [
    "PostprocessConfig",
    "binarize",
    "fill_cavities",
    "plug_pinholes",
    "postprocess_volume",
    "remove_small_components",
    "separated_closing",
]
