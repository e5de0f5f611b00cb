"""Matched Betti pairs ``(m_0, m_1, m_2)`` of two binary tiles, computed by exact rules derived
from the Betti-Matching-3D engine's source (github.com/nstucki/Betti-Matching-3D) instead of by the engine itself.

For binary tiles the engine's matching follows exact rules in its own cell order (axis 0 slowest, C order;
edges ``e = 3v + t`` with ``t`` = +axis0, +axis1, +axis2; squares ``s = 3v + t`` spanning (1, 2), (0, 2), (0, 1)):

* ``m_0``: a union-find starting from the 6-connected components of ``U = X | Y``; the edges with an endpoint
  outside ``U`` are added in index order, and a merge of two sets that both hold X and Y voxels is a match.
* ``m_2``: per side, the enclosed 26-connected background components keyed by the largest 2×2×2 cube index of their
  voxels outside ``U``; ``m_2`` = the number of keys both sides share.
* ``m_1``: squares in comparison order ``(g, s)`` (``g = 0`` when all four voxels are in ``U``). A square counts when
  ``g = 1``, it kills a tunnel in the comparison (not a cavity-closing square of the dual union-find), and its
  boundary relative to X and relative to Y reduces to zero against the earlier squares (two Z/2 column reductions).

The kernels are compiled by numba (cached on disk, see :mod:`nnunetv2_topo.metrics.jit_cache`) and release the
GIL, so tiles run in parallel threads. The m_1 reductions count their steps (entries pushed onto the working
column) and stop past a bound; the caller then asks the engine, so every answer stays exact.
"""

from __future__ import annotations

import cc3d
import numpy as np

from nnunetv2_topo.metrics.jit_cache import configure_numba_cache

configure_numba_cache()

from numba import njit  # noqa: E402  (the cache folder must be set before numba reads its configuration)

MAX_INDEX = 2**31 - 1
"""Edge and square indices are stored as int32: tiles up to 715 million voxels."""


@njit(cache=True, nogil=True)
def _find(parent, a):
    root = a
    while parent[root] != root:
        root = parent[root]
    while parent[a] != root:
        nxt = parent[a]
        parent[a] = root
        a = nxt
    return root


@njit(cache=True, nogil=True, inline="always")
def _edge_end(v, i, j, k, t, n0, n1, n2):
    """The far voxel of edge ``3v + t`` (one step along axis ``t``), or -1 past the tile's end."""
    if t == 0:
        return v + n1 * n2 if i + 1 < n0 else -1
    if t == 1:
        return v + n2 if j + 1 < n1 else -1
    return v + 1 if k + 1 < n2 else -1


@njit(cache=True, nogil=True)
def matched_components(x, y, n0, n1, n2):
    """``m_0`` of flat uint8 masks ``x``, ``y`` of shape ``(n0, n1, n2)``."""
    n = n0 * n1 * n2
    parent = np.arange(n).astype(np.int32)
    flags = np.empty(n, np.uint8)  # bit 0: set holds X, bit 1: set holds Y (valid at roots)
    for v in range(n):
        flags[v] = x[v] | (y[v] << 1)
    # the components of U (edges with both endpoints in U come first in the comparison)
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                v = (i * n1 + j) * n2 + k
                if flags[v] == 0:
                    continue
                for t in range(3):
                    w = _edge_end(v, i, j, k, t, n0, n1, n2)
                    if w < 0:
                        continue
                    if x[w] | y[w]:
                        ra = _find(parent, v)
                        rb = _find(parent, w)
                        if ra != rb:
                            parent[rb] = ra
                            flags[ra] |= flags[rb]
    matched = 0
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                v = (i * n1 + j) * n2 + k
                uv = x[v] | y[v]
                for t in range(3):
                    w = _edge_end(v, i, j, k, t, n0, n1, n2)
                    if w < 0:
                        continue
                    if uv and (x[w] | y[w]):
                        continue
                    ra = _find(parent, v)
                    rb = _find(parent, w)
                    if ra != rb:
                        if flags[ra] == 3 and flags[rb] == 3:
                            matched += 1
                        parent[rb] = ra
                        flags[ra] |= flags[rb]
    return matched


@njit(cache=True, nogil=True)
def cavity_keys(labels, u, n0, n1, n2, n_labels):
    """Sorted keys ``μ(P)`` of the enclosed components ``P`` labelled in ``labels`` (flat, 0 = none)."""
    mu = np.full(n_labels + 1, -1, np.int64)
    border = np.zeros(n_labels + 1, np.bool_)
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                v = (i * n1 + j) * n2 + k
                lab = labels[v]
                if lab == 0:
                    continue
                if i == 0 or j == 0 or k == 0 or i == n0 - 1 or j == n1 - 1 or k == n2 - 1:
                    border[lab] = True
                if u[v] == 0:
                    key = (min(i, n0 - 2) * (n1 - 1) + min(j, n1 - 2)) * (n2 - 1) + min(k, n2 - 2)
                    if key > mu[lab]:
                        mu[lab] = key
    out = np.empty(n_labels, np.int64)
    m = 0
    for lab in range(1, n_labels + 1):
        if not border[lab] and mu[lab] >= 0:
            out[m] = mu[lab]
            m += 1
    return np.sort(out[:m])


SKIP = 2
"""Square level code: the square does not exist or closes a cavity of the comparison (never a column)."""


@njit(cache=True, nogil=True)
def square_levels(u, n0, n1, n2):
    """uint8 per square index: its comparison value ``g`` (0 when all four voxels are in U, else 1), or
    :data:`SKIP` where the square does not exist."""
    s0 = n1 * n2
    levels = np.full(3 * n0 * n1 * n2, SKIP, np.uint8)
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                v = (i * n1 + j) * n2 + k
                if j + 1 < n1 and k + 1 < n2:
                    levels[3 * v] = 0 if (u[v] and u[v + n2] and u[v + 1] and u[v + n2 + 1]) else 1
                if i + 1 < n0 and k + 1 < n2:
                    levels[3 * v + 1] = 0 if (u[v] and u[v + s0] and u[v + 1] and u[v + s0 + 1]) else 1
                if i + 1 < n0 and j + 1 < n1:
                    levels[3 * v + 2] = 0 if (u[v] and u[v + s0] and u[v + n2] and u[v + s0 + n2]) else 1
    return levels


@njit(cache=True, nogil=True)
def _find_halving(parent, a):
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@njit(cache=True, nogil=True)
def skip_cavity_squares(levels, n0, n1, n2):
    """Set :data:`SKIP` on every square that closes a cavity of the comparison: in reverse comparison order each
    square joins its two cofaces (cubes by their lowest voxel, or the outside), and a join of two different sets
    closes a cavity. Returns how many squares were marked."""
    n = n0 * n1 * n2
    s0 = n1 * n2
    parent = np.arange(n + 1).astype(np.int32)
    rank = np.zeros(n + 1, np.uint8)
    outside = n
    marked = 0
    for level in range(1, -1, -1):
        for s in range(3 * n - 1, -1, -1):
            if levels[s] != level:
                continue
            v = s // 3
            t = s - 3 * v
            if t == 0:
                i = v // s0
                a = v - s0 if i >= 1 else outside
                b = v if i + 1 < n0 else outside
            elif t == 1:
                j = (v // n2) % n1
                a = v - n2 if j >= 1 else outside
                b = v if j + 1 < n1 else outside
            else:
                k = v % n2
                a = v - 1 if k >= 1 else outside
                b = v if k + 1 < n2 else outside
            ra = _find_halving(parent, a)
            rb = _find_halving(parent, b)
            if ra != rb:
                levels[s] = SKIP
                marked += 1
                if rank[ra] < rank[rb]:
                    ra, rb = rb, ra
                parent[rb] = ra
                if rank[ra] == rank[rb]:
                    rank[ra] += 1
    return marked


@njit(cache=True, nogil=True)
def _relative_boundary(f, s, s0, n2, out):
    """Boundary edges of square ``s`` not inside ``F`` (both endpoints in F), written to ``out``; returns count."""
    v = s // 3
    t = s - 3 * v
    if t == 0:
        e0, e1, e2, e3 = 3 * v + 1, 3 * v + 2, 3 * (v + n2) + 2, 3 * (v + 1) + 1
    elif t == 1:
        e0, e1, e2, e3 = 3 * v, 3 * v + 2, 3 * (v + 1), 3 * (v + s0) + 2
    else:
        e0, e1, e2, e3 = 3 * v, 3 * v + 1, 3 * (v + n2), 3 * (v + s0) + 1
    m = 0
    for e in (e0, e1, e2, e3):
        w = e // 3
        d = e - 3 * w
        other = w + (s0 if d == 0 else (n2 if d == 1 else 1))
        if not (f[w] and f[other]):
            out[m] = e
            m += 1
    return m


@njit(cache=True, nogil=True)
def _push(heap, size, value):
    if size == heap.shape[0]:
        bigger = np.empty(2 * heap.shape[0], heap.dtype)
        bigger[:size] = heap[:size]
        heap = bigger
    i = size
    heap[i] = value
    while i > 0:
        parent = (i - 1) >> 1
        if heap[parent] >= heap[i]:
            break
        heap[parent], heap[i] = heap[i], heap[parent]
        i = parent
    return heap, size + 1


@njit(cache=True, nogil=True)
def _pop(heap, size):
    top = heap[0]
    size -= 1
    heap[0] = heap[size]
    i = 0
    while True:
        left = 2 * i + 1
        if left >= size:
            break
        big = left
        if left + 1 < size and heap[left + 1] > heap[left]:
            big = left + 1
        if heap[i] >= heap[big]:
            break
        heap[i], heap[big] = heap[big], heap[i]
        i = big
    return top, size


@njit(cache=True, nogil=True)
def _pop_pivot(heap, size):
    """Largest entry present an odd number of times (Z/2), popping everything up to it; -1 when empty."""
    while size > 0:
        top, size = _pop(heap, size)
        count = 1
        while size > 0 and heap[0] == top:
            _, size = _pop(heap, size)
            count += 1
        if count & 1:
            return top, size
    return -1, size


@njit(cache=True, nogil=True)
def relative_reduction(f, levels, zero, bit, n0, n1, n2, max_steps, max_stored):
    """Reduce the boundaries relative to ``F`` of all columns (``levels`` 0 or 1) in comparison order; set ``bit``
    in ``zero[s]`` for every square with ``g = 1`` whose relative boundary reduces to zero.

    Returns the number of steps (entries of earlier columns added to a working column), or -1 once ``max_steps``
    steps are exceeded or the stored columns or the working column hold more than ``max_stored`` entries (``zero``
    is then incomplete).
    """
    n = n0 * n1 * n2
    s0 = n1 * n2
    pivot_owner = np.full(3 * n, -1, np.int32)  # >= 0: square whose relative boundary is stored as is
    pool = np.empty(1024, np.int32)  # columns changed by reduction, pivot first, descending
    pool_len = 0
    col_start = np.empty(256, np.int64)
    n_cols = 0
    heap = np.empty(64, np.int64)
    buf = np.empty(4, np.int64)
    buf2 = np.empty(4, np.int64)
    steps = 0
    for level in range(2):
        for s in range(3 * n):
            if levels[s] != level:
                continue
            m = _relative_boundary(f, s, s0, n2, buf)
            if m == 0:
                if level == 1:
                    zero[s] |= bit
                continue
            top = buf[0]
            for q in range(1, m):
                if buf[q] > top:
                    top = buf[q]
            if pivot_owner[top] == -1:  # emergent: the column stays as it is
                pivot_owner[top] = s
                continue
            size = 0
            for q in range(m):
                heap, size = _push(heap, size, buf[q])
            changed = False
            while True:
                p, size = _pop_pivot(heap, size)
                if p < 0:
                    if level == 1:
                        zero[s] |= bit
                    break
                owner = pivot_owner[p]
                if owner == -1:
                    if not changed:
                        pivot_owner[p] = s
                        size = 0
                    else:
                        if n_cols == col_start.shape[0]:
                            bigger = np.empty(2 * n_cols, np.int64)
                            bigger[:n_cols] = col_start
                            col_start = bigger
                        col_start[n_cols] = pool_len
                        q = p
                        while q >= 0:
                            if pool_len == pool.shape[0]:
                                grown = np.empty(2 * pool_len, np.int32)
                                grown[:pool_len] = pool
                                pool = grown
                            pool[pool_len] = q
                            pool_len += 1
                            q, size = _pop_pivot(heap, size)
                        pivot_owner[p] = -2 - n_cols
                        n_cols += 1
                        if pool_len > max_stored:
                            return -1
                    break
                changed = True
                if owner >= 0:
                    m2 = _relative_boundary(f, owner, s0, n2, buf2)
                    for q in range(m2):
                        if buf2[q] != p:
                            heap, size = _push(heap, size, buf2[q])
                    steps += m2 - 1
                else:
                    c = -2 - owner
                    start = col_start[c]
                    stop = col_start[c + 1] if c + 1 < n_cols else pool_len
                    for q in range(start + 1, stop):
                        heap, size = _push(heap, size, pool[q])
                    steps += stop - start - 1
                if steps > max_steps or size > max_stored:
                    return -1
    return steps


@njit(cache=True, nogil=True)
def _count_both(zero, bits):
    c = 0
    for s in range(zero.shape[0]):
        if zero[s] == bits:
            c += 1
    return c


def matched_tunnels(x: np.ndarray, y: np.ndarray, max_steps: int, max_stored: int) -> tuple[int, int]:
    """``(m_1, steps)`` of flat uint8 masks of shape ``x.shape``; ``m_1 = -1`` when a bound was exceeded."""
    n0, n1, n2 = x.shape
    xf, yf = x.ravel(), y.ravel()
    levels = square_levels(xf | yf, n0, n1, n2)
    skip_cavity_squares(levels, n0, n1, n2)
    zero = np.zeros(3 * x.size, np.uint8)
    steps_x = relative_reduction(xf, levels, zero, 1, n0, n1, n2, max_steps, max_stored)
    if steps_x < 0:
        return -1, max_steps
    steps_y = relative_reduction(yf, levels, zero, 2, n0, n1, n2, max_steps - steps_x, max_stored)
    if steps_y < 0:
        return -1, max_steps
    return int(_count_both(zero, 3)), int(steps_x + steps_y)


def matched_cavities(x: np.ndarray, y: np.ndarray) -> int:
    """``m_2`` of two uint8 masks (0 when an axis has length 1: the engine then skips dimension 2)."""
    n0, n1, n2 = x.shape
    if min(x.shape) < 3:  # every voxel lies on the border: nothing is enclosed
        return 0
    u = (x | y).ravel()
    keys = []
    for side in (x, y):
        labels, n_labels = cc3d.connected_components(side == 0, connectivity=26, return_N=True)
        keys.append(cavity_keys(labels.ravel(), u, n0, n1, n2, int(n_labels)))
    return int(np.intersect1d(keys[0], keys[1], assume_unique=True).size)


def rules_matched(pred: np.ndarray, gt: np.ndarray, max_steps: int, max_stored: int) -> tuple[np.ndarray | None, int]:
    """``([m_0, m_1, m_2], m_1 steps)`` of two boolean tiles, or ``(None, steps)`` when the m_1 reduction went past
    ``max_steps`` steps or ``max_stored`` stored entries (then only the engine can answer)."""
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"rules_matched needs two 3-D tiles of equal shape, got {pred.shape} and {gt.shape}")
    if 3 * pred.size > MAX_INDEX:
        return None, 0
    x = np.ascontiguousarray(pred, dtype=bool).view(np.uint8)
    y = np.ascontiguousarray(gt, dtype=bool).view(np.uint8)
    m1, steps = matched_tunnels(x, y, max_steps, max_stored)
    if m1 < 0:
        return None, steps
    m0 = matched_components(x.ravel(), y.ravel(), *x.shape)
    m2 = matched_cavities(x, y)
    return np.array([m0, m1, m2], dtype=np.int64), steps
