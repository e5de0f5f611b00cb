"""Post-processing of a whole volume stored chunk by chunk, in time and driver memory linear in the chunks.

Global steps give exactly the in-memory result (``postprocess_volume`` on the whole probability map), including
components that cross chunk borders. Prediction stores per voxel a class: 0, 1 (``p > threshold``) or 2 (also
``p > hysteresis_high``). Then, each pass one task per chunk with arguments of constant size (a chunk index, the
array names; never a table of all chunks), on Dask workers or local threads:

1. **label**: each chunk's 26-connected components of class >= 1 (``cc3d``, deterministic); the chunk's six
   boundary faces of labels go to ``work_faces/<key>`` (zlib); the task returns only the *border* labels (those on a
   face) with their voxel counts and whether they hold a class-2 voxel. Labels are global as
   ``chunk index * 2^32 + local label``: no offsets to agree on.
2. **join**: each chunk pairs its faces with the touching faces, edges and corners of its 13 forward neighbours
   (every 26-neighbour pair across a chunk border) and returns the global label pairs that touch.
3. **solve** (the driver): ``scipy.sparse.csgraph.connected_components`` over the border labels and pairs only; a
   component is kept when it holds a class-2 voxel (hysteresis) and at least ``min_component_size`` voxels (dust).
   The driver holds border labels and pairs (17 + 16 bytes each), never the labels inside chunks.
4. **keep**: each chunk labels itself again, decides its inner components from its own counts, takes its border
   labels' decisions from the solve, and writes the kept mask.

Local steps (``plug_holes``, ``patch_holes``, ``closing``, ``fill_holes``) then run per chunk on the chunk plus a halo
(``HALO`` voxels, clipped at the volume's faces) read from the kept mask. They differ from the in-memory result only
where a step's decision depends on voxels further away than the halo. See docs/how-to/whole-volume.md.
(dask-image's ``ndmeasure.label`` does the same as 1-3 but its graph grows with the square of the chunks.)
"""

from __future__ import annotations

import functools
import itertools
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cc3d
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from nnunetv2_topo.postprocessing.steps import PostprocessConfig, postprocess_volume
from nnunetv2_topo.scroll.writer import array_at, create_array

HALO = 16
DIRECTIONS = [d for d in itertools.product((-1, 0, 1), repeat=3) if d > (0, 0, 0)]  # the 13 forward neighbours
FACES = "work_faces"
MASK = "work_mask"
Runner = Callable[[Callable, list, str], list]
"""``run(fn, items, desc)``: ``[fn(*item) for item in items]`` (in parallel, with progress); see finalize.py."""


@dataclass(frozen=True)
class WorkArrays:
    """Where a finalize pass reads and writes: the group ``url`` and its arrays' names; ``token`` is unique per pass
    (it keys the per-process cache of open arrays)."""

    url: str
    classes: str
    target: str
    token: str
    mask: str = MASK
    faces: str = FACES


@functools.lru_cache(maxsize=16)
def _open(url: str, name: str, token: str):
    import zarr

    return zarr.open_array(f"{url.rstrip('/')}/{name}", mode="r+")


@functools.lru_cache(maxsize=4)
def _fs(url: str):
    import fsspec

    return fsspec.core.url_to_fs(url)


def _local_steps(block: np.ndarray, config: PostprocessConfig) -> np.ndarray:
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


def has_global_steps(config: PostprocessConfig) -> bool:
    return config.hysteresis_high is not None or config.min_component_size > 1


def grid_of(shape: Sequence[int], chunks: Sequence[int]) -> tuple[int, ...]:
    return tuple(-(-s // c) for s, c in zip(shape, chunks, strict=True))


def _slices(idx, chunks, shape) -> tuple[slice, ...]:
    return tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, chunks, shape, strict=True))


def _base(idx, grid) -> int:
    return int(np.ravel_multi_index(idx, grid)) << 32


def _key(idx) -> str:
    return ".".join(map(str, idx))


def _label(work: WorkArrays, idx):
    classes = _open(work.url, work.classes, work.token)
    c = np.asarray(classes[_slices(idx, classes.chunks, classes.shape)])
    return c, cc3d.connected_components(c >= 1, connectivity=26, out_dtype=np.uint32)


def _face_shapes(work: WorkArrays, idx) -> list[tuple[int, int]]:
    classes = _open(work.url, work.classes, work.token)
    box = [s.stop - s.start for s in _slices(idx, classes.chunks, classes.shape)]
    return [tuple(n for a, n in enumerate(box) if a != ax) for ax in range(3) for _ in range(2)]


FACE_ORDER = [f"{ax}{side}" for ax in range(3) for side in "lh"]


def label_chunk(work: WorkArrays, idx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pass 1: (border labels, their voxel counts, whether they hold class 2); writes the chunk's faces."""
    c, lab = _label(work, idx)
    k = int(lab.max())
    if k == 0:
        return np.zeros(0, np.uint32), np.zeros(0, np.int64), np.zeros(0, bool)
    faces = [np.take(lab, i, axis=ax) for ax in range(3) for i in (0, -1)]
    flat = np.concatenate([f.ravel() for f in faces])
    fs, root = _fs(work.url)
    fs.pipe_file(f"{root.rstrip('/')}/{work.faces}/{_key(idx)}", zlib.compress(flat.tobytes(), 1))
    border = np.unique(flat)
    border = border[border != 0]
    sizes = np.bincount(lab.ravel(), minlength=k + 1)
    high = np.bincount(lab[c == 2], minlength=k + 1) > 0
    return border, sizes[border].astype(np.int64), high[border]


class _FaceCache:
    """Decoded faces by (pass token, chunk), least recently used dropped beyond ``max_bytes`` (a chunk's faces are
    read by itself and up to 13 neighbours, which a worker mostly handles close together)."""

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.items: OrderedDict = OrderedDict()
        self.max_bytes, self.held, self.lock = max_bytes, 0, threading.Lock()

    def get(self, work: WorkArrays, idx) -> dict | None:
        key = (work.token, work.url, idx)
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        fs, root = _fs(work.url)
        try:
            data = fs.cat_file(f"{root.rstrip('/')}/{work.faces}/{_key(idx)}")
        except FileNotFoundError:
            faces = None  # no foreground in that chunk
        else:
            flat = np.frombuffer(zlib.decompress(data), np.uint32)
            shapes = _face_shapes(work, idx)
            parts = np.split(flat, np.cumsum([a * b for a, b in shapes])[:-1])
            faces = {n: f.reshape(sh) for n, f, sh in zip(FACE_ORDER, parts, shapes, strict=True)}
        with self.lock:
            self.items[key] = faces
            self.held += 0 if faces is None else sum(f.nbytes for f in faces.values())
            while self.held > self.max_bytes and len(self.items) > 1:
                _, old = self.items.popitem(last=False)
                self.held -= 0 if old is None else sum(f.nbytes for f in old.values())
        return faces


_FACES = _FaceCache()


def _part(faces: dict, d, own: bool) -> np.ndarray:
    """The voxels of a chunk that touch its neighbour in direction ``d`` (own side) or, for the neighbour, that
    touch the chunk (``own=False``), as a 3-D array with size 1 along the axes where ``d`` is nonzero."""
    axes = [ax for ax in range(3) if d[ax]]
    a0 = axes[0]
    face = np.expand_dims(faces[f"{a0}{'h' if (d[a0] == 1) == own else 'l'}"], a0)
    sl = [slice(None)] * 3
    for ax in axes[1:]:
        sl[ax] = slice(-1, None) if (d[ax] == 1) == own else slice(0, 1)
    return face[tuple(sl)]


def join_chunk(work: WorkArrays, idx, grid) -> np.ndarray:
    """Pass 2: global label pairs (a, b) that touch across the borders of chunk ``idx`` and its forward neighbours."""
    own = _FACES.get(work, idx)
    out = [np.zeros((0, 2), np.int64)]
    if own is None:
        return out[0]
    for d in DIRECTIONS:
        nidx = tuple(i + di for i, di in zip(idx, d, strict=True))
        if not all(0 <= n < g for n, g in zip(nidx, grid, strict=True)):
            continue
        neighbour = _FACES.get(work, nidx)
        if neighbour is None:
            continue
        a_face, b_face = _part(own, d, True), _part(neighbour, d, False)
        free = [ax for ax in range(3) if d[ax] == 0]
        for shift in itertools.product((-1, 0, 1), repeat=len(free)):
            sa, sb = [slice(None)] * 3, [slice(None)] * 3
            for ax, s in zip(free, shift, strict=True):
                n = a_face.shape[ax]
                sa[ax], sb[ax] = slice(max(0, -s), n - max(0, s)), slice(max(0, s), n - max(0, -s))
            a, b = a_face[tuple(sa)], b_face[tuple(sb)]
            m = (a != 0) & (b != 0)
            if m.any():
                pairs = np.stack([a[m].astype(np.int64) + _base(idx, grid), b[m].astype(np.int64) + _base(nidx, grid)])
                out.append(pairs.T)
    return np.unique(np.concatenate(out), axis=0)


def solve(borders: list, pairs: list, grid, blocks: list, config: PostprocessConfig) -> tuple[list, dict]:
    """Pass 3 (driver): the keep decision of every border label, per chunk; and what the driver held."""
    counts = [len(b[0]) for b in borders]
    gids = np.concatenate(
        [np.zeros(0, np.int64)] + [b[0].astype(np.int64) + _base(i, grid) for b, i in zip(borders, blocks, strict=True)]
    )
    sizes = np.concatenate([np.zeros(0, np.int64)] + [b[1] for b in borders])
    high = np.concatenate([np.zeros(0, bool)] + [b[2] for b in borders])
    edges = np.concatenate([np.zeros((0, 2), np.int64), *pairs])
    held = {"border_labels": len(gids), "pairs": len(edges), "bytes": gids.nbytes + sizes.nbytes + high.nbytes}
    held["bytes"] += edges.nbytes
    n = len(gids)
    if n == 0:
        return [np.zeros(0, bool) for _ in blocks], held
    ia, ib = np.searchsorted(gids, edges[:, 0]), np.searchsorted(gids, edges[:, 1])
    graph = coo_matrix((np.ones(len(edges), np.int8), (ia, ib)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    keep = np.ones(component.max() + 1 if n else 0, bool)
    if config.min_component_size > 1:
        keep &= np.bincount(component, weights=sizes) >= config.min_component_size
    if config.hysteresis_high is not None:
        keep &= np.bincount(component, weights=high) > 0
    return np.split(keep[component], np.cumsum(counts)[:-1]), held


def keep_chunk(work: WorkArrays, idx, dest: str, border, border_keep, config: PostprocessConfig) -> int:
    """Pass 4: the kept mask of chunk ``idx`` into array ``dest``; returns its foreground count."""
    if has_global_steps(config):
        c, lab = _label(work, idx)
        k = int(lab.max())
        keep = np.ones(k + 1, bool)
        if config.min_component_size > 1:
            keep &= np.bincount(lab.ravel(), minlength=k + 1) >= config.min_component_size
        if config.hysteresis_high is not None:
            keep &= np.bincount(lab[c == 2], minlength=k + 1) > 0
        keep[border] = border_keep
        keep[0] = False
        mask = keep[lab]
    else:
        classes = _open(work.url, work.classes, work.token)
        mask = np.asarray(classes[_slices(idx, classes.chunks, classes.shape)]) >= 1
    out = _open(work.url, dest, work.token)
    out[_slices(idx, out.chunks, out.shape)] = mask.astype(np.uint8)
    return int(np.count_nonzero(mask))


def local_chunk(work: WorkArrays, idx, source: str, config: PostprocessConfig, halo: int) -> int:
    """Pass 5: the local steps on chunk ``idx`` with ``halo`` voxels around it (clipped at the volume's faces)."""
    src, out = _open(work.url, source, work.token), _open(work.url, work.target, work.token)
    own = _slices(idx, out.chunks, out.shape)
    region = tuple(slice(max(0, s.start - halo), min(n, s.stop + halo)) for s, n in zip(own, out.shape, strict=True))
    block = np.asarray(src[region]) >= 1
    result = _local_steps(block, config)
    inner = tuple(slice(s.start - r.start, s.stop - r.start) for s, r in zip(own, region, strict=True))
    result = result[inner].astype(np.uint8)
    out[own] = result
    return int(np.count_nonzero(result))


def postprocess_chunks(work: WorkArrays, config: PostprocessConfig, run: Runner, halo: int = HALO) -> dict:
    """``config``'s steps applied to the class codes ``work.classes`` into ``work.target`` (see the module doc);
    returns the foreground voxels and what the driver held. Every pass rewrites what it writes: repeatable."""
    import zarr

    group = zarr.open_group(work.url, mode="r+")
    classes = array_at(group, work.classes)
    grid = grid_of(classes.shape, classes.chunks)
    blocks = list(itertools.product(*[range(g) for g in grid]))
    local = has_local_steps(config)
    held: dict = {"border_labels": 0, "pairs": 0, "bytes": 0}
    if local:
        create_array(group, work.mask, classes.shape, classes.chunks)
    dest = work.mask if local else work.target
    if has_global_steps(config):
        fs, root = _fs(work.url)
        fs.makedirs(f"{root.rstrip('/')}/{work.faces}", exist_ok=True)
        borders = run(label_chunk, [(work, b) for b in blocks], "label components")
        pairs = run(join_chunk, [(work, b, grid) for b in blocks], "join across chunks")
        keep, held = solve(borders, pairs, grid, blocks, config)
        del pairs
        items = [(work, b, dest, bd[0], k, config) for b, bd, k in zip(blocks, borders, keep, strict=True)]
    else:
        none = np.zeros(0, np.int64)
        items = [(work, b, dest, none, none.astype(bool), config) for b in blocks]
    foreground = run(keep_chunk, items, "keep components")
    if local:
        foreground = run(local_chunk, [(work, b, work.mask, config, halo) for b in blocks], "local steps")
    return {"foreground": int(sum(foreground)), "driver": held}
