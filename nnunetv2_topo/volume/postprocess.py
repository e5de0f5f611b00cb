"""Post-processing of a whole volume stored chunk by chunk.

Global steps give exactly the in-memory result (``postprocess_volume`` on the whole probability map), including
components that cross chunk borders. Prediction stores per voxel a class: 0, 1 (``p > threshold``) or 2 (also
``p > hysteresis_high``). Then, as one Dask graph of per-chunk tasks:

1. each chunk's 26-connected components of class >= 1 are labelled (``cc3d``), with their sizes and whether they
   hold a class-2 voxel; labels are made global by per-chunk offsets;
2. each chunk pairs its border voxels with the touching voxels of its 13 forward neighbours (faces, edges and
   corners: every 26-neighbour pair across a chunk border), giving the label pairs that touch;
3. the pairs join labels into components (``scipy.sparse.csgraph.connected_components``); a component is kept when
   it holds a class-2 voxel (hysteresis) and at least ``min_component_size`` voxels (dust removal).

(dask-image's ``ndmeasure.label`` does the same, but with this dask's array expressions it rebuilds the whole graph
for every chunk face: quadratic in the number of chunks; see benchmarks/RESULTS.md.)

Local steps (``plug_holes``, ``patch_holes``, ``closing``, ``fill_holes``) run per chunk on the chunk plus a halo
(``dask.array.map_overlap``, ``HALO`` voxels, no padding at the volume's faces). They differ from the in-memory
result only where a step's decision depends on voxels further away than the halo: a hole or a cavity larger than
the halo, a component whose connectivity (the join guard) runs outside the halo. See docs/how-to/whole-volume.md.
"""

from __future__ import annotations

import itertools

import numpy as np

from nnunetv2_topo.postprocessing.steps import PostprocessConfig

HALO = 16
DIRECTIONS = [d for d in itertools.product((-1, 0, 1), repeat=3) if d > (0, 0, 0)]  # the 13 forward neighbours


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


def _slices(idx, chunks, shape) -> tuple[slice, ...]:
    return tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, chunks, shape, strict=True))


def _label_block(classes, labels, idx):
    import cc3d

    sl = _slices(idx, classes.chunks, classes.shape)
    c = np.asarray(classes[sl])
    lab = cc3d.connected_components(c >= 1, connectivity=26, out_dtype=np.uint32)
    labels[sl] = lab
    k = int(lab.max())
    sizes = np.bincount(lab.ravel(), minlength=k + 1)[1:]
    high = np.bincount(lab[c == 2], minlength=k + 1)[1:] > 0
    return k, sizes, high


def _touching_pairs(labels, idx, offsets: dict) -> np.ndarray:
    """Global label pairs (a, b) that touch across the borders of chunk ``idx`` and its 13 forward neighbours."""
    chunks, shape = labels.chunks, labels.shape
    grid = tuple(-(-s // c) for s, c in zip(shape, chunks, strict=True))
    own = np.asarray(labels[_slices(idx, chunks, shape)])
    out = [np.zeros((0, 2), np.int64)]
    for d in DIRECTIONS:
        nidx = tuple(i + di for i, di in zip(idx, d, strict=True))
        if not all(0 <= n < g for n, g in zip(nidx, grid, strict=True)):
            continue
        a_sl = tuple(slice(None) if di == 0 else (slice(-1, None) if di == 1 else slice(0, 1)) for di in d)
        n_box = _slices(nidx, chunks, shape)
        b_box = tuple(
            s if di == 0 else (slice(s.start, s.start + 1) if di == 1 else slice(s.stop - 1, s.stop))
            for s, di in zip(n_box, d, strict=True)
        )
        a_face, b_face = own[a_sl], np.asarray(labels[b_box])
        if not a_face.any() or not b_face.any():
            continue
        free = [ax for ax in range(3) if d[ax] == 0]
        for shift in itertools.product((-1, 0, 1), repeat=len(free)):
            sa, sb = [slice(None)] * 3, [slice(None)] * 3
            for ax, s in zip(free, shift, strict=True):
                n = a_face.shape[ax]
                sa[ax], sb[ax] = slice(max(0, -s), n - max(0, s)), slice(max(0, s), n - max(0, -s))
            a, b = a_face[tuple(sa)], b_face[tuple(sb)]
            m = (a != 0) & (b != 0)
            if m.any():
                pairs = np.stack([a[m].astype(np.int64) + offsets[idx], b[m].astype(np.int64) + offsets[nidx]], 1)
                out.append(np.unique(pairs, axis=0))
    return np.concatenate(out)


def kept_components(classes, labels, config: PostprocessConfig) -> tuple[np.ndarray, dict]:
    """(keep per global label, offset per chunk index): the exact hysteresis + dust decision, see the module doc.
    ``classes``: the uint8 class codes (Zarr array); ``labels``: an empty uint32 Zarr array, same shape and chunks."""
    import dask
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    grid = [range(-(-s // c)) for s, c in zip(classes.shape, classes.chunks, strict=True)]
    blocks = list(itertools.product(*grid))
    per_block = dask.compute(*[dask.delayed(_label_block)(classes, labels, b) for b in blocks])
    offsets, total = {}, 0
    for b, (k, _, _) in zip(blocks, per_block, strict=True):
        offsets[b] = total
        total += k
    sizes = np.concatenate([[0], *[s for _, s, _ in per_block]]).astype(np.int64)
    high = np.concatenate([[False], *[h for _, _, h in per_block]])
    pairs = np.concatenate(dask.compute(*[dask.delayed(_touching_pairs)(labels, b, offsets) for b in blocks]))
    n = total + 1
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    keep = np.ones(component.max() + 1, bool)
    if config.min_component_size > 1:
        keep &= np.bincount(component, weights=sizes) >= config.min_component_size
    if config.hysteresis_high is not None:
        keep &= np.bincount(component, weights=high) > 0
    keep_label = keep[component]
    keep_label[0] = False
    return keep_label, offsets


def postprocess_store(classes, labels, config: PostprocessConfig, halo: int = HALO):
    """uint8 0/1 dask array (chunked like ``classes``): ``config``'s steps applied to the stored class codes."""
    import dask.array as da

    hysteresis = config.hysteresis_high is not None
    if hysteresis or config.min_component_size > 1:
        keep, offsets = kept_components(classes, labels, config)

        def _mask(block, block_id=None):
            return np.where(block != 0, keep[block.astype(np.int64) + offsets[tuple(block_id)]], False)

        mask = da.from_zarr(labels).map_blocks(_mask, dtype=bool)
    else:
        mask = da.from_zarr(classes) >= 1
    if has_local_steps(config):
        mask = mask.map_overlap(_local_steps, depth=halo, boundary="none", dtype=np.uint8, config=config)
    return mask.astype(np.uint8)
