"""Post-processing of a whole volume stored chunk by chunk.

Global steps give exactly the in-memory result (``postprocess_volume`` on the whole probability map), including
components that cross chunk borders: prediction stores per voxel 0, 1 (``p > threshold``) or 2 (also
``p > hysteresis_high``); ``dask_image.ndmeasure.label`` labels the 26-connected components of the classes >= 1
across chunks; a component is kept when it holds a class-2 voxel (hysteresis) and at least ``min_component_size``
voxels (dust removal).

Local steps (``plug_holes``, ``patch_holes``, ``closing``, ``fill_holes``) run per chunk on the chunk plus a halo
(``dask.array.map_overlap``, ``HALO`` voxels, no padding at the volume's faces). They differ from the in-memory
result only where a step's decision depends on voxels further away than the halo: a hole or a cavity larger than
the halo, a component whose connectivity (the join guard) runs outside the halo. See docs/how-to/whole-volume.md.
"""

from __future__ import annotations

import numpy as np

from nnunetv2_topo.postprocessing.steps import PostprocessConfig

HALO = 16


def _local_steps(block: np.ndarray, config: PostprocessConfig) -> np.ndarray:
    from nnunetv2_topo.postprocessing.steps import postprocess_volume

    local = PostprocessConfig(
        threshold=0.0,
        min_component_size=0,
        plug_holes=config.plug_holes,
        plug_method=config.plug_method,
        patch_holes=config.patch_holes,
        closing_radius=config.closing_radius,
        fill_holes=config.fill_holes,
    )
    return postprocess_volume(block.astype(np.uint8), local)


def has_local_steps(config: PostprocessConfig) -> bool:
    return bool(config.plug_holes or config.patch_holes or config.closing_radius != (0, 0) or config.fill_holes)


def postprocess_classes(classes, config: PostprocessConfig, labels_store=None, halo: int = HALO):
    """uint8 0/1 dask array: ``config``'s steps applied to the class codes (a dask array, see the module doc).
    ``labels_store``: an empty int32 Zarr array of the volume's shape that holds the component labels (computed
    once, read twice) instead of recomputing them."""
    import dask
    import dask.array as da
    from dask_image import ndmeasure

    low = classes >= 1
    hysteresis = config.hysteresis_high is not None
    if hysteresis or config.min_component_size > 1:
        labels, n = ndmeasure.label(low, structure=np.ones((3, 3, 3), bool))
        if labels_store is not None:
            da.store(labels.astype(np.int32), labels_store, lock=False)
            labels = da.from_zarr(labels_store).rechunk(classes.chunks)
        n = int(labels.max().compute())
        keep = np.ones(n + 1, bool)
        counts = []
        if config.min_component_size > 1:
            counts.append(da.bincount(labels.ravel(), minlength=n + 1))
        if hysteresis:
            counts.append(da.bincount(da.where(classes.ravel() == 2, labels.ravel(), 0), minlength=n + 1))
        counts = dask.compute(*counts)
        if config.min_component_size > 1:
            keep &= counts[0] >= config.min_component_size
        if hysteresis:
            keep &= counts[-1] > 0
        keep[0] = False
        mask = labels.map_blocks(lambda b: keep[b], dtype=bool)
    else:
        mask = low
    if has_local_steps(config):
        mask = mask.map_overlap(_local_steps, depth=halo, boundary="none", dtype=np.uint8, config=config)
    return mask.astype(np.uint8)
