"""The trainer's DDP collectives on two CPU processes (gloo): term means reduced over ranks, the step-skip decision
identical on every rank, rank 0's scoring rounds broadcast to all. (nnU-Net's DDP itself needs CUDA; these are the
trainer's own collectives.)"""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nnunetv2_topo.trainers import nnUNetTrainerTopoWarmup

pytestmark = pytest.mark.e2e  # starts a two-process gloo group

RECORDS = {
    0: [{"dice": 1.0, "focal": math.nan, "total": 9.0}, {"dice": 3.0, "focal": 2.0}],
    1: [{"dice": 5.0, "focal": 4.0}],
}


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        fake = SimpleNamespace(is_ddp=True, device=torch.device("cpu"), active_terms=("dice", "focal", "boundary"))
        fake._all_ranks = lambda flag: nnUNetTrainerTopoWarmup._all_ranks(fake, flag)
        means = nnUNetTrainerTopoWarmup._reduce_term_means(fake, RECORDS[rank])
        result = {
            "means": means,
            # the loss is non-finite on rank 1 only, the gradient norm (all-reduced by DDP) is the same everywhere
            "skip_when_one_rank_nan": nnUNetTrainerTopoWarmup._update_allowed(fake, math.nan if rank else 0.5, 1.0),
            "all_finite": nnUNetTrainerTopoWarmup._update_allowed(fake, 0.5, 1.0),
            "nan_norm": nnUNetTrainerTopoWarmup._update_allowed(fake, 0.5, math.nan),
            # a scoring round finished on rank 0 only (the others have none): every rank applies rank 0's records
            "score_records": nnUNetTrainerTopoWarmup._from_rank0(
                fake, [{"epoch": 4, "score": 0.5}] if rank == 0 else []
            ),
        }
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_collectives_agree_on_every_rank(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert results[0] == results[1]
    means = results[0]["means"]
    assert means["dice"] == 3.0  # (1 + 3 + 5) / 3 over both ranks
    assert means["focal"] == 3.0  # the NaN is left out: (2 + 4) / 2
    assert means["boundary"] is None or math.isnan(means["boundary"])  # never computed
    assert results[0]["skip_when_one_rank_nan"] is False
    assert results[0]["all_finite"] is True
    assert results[0]["nan_norm"] is False
    assert results[1]["score_records"] == [{"epoch": 4, "score": 0.5}]
