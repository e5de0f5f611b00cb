"""Whole-volume prediction over Zarr / OME-Zarr: exact chunked sliding window, resumable OME-Zarr output, Dask.

The ``volume`` extra (zarr, fsspec, dask, distributed, ome-zarr, numcodecs), torch and nnU-Net are imported inside
the functions that use them: the package imports without the extra, so ``predict`` can name what is missing."""

from nnunetv2_topo.scroll.blending import ScrollModelError
from nnunetv2_topo.scroll.cluster import ClusterError, close_client, parse_dask, start_client
from nnunetv2_topo.scroll.prediction import ScrollOptions, ScrollReport, predict_scroll
from nnunetv2_topo.scroll.source import ScrollInputError, looks_like_zarr, open_source, parse_bbox
from nnunetv2_topo.scroll.writer import ScrollOutputError

__all__ = [
    "ClusterError",
    "ScrollInputError",
    "ScrollModelError",
    "ScrollOptions",
    "ScrollOutputError",
    "ScrollReport",
    "close_client",
    "looks_like_zarr",
    "open_source",
    "parse_bbox",
    "parse_dask",
    "predict_scroll",
    "start_client",
]
