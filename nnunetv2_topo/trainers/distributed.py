"""The trainers' own collectives (nnU-Net's DDP is ``torch.distributed``): each is a no-op without a process group
and, under DDP, must be called by every rank in the same order.

nnU-Net decides DDP by ``dist.is_available() and dist.is_initialized()``; so do these helpers, so they can be used
(and tested) without a trainer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import torch
from torch import distributed as dist

from nnunetv2_topo.losses.compound import TermValues

__all__ = [
    "all_ranks",
    "all_ranks_tensor",
    "ddp_active",
    "from_rank0",
    "gather_objects",
    "process_group_timeout",
    "rank_and_world",
    "reduce_term_means",
    "wait_on_every_rank",
]


def ddp_active() -> bool:
    """A default process group exists (nnU-Net's ``is_ddp``)."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` without a process group."""
    if not ddp_active():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _device() -> torch.device:
    """The device of the default group's tensors (CUDA under NCCL, the CPU under gloo)."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_ranks(flag: bool) -> bool:
    """True when ``flag`` holds on every rank (one tiny all-reduce under DDP)."""
    if not ddp_active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def all_ranks_tensor(flag: torch.Tensor) -> torch.Tensor:
    """:func:`all_ranks` for a 0/1 float tensor on the group's device, without reading it on the host: the minimum
    over the ranks, still on the device (``flag`` itself without DDP)."""
    if not ddp_active():
        return flag
    out = flag.reshape(1).to(_device(), copy=True)
    dist.all_reduce(out, op=dist.ReduceOp.MIN)
    return out.reshape(()).to(flag.device)


def reduce_term_means(records: Sequence[Mapping[str, float]], terms: Sequence[str]) -> dict[str, float]:
    """Mean of each of ``terms`` over the finite values of all ranks' ``records`` (NaN for a term never finite).
    Records still on the device (``TermValues``) are read with one transfer."""
    records = TermValues.read_all(records)
    sums = np.zeros(len(terms), dtype=np.float64)
    counts = np.zeros(len(terms), dtype=np.float64)
    for rec in records:
        for i, term in enumerate(terms):
            v = rec.get(term)
            if v is not None and math.isfinite(v):
                sums[i] += v
                counts[i] += 1
    if ddp_active():
        t = torch.tensor(np.concatenate([sums, counts]), device=_device(), dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        both = t.cpu().numpy()
        sums, counts = both[: len(terms)], both[len(terms) :]
    return {t: (float(s / c) if c > 0 else math.nan) for t, s, c in zip(terms, sums, counts)}


def from_rank0(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ddp_active():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` without DDP)."""
    if not ddp_active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def process_group_timeout() -> float | None:
    """Seconds a collective of the default group may wait before the job is killed (None without DDP)."""
    if not ddp_active():
        return None
    from torch.distributed import distributed_c10d as c10d  # a torch built without distributed has no c10d

    group: Any = c10d._get_default_group()  # the getters below try the APIs of several torch versions
    timeout: Any = None
    for getter in (
        lambda: group._get_backend(torch.device("cpu")).options._timeout,
        lambda: group._get_backend(torch.device("cuda")).options._timeout,
        lambda: group.options._timeout,
        lambda: c10d._get_default_timeout(dist.get_backend()),
    ):
        try:
            timeout = getter()
        except Exception:  # noqa: BLE001, S112 (private API differs between backends and versions)
            continue
        if timeout is not None:
            break
    if isinstance(timeout, timedelta):
        return timeout.total_seconds()
    return float(timeout) if timeout is not None else None


def wait_on_every_rank(ready: Callable[[], bool], poll_seconds: float = 0.5) -> None:
    """Return once ``ready()`` is true on every rank, without any rank blocking inside a collective: each rank
    polls its own ``ready`` and all join a tiny all-reduce every ``poll_seconds`` (so no collective waits longer
    than one poll plus the slowest rank's ``ready`` call)."""
    while not all_ranks(ready()):
        time.sleep(poll_seconds)
