"""Where the chunks run: in this process, on a ``distributed`` LocalCluster (``--dask local:N``) or on an existing
Dask cluster (``--dask tcp://HOST:PORT``). Each worker process loads the models once (:func:`engine_for`) and keeps
them, its input-chunk cache and its tile cache across the work units it is given.
"""

from __future__ import annotations

import os
import re
import resource
import sys
import time
from dataclasses import dataclass

from nnunetv2_topo.volume.grid import Box

_ENGINES: dict[str, object] = {}


class ClusterError(ValueError):
    """A ``--dask`` value that cannot be used; the message names it and the accepted forms."""


@dataclass(frozen=True)
class DaskTarget:
    workers: int | None  # local:N
    address: str | None  # tcp://HOST:PORT


def parse_dask(text: str) -> DaskTarget:
    m = re.fullmatch(r"local:(\d+)", text)
    if m:
        n = int(m[1])
        if n < 1:
            raise ClusterError(f"--dask {text}: the number of workers must be >= 1")
        return DaskTarget(n, None)
    if re.fullmatch(r"(tcp|tls|ucx|inproc)://[^\s/]+", text):
        return DaskTarget(None, text)
    raise ClusterError(
        f"--dask {text!r}: expected local:N (a LocalCluster of N worker processes) or the address of "
        "a running scheduler, e.g. tcp://10.0.0.5:8786"
    )


def start_client(target: DaskTarget, torch_threads: int | None = None):
    """A ``distributed.Client``: a new LocalCluster (one thread per worker process) or the given scheduler."""
    from distributed import Client, LocalCluster

    if target.address is not None:
        try:
            return Client(target.address, timeout="20s")
        except OSError as exc:
            raise ClusterError(
                f"--dask {target.address}: no scheduler answers ({exc}); start one with "
                "'dask scheduler' and workers with 'dask worker ADDRESS --nthreads 1'"
            ) from None
    threads = torch_threads or max(1, (os.cpu_count() or 1) // target.workers)
    env = {"OMP_NUM_THREADS": str(threads), "NNUNETV2_TOPO_TORCH_THREADS": str(threads)}
    os.environ.update({k: v for k, v in env.items() if k not in os.environ})
    cluster = LocalCluster(
        n_workers=target.workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        memory_limit=0,
        silence_logs=40,
    )
    return Client(cluster)


def engine_for(run) -> object:
    """This process's :class:`~nnunetv2_topo.volume.run.Engine` for ``run`` (models loaded on first use)."""
    engine = _ENGINES.get(run.key)
    if engine is None:
        from nnunetv2_topo.volume.run import Engine

        _ENGINES.clear()  # one run per process at a time: free the previous run's models
        threads = os.environ.get("NNUNETV2_TOPO_TORCH_THREADS")
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        engine = _ENGINES[run.key] = Engine(run)
    return engine


def process_unit(run, boxes: list[Box], on_chunk=None) -> dict:
    """Predict and write the unfinished chunks of one work unit; returns its statistics."""
    t0 = time.monotonic()
    engine = engine_for(run)
    before = engine.counters()
    for box in boxes:
        engine.process(box)
        if on_chunk is not None:
            on_chunk()
    after = engine.counters()
    stats = {k: after[k] - before[k] for k in after}
    stats["seconds"] = time.monotonic() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stats["peak_rss_mb"] = rss / 1024 if sys.platform != "darwin" else rss / 2**20
    stats["pid"] = os.getpid()
    return stats
