"""Scores of post-processing configurations on every case, computed once each, with a tile-count cache.

Work is split into tasks of (one case, several configurations), run in a pool of spawned worker processes (or
here with ``num_processes=0``). A worker loads its case (fusing the inputs' probability maps) once and keeps it
while the next task is for the same case. The Betti-matching cache lives in this process: each task carries the
case's known ``(tile index, tile digest) -> counts`` entries and hands back the ones it computed.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import math
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunetv2_topo.inference.scoring import TileKey, postprocess_and_score
from nnunetv2_topo.postprocessing.steps import PostprocessConfig

RESULT_KEYS = ("score", "topo", "surface_dice", "voi_score")


@dataclass(frozen=True)
class CaseSource:
    """Where one case's maps and ground truth are, and how to fuse the maps."""

    case: str
    inputs: tuple[Path, ...]
    gt: Path
    fusion_mode: str = "logit"
    weights: tuple[float, ...] | None = None


def load_case(source: CaseSource) -> tuple[np.ndarray, np.ndarray]:
    """``(fused foreground probability, ground truth)``; ValueError naming the files on a shape mismatch."""
    from nnunetv2_topo.inference.probabilities import fused_probability
    from nnunetv2_topo.io import VolumeError, read_volume
    from nnunetv2_topo.volume_checks import label_value_problem

    gt = read_volume(source.gt)
    problem = label_value_problem(gt)
    if problem:
        raise VolumeError(f"case '{source.case}': ground truth {source.gt}: {problem}; remap it or remove the case")
    prob = fused_probability(source.inputs, source.weights, source.fusion_mode)
    if prob.shape != gt.shape:
        raise ValueError(
            f"case '{source.case}': probability map {source.inputs[0]} has shape {prob.shape} but ground truth "
            f"{source.gt} has shape {gt.shape}; they must match"
        )
    return prob, gt


_LOADED: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def evaluate_task(
    source: CaseSource, configs: Sequence[PostprocessConfig], known: dict[TileKey, np.ndarray]
) -> tuple[str, list[dict], dict[TileKey, np.ndarray], int, int]:
    """Score ``configs`` on one case; returns ``(case, results, new cache entries, hits, misses)``."""
    if source.case not in _LOADED:
        _LOADED.clear()  # one case at a time: tasks come grouped by case
        _LOADED[source.case] = load_case(source)
    prob, gt = _LOADED[source.case]
    cache = dict(known)
    results, hits, misses = [], 0, 0
    for config in configs:
        r = postprocess_and_score(prob, gt, config, cache)
        hits += r["tile_hits"]
        misses += r["tile_misses"]
        results.append({k: r[k] for k in RESULT_KEYS})
    new = {k: v for k, v in cache.items() if k not in known}
    return source.case, results, new, hits, misses


@contextlib.contextmanager
def main_module_hidden():
    """Workers started inside this block do not import the caller's ``__main__``.

    A spawned worker re-runs the parent's main script (as ``__mp_main__``) unless ``__main__`` has neither a
    file nor a module spec; a user's script calling :func:`~nnunetv2_topo.tuning.tune` without an
    ``if __name__ == "__main__"`` guard would otherwise run again in every worker. Workers start while tasks are
    submitted, so submissions happen in this block too (only functions of this package are submitted).
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


class TileCountCache:
    """Betti-matching counts by (case, tile index, digest of the prediction tile) with hit accounting."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[TileKey, np.ndarray]] = {}
        self.hits = 0
        self.misses = 0

    def known(self, case: str) -> dict[TileKey, np.ndarray]:
        return self.entries.setdefault(case, {})

    def add(self, case: str, new: dict[TileKey, np.ndarray], hits: int, misses: int) -> None:
        self.entries.setdefault(case, {}).update(new)
        self.hits += hits
        self.misses += misses

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class Evaluator:
    """Mean scores of configurations over ``sources``; every (configuration, case) is scored at most once.

    ``results[config][case]`` holds ``score``, ``topo``, ``surface_dice`` and ``voi_score``; ``order`` lists the
    configurations in the order they were completed. ``on_progress(done, scheduled)`` is called with the number of
    (case, configuration) pairs just scheduled (``done`` 0) and just finished (``scheduled`` 0).
    """

    def __init__(
        self,
        sources: Sequence[CaseSource],
        num_processes: int = 1,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if not sources:
            raise ValueError("nothing to tune on: no cases")
        if num_processes < 0:
            raise ValueError(f"num_processes must be >= 0, got {num_processes}")
        self.sources = list(sources)
        self.cases = [s.case for s in self.sources]
        self.cache = TileCountCache()
        self.results: dict[PostprocessConfig, dict[str, dict]] = {}
        self.order: list[PostprocessConfig] = []
        self.on_progress = on_progress
        self.num_processes = num_processes
        self._pool: cf.ProcessPoolExecutor | None = None

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            from nnunetv2_topo.metrics.engine import make_engine_pool

            with main_module_hidden():
                self._pool = make_engine_pool(self.num_processes)
        return self._pool

    @property
    def complete(self) -> list[PostprocessConfig]:
        """Configurations scored on every case, in the order they were completed."""
        return list(self.order)

    def mean(self, config: PostprocessConfig, key: str = "score", cases: Sequence[str] | None = None) -> float:
        per_case = self.results[config]
        return float(np.mean([per_case[c][key] for c in (self.cases if cases is None else cases)]))

    def evaluate(self, configs: Sequence[PostprocessConfig]) -> list[float]:
        """Mean score of each configuration over all cases (evaluating the ones not seen before)."""
        todo = list(dict.fromkeys(c for c in configs if c not in self.results))
        if todo:
            self._run(todo)
        return [self.mean(c) for c in configs]

    def _tasks(self, todo: list[PostprocessConfig]) -> list[tuple[CaseSource, list[PostprocessConfig]]]:
        chunks = max(1, math.ceil(self.num_processes / len(self.sources))) if self.num_processes else 1
        size = math.ceil(len(todo) / chunks)
        return [(s, todo[i : i + size]) for s in self.sources for i in range(0, len(todo), size)]

    def _accept(self, configs: list[PostprocessConfig], outcome: tuple) -> None:
        case, results, new, hits, misses = outcome
        self.cache.add(case, new, hits, misses)
        for config, result in zip(configs, results, strict=True):
            self.results.setdefault(config, {})[case] = result
        if self.on_progress is not None:
            self.on_progress(len(configs), 0)

    def _run(self, todo: list[PostprocessConfig]) -> None:
        tasks = self._tasks(todo)
        if self.on_progress is not None:
            self.on_progress(0, len(todo) * len(self.sources))
        if self.num_processes == 0:
            for source, configs in tasks:
                self._accept(configs, evaluate_task(source, configs, self.cache.known(source.case)))
        else:
            pool = self._executor()
            with main_module_hidden():
                futures = {
                    pool.submit(evaluate_task, source, configs, dict(self.cache.known(source.case))): configs
                    for source, configs in tasks
                }
            try:
                for future in cf.as_completed(futures):
                    self._accept(futures[future], future.result())
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        for config in todo:
            if len(self.results.get(config, {})) == len(self.cases):
                self.order.append(config)
