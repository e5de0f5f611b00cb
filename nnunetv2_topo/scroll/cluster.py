"""Where the chunks run: in this process, on a ``distributed`` LocalCluster (``--dask local:N``) or on an existing
Dask cluster (``--dask tcp://HOST:PORT``). Each worker process loads the models once (:func:`loaded_models_for`)
and keeps them, its input-chunk cache and its tile cache across the work units it is given.

One set of loaded models per process, used by one unit at a time: the folds of a model share one network whose
weights each fold loads in turn, so two threads predicting at once would predict tiles with another fold's weights.
A worker started with ``--nthreads 2`` is therefore exact, but its threads take turns (start workers with
``--nthreads 1``).
``--dask local:N`` on CUDA gives each worker process its own GPU (``CUDA_VISIBLE_DEVICES``), and refuses N above the
number of GPUs.
"""

from __future__ import annotations

import os
import re
import resource
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.scroll.grid import Box
from nnunetv2_topo.scroll.loaded_models import LoadedModels

if TYPE_CHECKING:
    from nnunetv2_topo.scroll.writer import ChunkWriter


class UnitModels(Protocol):
    """What :func:`process_unit` uses of a process's loaded models (``LoadedModels`` of a run)."""

    writer: ChunkWriter

    def counters(self) -> dict: ...

    def begin_unit(self, boxes: Sequence[Box]) -> None: ...

    def process(self, box: Box, next_box: Box | None = None) -> None: ...


_LOADED_MODELS: dict[str, UnitModels] = {}
_MODELS_LOCK = threading.RLock()  # held while the models are loaded or used: one unit at a time per process


class ClusterError(TopoError, ValueError):
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


def worker_gpus(workers: int, device: str, count: int, visible: str | None) -> Sequence[str | None]:
    """``CUDA_VISIBLE_DEVICES`` for each of ``--dask local:N``'s workers: one GPU each on CUDA (from those this
    process sees: ``visible``, else ``0..count-1``); None for every worker on the CPU. N > GPUs is refused."""
    if device != "cuda":
        return [None] * workers
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else [str(i) for i in range(count)]
    ids = ids[:count] if count else ids
    if workers > len(ids):
        raise ClusterError(
            f"--dask local:{workers} on CUDA: {len(ids)} GPU(s) visible, and each worker needs its own (two "
            f"workers on one GPU share its memory and time); use --dask local:{max(len(ids), 1)}, or --device cpu"
        )
    return ids[:workers]


def start_client(target: DaskTarget, torch_threads: int | None = None, device: str = "cpu"):
    """A ``distributed.Client``: a new cluster of ``target.workers`` worker processes of one thread each (on CUDA
    each with its own GPU, see :func:`worker_gpus`), or the given scheduler."""
    from distributed import Client, Nanny, Scheduler, SpecCluster

    if target.address is not None:
        try:
            return Client(target.address, timeout="20s")
        except OSError as exc:
            raise ClusterError(
                f"--dask {target.address}: no scheduler answers ({exc}); start one with "
                "'dask scheduler' and workers with 'dask worker ADDRESS --nthreads 1' (on GPUs: 'dask cuda worker "
                "ADDRESS', one worker per GPU)"
            ) from None
    assert target.workers is not None  # local:N (a target is an address or a worker count)
    count = 0
    if device == "cuda":
        import torch

        count = torch.cuda.device_count()
    gpus = worker_gpus(target.workers, device, count, os.environ.get("CUDA_VISIBLE_DEVICES"))
    threads = torch_threads or max(1, (os.cpu_count() or 1) // target.workers)
    env = {"OMP_NUM_THREADS": str(threads), "NNUNETV2_TOPO_TORCH_THREADS": str(threads)}
    env = {k: os.environ.get(k, v) for k, v in env.items()}
    workers = {
        i: {
            "cls": Nanny,
            "options": {
                "nthreads": 1,
                "memory_limit": 0,
                "silence_logs": 40,
                "env": env if gpu is None else {**env, "CUDA_VISIBLE_DEVICES": gpu},
            },
        }
        for i, gpu in enumerate(gpus)
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    cluster = SpecCluster(workers=workers, scheduler=scheduler, silence_logs=40, name="nnunetv2_topo")
    return Client(cluster)


def close_client(client, spec: str) -> None:
    """Close a client of :func:`start_client`, and the local cluster it started for ``--dask local:N``."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None and spec.startswith("local:"):
        cluster.close()


def use_models(run, loaded: list) -> None:
    """Predict ``run`` in this process with the models already ``loaded`` (the driver's own, without Dask)."""
    with _MODELS_LOCK:
        _LOADED_MODELS.clear()
        _LOADED_MODELS[run.key] = LoadedModels(run, loaded)


def loaded_models_for(run) -> UnitModels:
    """This process's :class:`~nnunetv2_topo.scroll.loaded_models.LoadedModels` for ``run`` (models loaded on first
    use); call it holding ``_MODELS_LOCK``."""
    models = _LOADED_MODELS.get(run.key)
    if models is None:
        _LOADED_MODELS.clear()  # one run per process at a time: free the previous run's models
        threads = os.environ.get("NNUNETV2_TOPO_TORCH_THREADS")
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        models = _LOADED_MODELS[run.key] = LoadedModels(run)
    return models


def peak_rss_mb() -> float:
    """This process's peak resident memory: ``VmHWM`` on Linux (its own; ``ru_maxrss`` of a process started by
    fork + exec, as Dask's workers are, keeps the parent's peak when that is higher), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 2**20


def process_unit(run, boxes: list[Box], topic: str | None = None, on_chunk=None) -> dict:
    """Predict and write the chunks of one work unit that are not marked done yet (a unit retried after a lost
    worker skips what it finished); returns its statistics. Progress: ``on_chunk()`` here, or one event per chunk
    on ``topic`` for the client (see ``Client.subscribe_topic``)."""
    t0 = time.monotonic()
    report = on_chunk
    if topic is not None:
        from distributed import get_worker

        worker = get_worker()

        def report() -> None:
            worker.log_event(topic, 1)

    with _MODELS_LOCK:  # the folds share one network: one unit at a time per process
        models = loaded_models_for(run)
        before = models.counters()
        todo = [b for b in boxes if not models.writer.is_done(b)]
        for _ in range(len(boxes) - len(todo)):
            if report is not None:
                report()
        models.begin_unit(todo)
        for i, box in enumerate(todo):
            models.process(box, todo[i + 1] if i + 1 < len(todo) else None)
            if report is not None:
                report()
        after = models.counters()
    stats = {k: after[k] - before[k] for k in after}
    stats["seconds"] = time.monotonic() - t0
    stats["peak_rss_mb"] = peak_rss_mb()
    stats["pid"] = os.getpid()
    return stats
