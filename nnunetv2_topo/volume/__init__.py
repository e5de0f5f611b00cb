"""Whole-volume prediction over Zarr / OME-Zarr: exact chunked sliding window, resumable OME-Zarr output, Dask."""

from nnunetv2_topo.volume.blending import VolumeModelError
from nnunetv2_topo.volume.cluster import ClusterError, close_client, parse_dask, start_client
from nnunetv2_topo.volume.run import ScrollOptions, VolumeReport, predict_volume
from nnunetv2_topo.volume.source import VolumeInputError, looks_like_zarr, open_source, parse_bbox
from nnunetv2_topo.volume.writer import ScrollOutputError

__all__ = [
    "ClusterError",
    "ScrollOptions",
    "VolumeInputError",
    "VolumeModelError",
    "VolumeReport",
    "ScrollOutputError",
    "close_client",
    "looks_like_zarr",
    "open_source",
    "parse_bbox",
    "parse_dask",
    "predict_volume",
    "start_client",
]
