"""The background scoring process of a training rank (``score_every_epochs``): what runs *inside* it.

It is started by :class:`nnunetv2_topo.evaluation.scoring_pool.ScoringPool` as ``python -c`` with this module as its
entry, not through ``multiprocessing``'s spawn (which would import the trainer's ``__main__``, ``nnUNetv2_train``,
and with it torch and nnU-Net's trainer: ~10 s and ~1 GB per rank). It imports only numpy, the competition metric
and nnU-Net's image reader of the dataset. Nothing here imports torch.

The process dies with its parent: on Linux the kernel kills it when the thread that started it ends
(``PR_SET_PDEATHSIG``), elsewhere a watchdog thread polls ``getppid()``; an idle worker also ends when its task pipe
closes. SIGINT (Ctrl-C on the terminal) is left to the trainer, which ends the worker.

Protocol: the parent sends ``(task_id, pickled (function, args))`` and ``None`` to stop; the worker answers
``("start", task_id)`` before it calls the function and ``("done", task_id, result)`` or ``("error", task_id,
"Type: message")`` after.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from nnunetv2_topo.metrics import leaderboard_score

__all__ = ["SCORE_LOG_KEYS", "die_with_parent", "main", "score_case", "warm_up", "worker_report"]

SCORE_LOG_KEYS: dict[str, str] = {
    "val_score": "score",
    "val_score_topo": "topo",
    "val_score_surface_dice": "surface_dice",
    "val_score_voi": "voi_score",
}
"""Logger key -> field of ``leaderboard_score``'s result (mean over the round's cases)."""

PR_SET_PDEATHSIG = 1
PARENT_POLL_SECONDS = 1.0


def score_case(segmentation: np.ndarray, gt_file: str, reader_class: type) -> dict[str, float]:
    """Score one predicted segmentation against the ground truth in ``gt_file`` (read with nnU-Net's
    ``reader_class``); runs in the background process. Returns the fields of :data:`SCORE_LOG_KEYS` and
    ``seconds`` (the metric's wall time)."""
    gt, _ = reader_class().read_seg(gt_file)
    t0 = time.perf_counter()
    result = leaderboard_score(np.asarray(segmentation), np.asarray(gt)[0], workers=0)
    out = {field_: float(result[field_]) for field_ in SCORE_LOG_KEYS.values()}
    out["seconds"] = time.perf_counter() - t0
    return out


def warm_up() -> None:
    """Import the metric and run it once on a tiny pair (loads the compiled kernels from the numba cache)."""
    pair = np.zeros((8, 8, 8), dtype=np.uint8)
    pair[3:5] = 1
    leaderboard_score(pair, pair, workers=0)


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MB since it started its program (``VmHWM``; Linux only:
    ``ru_maxrss`` would count the trainer's memory at the fork)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def worker_report() -> dict[str, Any]:
    """What this process has imported and holds: ``{"modules": sorted names, "max_rss_mb": peak resident MB,
    "pid", "parent_pid", "threads": the thread-pool variables}`` (for the tests and ``benchmarks/score_worker.py``)."""
    threads = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return {
        "modules": sorted(sys.modules),
        "max_rss_mb": peak_rss_mb(),
        "pid": os.getpid(),
        "parent_pid": os.getppid(),
        "threads": {**threads, "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS")},
    }


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(0)


def die_with_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` ends (SIGKILL, OOM killer, SIGTERM, a crash included)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # no prctl: the watchdog thread alone
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watchdog", daemon=True).start()


def serve(tasks: Any, results: Any) -> None:
    """Run tasks from the ``tasks`` connection until ``None`` or the pipe closes."""
    while True:
        try:
            message = tasks.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        task_id, payload = message
        results.send(("start", task_id))
        try:
            function, args = pickle.loads(payload)
            reply: tuple = ("done", task_id, function(*args))
        except BaseException as exc:  # noqa: BLE001 (any failure is this case's result)
            reply = ("error", task_id, f"{type(exc).__name__}: {exc}")
        try:
            results.send(reply)
        except (BrokenPipeError, OSError):
            return


def main(argv: list[str]) -> int:
    """``TASK_FD RESULT_FD PARENT_PID``: serve the parent's tasks."""
    task_fd, result_fd, parent_pid = (int(a) for a in argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)
    serve(Connection(task_fd, writable=False), Connection(result_fd, readable=False))
    return 0
