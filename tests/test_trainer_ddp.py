"""The trainer's DDP collectives on two CPU processes (gloo): term means reduced over ranks, the step-skip decision
identical on every rank, an object of rank 0 broadcast to all, and a scoring round with a metric far slower than the
process group's timeout that no rank waits for inside a collective. (nnU-Net's DDP itself needs CUDA; these are the
trainer's own collectives.)"""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nnunetv2_topo.losses import TermValues
from nnunetv2_topo.trainers.distributed import from_rank0, reduce_term_means
from nnunetv2_topo.trainers.guarded_step import GuardedStep

pytestmark = pytest.mark.e2e  # starts a two-process gloo group

RECORDS = {
    0: [{"dice": 1.0, "focal": math.nan, "total": 9.0}, {"dice": 3.0, "focal": 2.0}],
    1: [{"dice": 5.0, "focal": 4.0}],
}


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        means = reduce_term_means(RECORDS[rank], ("dice", "focal", "boundary"))
        result = {
            "means": means,
            # the loss is non-finite on rank 1 only, the gradient norm (all-reduced by DDP) is the same everywhere
            "skip_when_one_rank_nan": GuardedStep.update_allowed(math.nan if rank else 0.5, 1.0),
            "all_finite": GuardedStep.update_allowed(0.5, 1.0),
            "nan_norm": GuardedStep.update_allowed(0.5, math.nan),
            # an object of rank 0 only reaches every rank
            "score_records": from_rank0([{"epoch": 4, "score": 0.5}] if rank == 0 else []),
            # the real step: the verdict is all-reduced on the device and read once; rank 1's NaN loss skips both
            "step_skipped_everywhere": not _guarded_step(math.nan if rank else 1.0).stepped,
            # term values still on the device are read at the epoch's end
            "device_terms": reduce_term_means([TermValues(("dice",), torch.tensor([2.0 + rank]))], ("dice",)),
        }
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _guarded_step(scale: float):
    net = torch.nn.Linear(2, 1)
    loss = net(torch.ones(1, 2)).sum() * scale
    return GuardedStep(1.0, 5, 1).step(loss, net, torch.optim.SGD(net.parameters(), 0.1))


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
    assert results[0]["step_skipped_everywhere"] is True
    assert results[0]["device_terms"] == {"dice": 2.5}


# ---------------------------------------------------------------------- scoring rounds under a short timeout
PG_TIMEOUT_S = 3
# score_metrics.sleep_then_score sleeps 7.5 s per case: 2.5 x the timeout
CASES = ["case_a", "case_b", "case_c"]


def _fake_predict(cases: list[str]):
    import time

    import numpy as np

    for case in cases:
        time.sleep(0.2)
        yield np.zeros((4, 4, 4), dtype=np.uint8), case


def _score_worker(rank: int, port: int, out_dir: str) -> None:
    from datetime import timedelta

    import torch
    from score_metrics import sleep_then_score

    from nnunetv2_topo.evaluation.scoring_pool import ScoringPool
    from nnunetv2_topo.trainers.distributed import all_ranks, process_group_timeout
    from nnunetv2_topo.trainers.score_controller import ScoreRoundController

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
        timeout=timedelta(seconds=PG_TIMEOUT_S),
    )  # fmt: skip
    messages: list[str] = []
    controller = ScoreRoundController(
        1, log=lambda m, **_: messages.append(m), pool=ScoringPool(metric=sleep_then_score), poll_seconds=0.2
    )
    written: list[dict] = []
    try:
        started = controller.start(0, CASES, _fake_predict, object, snapshot=lambda: {"topo_state": {}})
        early = controller.collect(0, must_wait=False)  # still scoring: not applied, nobody blocks
        for _ in range(3):  # the next epoch's gradient all-reduces go on meanwhile
            t = torch.ones(4)
            dist.all_reduce(t)
        records = controller.collect(1, must_wait=True)  # the next round is due: every rank polls until done
        best = controller.accept(records[0], written.append if rank == 0 else None)
        # one case's prediction near the timeout: a warning, but every round still scores all its cases
        controller.seconds_per_case = 10.0
        controller.check_imbalance()
        # a case that never finishes on rank 0: killed at its deadline there, the round failed on every rank
        controller.pool.timeout_s = 1.0
        second = controller.start(1, ["hang", "case_x", "case_y"], _fake_predict, object)
        (failed,) = controller.collect(2, must_wait=True)
        not_compared = not controller.accept(failed) and controller.best_score == records[0]["score"]
        result = {
            "timeout": process_group_timeout(),
            "mine": started.cases,
            "early": early,
            "record": {k: v for k, v in records[0].items() if k not in ("wall_seconds", "predict_seconds")},
            "best": best,
            "written": [w["topo_state"]["score_rounds"]["best_score"] for w in written],
            "second": second.cases,
            "failed": failed["error"],
            "not_compared": not_compared,
            "warned": [m for m in messages if "near the process group's timeout" in m],
            "alive": all_ranks(True),
        }
        Path(out_dir, f"score{rank}.json").write_text(json.dumps(result))
    finally:
        controller.shutdown()
        dist.destroy_process_group()


@pytest.mark.e2e
def test_scoring_round_with_a_metric_slower_than_the_timeout_survives(tmp_path: Path) -> None:
    mp.spawn(_score_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"score{r}.json").read_text()) for r in (0, 1)]
    assert results[0]["timeout"] == PG_TIMEOUT_S
    assert results[0]["mine"] == ["case_a", "case_c"] and results[1]["mine"] == ["case_b"]  # sharded
    assert results[0]["early"] == [] and results[1]["early"] == []
    assert results[0]["record"] == results[1]["record"]  # every rank applies the same record
    record = results[0]["record"]
    assert record["error"] is None and record["num_cases"] == 3 and record["epoch"] == 0
    assert record["score"] == pytest.approx((0.1 + 0.2 + 0.3) / 3)
    assert results[0]["best"] and results[0]["written"] == [pytest.approx(0.2)] and results[1]["written"] == []
    assert results[0]["second"] == ["hang", "case_y"] and results[1]["second"] == ["case_x"]  # not capped
    assert results[0]["failed"] == results[1]["failed"] and "hang: CaseTimeoutError" in results[1]["failed"]
    assert results[0]["not_compared"] and results[1]["not_compared"]
    assert "a multiple of the number of GPUs" in results[0]["warned"][0] and len(results[1]["warned"]) == 1
    assert results[0]["alive"] and results[1]["alive"]
