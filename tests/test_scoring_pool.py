"""The background scoring process of a training rank (:mod:`nnunetv2_topo.evaluation.scoring_pool`): light (no torch,
no trainer), a deadline on every case, killed at shutdown instead of awaited, and gone when its trainer dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from score_metrics import hang_on_hang

from nnunetv2_topo.evaluation import scoring_pool
from nnunetv2_topo.evaluation.score_worker import worker_report
from nnunetv2_topo.evaluation.scoring_pool import (
    THREAD_ENV_VARS,
    CaseTimeoutError,
    ScoringPool,
    ScoringWorkerError,
    threads_per_rank,
)

TESTS = Path(__file__).resolve().parent
SEG = np.zeros((2, 2, 2), np.uint8)


def _gone(pid: int, within: float = 10.0) -> bool:
    """The process ended (a zombie nobody reaps counts as ended)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_threads_per_rank_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scoring_pool, "cpu_cores", lambda: 16)
    assert [threads_per_rank(w) for w in (1, 8, 32)] == [16, 2, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a smaller setting of the user's is kept
    monkeypatch.setenv("MKL_NUM_THREADS", "64")
    env = scoring_pool._worker_env(2)
    assert {v: env[v] for v in THREAD_ENV_VARS} == {
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "NUMBA_NUM_THREADS": "2",
    }  # fmt: skip


def test_bad_timeout() -> None:
    with pytest.raises(ValueError, match="timeout_s must be a positive number"):
        ScoringPool(timeout_s=0)


@pytest.mark.e2e
def test_the_worker_imports_neither_torch_nor_the_trainer() -> None:
    import torch  # noqa: F401 (the parent has torch loaded, as a trainer has)

    pool = ScoringPool(threads=1)
    try:
        report = pool.call(worker_report).result(timeout=120)  # after the warm-up: the metric is loaded
    finally:
        pool.shutdown()
    modules = set(report["modules"])
    assert "nnunetv2_topo.metrics.leaderboard" in modules  # the warm-up ran the metric
    heavy = {m for m in modules if m.split(".")[0] in ("torch", "matplotlib", "nnunetv2_topo.trainers")}
    assert not heavy and not {m for m in modules if m.startswith(("nnunetv2.training", "nnunetv2_topo.trainers"))}
    assert report["max_rss_mb"] < 300, report["max_rss_mb"]
    assert report["parent_pid"] == os.getpid()
    assert set(report["threads"].values()) == {"1"}


@pytest.mark.e2e
def test_a_case_past_its_deadline_fails_and_a_new_worker_scores_the_next() -> None:
    pool = ScoringPool(metric=hang_on_hang, timeout_s=1.0, poll_seconds=0.05)
    try:
        wedged = pool.submit(SEG, "hang", object, case="hang")
        queued = pool.submit(SEG, "case_a", object, case="case_a")
        first_pid = pool.pid
        with pytest.raises(CaseTimeoutError, match=r"case hang ran past its deadline \(score_case_timeout_s = 1 s\)"):
            wedged.result(timeout=60)
        with pytest.raises(ScoringWorkerError, match="case case_a: not scored"):
            queued.result(timeout=10)
        assert _gone(first_pid)
        assert pool.submit(SEG, "case_b", object, case="case_b").result(timeout=60)["score"] == pytest.approx(0.2)
        assert pool.workers_started == 2 and pool.pid != first_pid
    finally:
        pool.shutdown()


@pytest.mark.e2e
def test_shutdown_kills_the_running_case_instead_of_waiting() -> None:
    pool = ScoringPool(metric=hang_on_hang, timeout_s=None)
    future = pool.submit(SEG, "hang", object, case="hang")
    pid = pool.pid
    pool.shutdown()
    assert _gone(pid, within=0.0) or _gone(pid, within=2.0)
    with pytest.raises(ScoringWorkerError, match="stopped"):
        future.result(timeout=1)


TRAINER = """
import sys, time
sys.path.insert(0, {tests!r})
from score_metrics import hang_on_hang
from nnunetv2_topo.evaluation.scoring_pool import ScoringPool
pool = ScoringPool(metric=hang_on_hang, timeout_s=None)
future = pool.submit(None, "hang", object, case="hang")
print(pool.pid, flush=True)
time.sleep(0.5)  # the case is running
if {mode!r} == "exit":
    sys.exit(0)  # an exception ends a rank the same way: no shutdown() call
time.sleep(3600)
"""


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["SIGKILL", "SIGTERM", "exit"])
def test_the_worker_dies_with_its_trainer(mode: str) -> None:
    """A rank killed by the OOM killer (SIGKILL), by mp.spawn after another rank failed (SIGTERM), or ending on an
    exception leaves no scoring process behind, even in the middle of a case that never finishes."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    trainer = subprocess.Popen(
        [sys.executable, "-c", TRAINER.format(tests=str(TESTS), mode=mode)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        worker = int(trainer.stdout.readline())
        assert psutil.Process(worker).ppid() == trainer.pid
        if mode != "exit":
            time.sleep(0.5)
            trainer.send_signal(getattr(signal, mode))
        trainer.wait(timeout=30)  # exiting does not wait for the running case
        assert _gone(worker), f"the scoring process {worker} outlived its trainer ({mode})"
    finally:
        if trainer.poll() is None:
            trainer.kill()
