"""The Betti-matching engine (Betti-Matching-3D, shipped inside the ``topolosses`` wheel) and worker pools for it.

The engine is loaded straight from its extension module, without importing ``topolosses`` (which would import
torch: ~1 GB of memory in every worker). It is called exactly like ``topolosses`` calls it: float64 C-contiguous
volumes, ``compute_matching(input1=prediction, input2=target)``.

The engine allocates ~1.1 kB per voxel (~4.6 GB for a 160³ tile) in many short-lived blocks; with glibc's default
malloc settings most of its time is spent in page faults. Worker processes therefore start with
``GLIBC_TUNABLES`` that back the heap with transparent huge pages and keep freed memory for reuse
(:data:`ENGINE_MALLOC_TUNABLES`); after each tile the worker hands its memory back with ``malloc_trim``.

Workers are spawned (whatever the caller's start method) all at once when the pool is made, with the caller's
``__main__`` hidden from them: a plain script without ``if __name__ == "__main__":`` is not re-run in every worker.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import contextlib
import ctypes
import glob
import importlib.machinery
import importlib.util
import multiprocessing
import os
import sys
import threading
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.machine import available_memory_bytes, cpu_cores  # noqa: F401 (re-exported)

ENGINE_MALLOC_TUNABLES = (
    "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=4294967296:"
    "glibc.malloc.trim_threshold=68719476736:glibc.malloc.top_pad=268435456"
)
"""glibc malloc settings for engine worker processes (must be in the environment when the process starts)."""

ENGINE_BYTES_PER_VOXEL = 1200
"""Measured peak memory of one engine call per tile voxel (4.6 GB at 160³), used to cap parallel workers."""


class EngineUnavailableError(TopoError, RuntimeError):
    """The Betti-matching engine from the ``topolosses`` wheel cannot be found or loaded."""


@lru_cache(maxsize=1)
def load_engine() -> ModuleType:
    """Load ``betti_matching`` (the compiled Betti-Matching-3D module bundled in ``topolosses``)."""
    spec = importlib.util.find_spec("topolosses")
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailableError(
            "the TopoScore needs the Betti-matching engine shipped in the 'topolosses' wheel: "
            "pip install topolosses==0.2.0 (wheels exist for CPython 3.10-3.12)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(glob.glob(str(root / "losses" / "betti_matching" / "src" / "betti_matching*.so")))
    if not found:
        raise EngineUnavailableError(
            f"no betti_matching*.so under {root}/losses/betti_matching/src; reinstall topolosses==0.2.0"
        )
    loader = importlib.machinery.ExtensionFileLoader("betti_matching", found[0])
    module_spec = importlib.util.spec_from_file_location("betti_matching", found[0], loader=loader)
    assert module_spec is not None, "a spec for an existing file with a loader"
    module = importlib.util.module_from_spec(module_spec)
    try:
        loader.exec_module(module)
    except ImportError as exc:
        raise EngineUnavailableError(f"cannot load the Betti-matching engine {found[0]}: {exc}") from exc
    return module


def _release_memory() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to hand back
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def engine_counts(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Betti matching of two binary tiles; returns int64 ``[[m, p, g] for k in 0, 1, 2]``.

    ``pred``/``gt`` are foreground masks; the engine sees the inverted volumes (foreground 0, background 1), so
    the sublevel filtration starts with the foreground (6-connected). ``m`` = matched pairs, ``p``/``g`` = all
    finite pairs of prediction/ground truth.
    """
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"engine_counts needs two 3-D tiles of equal shape, got {pred.shape} and {gt.shape}")
    engine = load_engine()
    a = np.ascontiguousarray(np.where(pred, 0.0, 1.0), dtype=np.float64)
    b = np.ascontiguousarray(np.where(gt, 0.0, 1.0), dtype=np.float64)
    result = engine.compute_matching(a, b)
    m = np.asarray(result.num_matched, dtype=np.int64)[:3]
    p = m + np.asarray(result.num_unmatched_input1, dtype=np.int64)[:3]
    g = m + np.asarray(result.num_unmatched_input2, dtype=np.int64)[:3]
    del result, a, b
    _release_memory()
    return np.stack([m, p, g], axis=1)


def _engine_counts_packed(shape: tuple[int, ...], pred_bits: bytes, gt_bits: bytes) -> np.ndarray:
    n = int(np.prod(shape))
    pred = np.unpackbits(np.frombuffer(pred_bits, np.uint8), count=n).reshape(shape).astype(bool)
    gt = np.unpackbits(np.frombuffer(gt_bits, np.uint8), count=n).reshape(shape).astype(bool)
    return engine_counts(pred, gt)


def submit_tile(executor: cf.Executor | None, pred: np.ndarray, gt: np.ndarray) -> cf.Future:
    """Run :func:`engine_counts` in ``executor`` (bit-packed transfer), or right here when it is ``None``."""
    if executor is None:
        future: cf.Future = cf.Future()
        try:
            future.set_result(engine_counts(pred, gt))
        except BaseException as exc:  # delivered through the future like a pool would
            future.set_exception(exc)
        return future
    return executor.submit(_engine_counts_packed, pred.shape, np.packbits(pred).tobytes(), np.packbits(gt).tobytes())


def _worker_init() -> None:
    load_engine()


_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def _spawn_environment() -> Iterator[None]:
    """While workers start: the engine's malloc tunables in the environment, and a bare ``__main__`` module.

    A spawned process re-imports the parent's ``__main__`` (by path or module name) before it runs anything; for a
    script without a ``__main__`` guard that re-runs the script, whose metric call then fails in every worker. With
    a module that has neither ``__file__`` nor ``__spec__`` in its place, multiprocessing passes no main module on.
    """
    with _ENV_LOCK:
        old_env = os.environ.get("GLIBC_TUNABLES")
        old_main = sys.modules.get("__main__")
        os.environ["GLIBC_TUNABLES"] = ENGINE_MALLOC_TUNABLES
        sys.modules["__main__"] = ModuleType("__main__")
        try:
            yield
        finally:
            if old_main is not None:
                sys.modules["__main__"] = old_main
            if old_env is None:
                del os.environ["GLIBC_TUNABLES"]
            else:
                os.environ["GLIBC_TUNABLES"] = old_env


def make_engine_pool(workers: int, initializer=None, initargs: tuple = ()) -> cf.ProcessPoolExecutor:
    """A pool of ``workers`` fresh (spawned) processes started with :data:`ENGINE_MALLOC_TUNABLES`."""
    if workers < 1:
        raise ValueError(f"an engine pool needs at least 1 worker, got {workers}")

    pool = cf.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_pool_initializer,
        initargs=(initializer, initargs),
    )
    # Spawned workers start at a submit that finds no idle worker, with the environment of that moment: start them
    # all now (each submit below starts one, synchronously), inside the prepared environment.
    with _spawn_environment():
        started = [pool.submit(int, 0) for _ in range(workers)]
    for future in started:
        future.result()
    return pool


def _pool_initializer(initializer, initargs: tuple) -> None:
    _worker_init()
    if initializer is not None:
        initializer(*initargs)


def auto_workers(n_tasks: int, tile_voxels: int) -> int:
    """Parallel engine workers for ``n_tasks`` tiles: CPU cores, capped by the memory one tile needs."""
    workers = max(1, min(cpu_cores(), n_tasks))
    avail = available_memory_bytes()
    if avail is not None and tile_voxels > 0:
        workers = max(1, min(workers, int(avail * 0.8) // (ENGINE_BYTES_PER_VOXEL * tile_voxels)))
    return workers


_POOLS: dict[int, cf.ProcessPoolExecutor] = {}


def shared_pool(workers: int) -> cf.ProcessPoolExecutor:
    """A process-wide engine pool of ``workers`` processes, created on first use and reused."""
    pool = _POOLS.get(workers)
    if pool is None:
        pool = _POOLS[workers] = make_engine_pool(workers)
    return pool


@atexit.register
def shutdown_pools() -> None:
    """Stop the shared engine pools (also run at interpreter exit)."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.shutdown(wait=True, cancel_futures=True)
