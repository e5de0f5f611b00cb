"""Threads for the rules tiles: the compiled kernels release the GIL, so tiles run in parallel in one process.

One rules tile needs ~0.2 GB at 160³ (against ~4.6 GB in the engine), so these workers are capped by cores only.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import threading

from nnunetv2_topo.machine import cpu_cores

_THREADS: dict[int, cf.ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def auto_threads(n_tasks: int) -> int:
    """Rules threads for ``n_tasks`` tiles: CPU cores, at most one per tile, at least 1."""
    return max(1, min(cpu_cores(), n_tasks))


def shared_threads(workers: int) -> cf.ThreadPoolExecutor:
    """A process-wide pool of ``workers`` rules threads, created on first use and reused."""
    if workers < 1:
        raise ValueError(f"a rules thread pool needs at least 1 thread, got {workers}")
    with _LOCK:
        pool = _THREADS.get(workers)
        if pool is None:
            pool = _THREADS[workers] = cf.ThreadPoolExecutor(workers, thread_name_prefix="betti-rules")
        return pool


@atexit.register
def shutdown_threads() -> None:
    """Stop the shared rules threads (also run at interpreter exit)."""
    with _LOCK:
        while _THREADS:
            _, pool = _THREADS.popitem()
            pool.shutdown(wait=True, cancel_futures=True)
