"""One background scoring process per training rank, with a deadline on every case (``score_case_timeout_s``).

:class:`ScoringPool` starts :mod:`nnunetv2_topo.evaluation.score_worker` as a light process (numpy, the metric and
the image reader; no torch, no trainer) and hands it cases; each submission returns a
:class:`concurrent.futures.Future`. A reader thread in the trainer's process receives the results and watches the
deadline of the running case: a case that runs past it fails with :class:`CaseTimeoutError`, the worker is killed (the
cases queued behind it fail too) and the next submission starts a fresh one. :meth:`ScoringPool.shutdown` kills the
worker at once instead of waiting for its case; so does the end of the interpreter, and the worker ends by itself
when the trainer dies (see :mod:`~nnunetv2_topo.evaluation.score_worker`).

The worker is started from the thread that calls :meth:`~ScoringPool.start` or :meth:`~ScoringPool.submit` (the
trainer's main thread): on Linux it is tied to that thread's life.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import contextlib
import itertools
import json
import math
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Literal

import numpy as np

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.evaluation.score_worker import score_case, warm_up
from nnunetv2_topo.machine import cpu_cores

__all__ = [
    "DEFAULT_CASE_TIMEOUT_S",
    "THREAD_ENV_VARS",
    "CaseTimeoutError",
    "ScoringPool",
    "ScoringWorkerError",
    "threads_per_rank",
]

WARM_UP_TIMEOUT_S = 600.0
"""The least deadline of the warm-up (loading, or on a new installation compiling, the metric's kernels)."""

DEFAULT_CASE_TIMEOUT_S = 900.0
"""The default ``score_case_timeout_s``: many times the metric's time on a 320³ case on one CPU core (see
benchmarks/results/trainers-scoring-rounds.md), short enough that a wedged case costs one round, not the run."""

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
"""Thread-pool sizes of the worker's libraries, capped to :func:`threads_per_rank`."""

_BOOT = (
    "import sys, json; sys.path[:0] = json.loads(sys.argv[1]); from {module} import main; sys.exit(main(sys.argv[2:]))"
)
"""The worker's ``python -c`` program: the trainer's ``sys.path`` first, then only the worker module."""
_LIVE: weakref.WeakSet = weakref.WeakSet()


class CaseTimeoutError(TopoError, TimeoutError):
    """A case ran past ``score_case_timeout_s``; its worker was killed."""


class ScoringWorkerError(TopoError, RuntimeError):
    """The scoring process ended while cases were pending (out of memory, killed, stopped)."""


def threads_per_rank(world_size: int = 1) -> int:
    """This rank's share of the cores this process may use: ``cores // world_size``, at least 1."""
    return max(1, cpu_cores() // max(1, int(world_size)))


def _worker_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    if threads is not None:
        for var in THREAD_ENV_VARS:
            current = env.get(var, "")
            if not (current.isdigit() and 0 < int(current) <= threads):
                env[var] = str(threads)
    return env


class _Worker:
    """One worker process, its pipes, its pending futures and the two threads that feed and read it."""

    def __init__(self, threads: int | None, poll_seconds: float, module: str) -> None:
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        boot = _BOOT.format(module=module)
        argv = [sys.executable, "-c", boot, json.dumps(sys.path), str(task_r), str(result_w), str(os.getpid())]
        try:
            self.process = subprocess.Popen(
                argv, pass_fds=(task_r, result_w), env=_worker_env(threads), stdin=subprocess.DEVNULL
            )
        finally:
            os.close(task_r)
            os.close(result_w)
        self.tasks = Connection(task_w, readable=False)
        self.results = Connection(result_r, writable=False)
        self.poll_seconds = poll_seconds
        self.lock = threading.Lock()
        self.pending: dict[int, tuple[cf.Future, str, float | None]] = {}
        self.running: tuple[int, float] | None = None
        self.alive = True
        self.outbox: queue.Queue = queue.Queue()
        for target, name in ((self._feed, "scoring-feeder"), (self._read, "scoring-reader")):
            threading.Thread(target=target, name=name, daemon=True).start()

    def submit(self, task_id: int, payload: bytes, future: cf.Future, label: str, deadline: float | None) -> None:
        with self.lock:
            self.pending[task_id] = (future, label, deadline)
        self.outbox.put((task_id, payload))

    def _feed(self) -> None:
        """Send the queued cases (blocks while the worker is busy, never the training); closes the task pipe."""
        try:
            while (item := self.outbox.get()) is not None:
                self.tasks.send(item)
        except (OSError, ValueError):  # the worker is gone: the reader fails the pending cases
            pass
        finally:
            self.tasks.close()

    def _read(self) -> None:
        """Receive the results and watch the deadline; closes the result pipe (each pipe is closed by the one
        thread that uses it, so a new worker's pipe reusing the number is never read here)."""
        try:
            while self.alive:
                try:
                    message = self.results.recv() if self.results.poll(self.poll_seconds) else None
                except (EOFError, OSError):
                    self.stop(ScoringWorkerError, self._death_reason())
                    return
                if message is not None:
                    self._handle(message)
                elif self._past_deadline():
                    return
        finally:
            self.results.close()

    def _handle(self, message: tuple) -> None:
        kind, task_id = message[0], message[1]
        with self.lock:
            if kind == "start":
                self.running = (task_id, time.monotonic())
                return
            self.running = None
            entry = self.pending.pop(task_id, None)
        if entry is None or entry[0].done():
            return
        if kind == "done":
            entry[0].set_result(message[2])
        else:
            entry[0].set_exception(RuntimeError(message[2]))

    def _past_deadline(self) -> bool:
        with self.lock:
            running = self.running
            entry = self.pending.get(running[0]) if running is not None else None
        if running is None or entry is None or entry[2] is None or time.monotonic() - running[1] <= entry[2]:
            return False
        self.stop(
            CaseTimeoutError,
            f"{entry[1]} ran past its deadline (score_case_timeout_s = {entry[2]:g} s): the scoring process "
            "was killed and a new one scores the next round",
            first=running[0],
        )
        return True

    def _death_reason(self) -> str:
        code = self.process.poll()
        if code is None:
            try:
                code = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
        cause = " (killed: most likely out of memory; lower score_num_cases)" if code == -9 else ""
        return f"the scoring process ended with exit status {code}{cause}"

    def stop(self, error: type[Exception], reason: str, first: int | None = None) -> None:
        """Kill the process now; the case ``first`` fails with ``error(reason)``, every other pending case with
        :class:`ScoringWorkerError` (not scored)."""
        with self.lock:
            self.alive = False
            pending, self.pending = self.pending, {}
            self.running = None
        if self.process.poll() is None:
            self.process.kill()
        self.outbox.put(None)
        for task_id, (future, label, _) in pending.items():
            if future.done():
                continue
            if task_id == first or first is None:
                future.set_exception(error(f"{label}: {reason}" if first is None else reason))
            else:
                future.set_exception(ScoringWorkerError(f"{label}: not scored: {reason}"))
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


class ScoringPool:
    """One background scoring process (started on first use; a dead or killed one is replaced on the next
    submission).

    Args:
        metric: a picklable ``(segmentation, gt_file, reader_class) -> result`` importable without torch
            (:func:`~nnunetv2_topo.evaluation.score_worker.score_case`).
        timeout_s: ``score_case_timeout_s``, the deadline of every case from the moment it starts (None: none).
        threads: cap on the worker's library thread pools (:func:`threads_per_rank`; None: the environment's).
        poll_seconds: how often the reader thread checks the deadline.
    """

    worker_module = "nnunetv2_topo.evaluation.score_worker"

    def __init__(
        self,
        metric: Callable[..., dict[str, float]] = score_case,
        timeout_s: float | None = DEFAULT_CASE_TIMEOUT_S,
        threads: int | None = None,
        poll_seconds: float = 0.2,
    ) -> None:
        if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a positive number of seconds or None, got {timeout_s!r}")
        self.metric = metric
        self.timeout_s = timeout_s
        self.threads = threads
        self.poll_seconds = poll_seconds
        self._worker: _Worker | None = None
        self._ids = itertools.count()
        self.workers_started = 0
        _LIVE.add(self)

    @property
    def pid(self) -> int | None:
        """The running worker's process id (None when none runs)."""
        worker = self._worker
        return worker.process.pid if worker is not None and worker.alive else None

    def start(self) -> None:
        """Start the worker now and let it load the metric's compiled kernels, so the first round does not wait for
        that (called at the start of training; the warm-up's deadline is at least :data:`WARM_UP_TIMEOUT_S`)."""
        if self._worker is None or not self._worker.alive:
            self._worker = _Worker(self.threads, self.poll_seconds, self.worker_module)
            self.workers_started += 1
            limit = None if self.timeout_s is None else max(self.timeout_s, WARM_UP_TIMEOUT_S)
            self.call(warm_up, timeout_s=limit)

    def call(
        self,
        function: Callable[..., Any],
        *args: Any,
        label: str = "",
        timeout_s: float | Literal["pool"] | None = "pool",
    ) -> cf.Future:
        """Run ``function(*args)`` in the worker (``function`` picklable by reference); its future. ``timeout_s``:
        its deadline from the moment it starts (default: the pool's)."""
        deadline = self.timeout_s if isinstance(timeout_s, str) else timeout_s  # (the one string: "pool")
        self.start()
        future: cf.Future = cf.Future()
        payload = pickle.dumps((function, args), protocol=pickle.HIGHEST_PROTOCOL)
        assert self._worker is not None
        self._worker.submit(next(self._ids), payload, future, label or getattr(function, "__name__", "task"), deadline)
        return future

    def submit(self, segmentation: np.ndarray, gt_file: str, reader_class: type, case: str = "") -> cf.Future:
        """Score one case with the metric; its future (``CaseTimeoutError`` past the deadline)."""
        return self.call(self.metric, segmentation, gt_file, reader_class, label=f"case {case or gt_file}")

    def shutdown(self) -> None:
        """Kill the worker now (a running case is not waited for); pending cases fail with
        :class:`ScoringWorkerError`."""
        worker, self._worker = self._worker, None
        if worker is not None and worker.alive:
            worker.stop(ScoringWorkerError, "the scoring process was stopped (end of training)")


@atexit.register
def _kill_live_workers() -> None:  # a rank that ends without shutdown (an exception) does not wait for its case
    for pool in list(_LIVE):
        pool.shutdown()
