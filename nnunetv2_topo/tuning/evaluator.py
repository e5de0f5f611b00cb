"""Scores of settings (fusion + post-processing steps: :class:`~nnunetv2_topo.tuning.ensemble.Setting`) on every
case, computed once each, with a tile-count cache.

Work is split into tasks of (one case, several settings), run in a pool of spawned worker processes (or here with
``num_processes=0``). A worker reads each probability map of its case (every input, every checkpoint used) once and
keeps them while the next task is for the same case; a task fuses the maps once per fusion among its settings
(grouped by fusion), exactly as ``postprocess`` does (:func:`fuse_probability_files`). The Betti-matching cache
lives in this process: each task carries the case's known ``(tile index, tile digest) -> counts`` entries and hands
back the ones it computed; it does not depend on the fusion (a tile of the same content is the same tile).
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

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.evaluation.case_scoring import TileKey, postprocess_and_score
from nnunetv2_topo.input_checks import label_value_problem
from nnunetv2_topo.io import VolumeError, read_volume
from nnunetv2_topo.metrics.engine import make_engine_pool
from nnunetv2_topo.metrics.score_fields import SCORE_FIELDS
from nnunetv2_topo.postprocessing.config_file import FusionSpec
from nnunetv2_topo.postprocessing.fusion import Fusion, check_fusion_weights, probability_to_logit
from nnunetv2_topo.postprocessing.probabilities import read_probability
from nnunetv2_topo.postprocessing.steps import PostprocessConfig
from nnunetv2_topo.tuning.ensemble import Setting


class TuneInputError(TopoError, ValueError):
    """Tuning inputs that do not fit together (a case, an input or a checkpoint named, and what is missing)."""


RESULT_KEYS = SCORE_FIELDS


@dataclass(frozen=True)
class CaseSource:
    """Where one case's maps and ground truth are, and how to fuse the maps by default (``fusion_mode``,
    ``weights``: the fusion of a bare :class:`PostprocessConfig` given to the :class:`Evaluator`). ``variants``:
    per input, ``(checkpoint, path)`` of the maps of each checkpoint a setting may choose (empty: only
    ``inputs[i]``, whatever the checkpoint)."""

    case: str
    inputs: tuple[Path, ...]
    gt: Path
    fusion_mode: str = "logit"
    weights: tuple[float, ...] | None = None
    variants: tuple[tuple[tuple[str | None, Path], ...], ...] = ()

    def path(self, index: int, checkpoint: str | None) -> Path:
        """The map of input ``index`` for ``checkpoint`` (``inputs[index]`` when the input has no variants)."""
        if index < len(self.variants) and self.variants[index]:
            for name, path in self.variants[index]:
                if name == checkpoint:
                    return path
            known = ", ".join(str(n) for n, _ in self.variants[index])
            raise TuneInputError(f"case '{self.case}': input {index + 1} has no checkpoint {checkpoint} (has {known})")
        return self.inputs[index]


class _Case:
    """One case in a worker: its ground truth, the maps read so far and the last fused map."""

    def __init__(self, source: CaseSource) -> None:
        self.source = source
        self.gt = read_volume(source.gt)
        problem = label_value_problem(self.gt)
        if problem:
            raise VolumeError(f"case '{source.case}': ground truth {source.gt}: {problem}; remap it or remove the case")
        self.maps: dict[Path, np.ndarray] = {}
        self.logits: dict[Path, np.ndarray] = {}
        self.fused: tuple[FusionSpec, np.ndarray] | None = None

    def _map(self, path: Path) -> np.ndarray:
        if path not in self.maps:
            prob = read_probability(path)
            if prob.shape != self.gt.shape:
                raise TuneInputError(
                    f"case '{self.source.case}': probability map {path} has shape {prob.shape} but ground truth "
                    f"{self.source.gt} has shape {self.gt.shape}; they must match"
                )
            self.maps[path] = prob
        return self.maps[path]

    def probability(self, fusion: FusionSpec) -> np.ndarray:
        """The fused map of ``fusion``, equal to ``fuse_probability_files`` of the same files (each read once)."""
        if self.fused is not None and self.fused[0] == fusion:
            return self.fused[1]

        n = len(self.source.inputs)
        weights = check_fusion_weights(fusion.weights, n)
        checkpoints = fusion.checkpoints or (None,) * n
        used = [(self.source.path(i, checkpoints[i]), w) for i, w in enumerate(weights) if w > 0]
        self.fused = None  # free the last fused map before making the next one
        if len(used) == 1:
            prob = self._map(used[0][0])
        else:
            fuse = Fusion(fusion.mode)
            for path, w in used:
                if fusion.mode == "logit":  # add_logit of the cached logit = add_probability of the map, bit for bit
                    if path not in self.logits:
                        self.logits[path] = probability_to_logit(self._map(path))
                    fuse.add_logit(self.logits[path], w)
                else:
                    fuse.add_probability(self._map(path), w)
            prob = fuse.probability()
        self.fused = (fusion, prob)
        return prob


_LOADED: dict[str, _Case] = {}


def evaluate_task(
    source: CaseSource, settings: Sequence[Setting], known: dict[TileKey, np.ndarray]
) -> tuple[str, list[dict], dict[TileKey, np.ndarray], int, int]:
    """Score ``settings`` on one case; returns ``(case, results, new cache entries, hits, misses)``."""
    if source.case not in _LOADED:
        _LOADED.clear()  # one case at a time: tasks come grouped by case
        _LOADED[source.case] = _Case(source)
    case = _LOADED[source.case]
    cache = dict(known)
    results, hits, misses = [], 0, 0
    for setting in settings:
        r = postprocess_and_score(case.probability(setting.fusion), case.gt, setting.steps, cache)
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
    """Mean scores of settings over ``sources``; every (setting, case) is scored at most once.

    A setting is a :class:`Setting` or a bare :class:`PostprocessConfig` (then fused as the sources say: ``base``).
    ``results[setting][case]`` holds ``score``, ``topo``, ``surface_dice`` and ``voi_score``; ``order`` lists the
    settings in the order they were completed. ``on_progress(done, scheduled)`` is called with the number of
    (case, configuration) pairs just scheduled (``done`` 0) and just finished (``scheduled`` 0).
    """

    def __init__(
        self,
        sources: Sequence[CaseSource],
        num_processes: int = 1,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if not sources:
            raise TuneInputError("nothing to tune on: no cases")
        if num_processes < 0:
            raise ValueError(f"num_processes must be >= 0, got {num_processes}")
        self.sources = list(sources)
        self.cases = [s.case for s in self.sources]
        first = self.sources[0]
        self.base = FusionSpec(first.fusion_mode, first.weights, tuple(str(p) for p in first.inputs))
        self.cache = TileCountCache()
        self.results: dict[Setting, dict[str, dict]] = {}
        self.order: list[Setting] = []
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
            with main_module_hidden():
                self._pool = make_engine_pool(self.num_processes)
        return self._pool

    def key(self, setting: Setting | PostprocessConfig) -> Setting:
        """``setting`` itself, or a bare configuration with the sources' fusion (``base``)."""
        return setting if isinstance(setting, Setting) else Setting(self.base, setting)

    @property
    def complete(self) -> list[Setting]:
        """Settings scored on every case, in the order they were completed."""
        return list(self.order)

    def mean(
        self, setting: Setting | PostprocessConfig, key: str = "score", cases: Sequence[str] | None = None
    ) -> float:
        per_case = self.results[self.key(setting)]
        return float(np.mean([per_case[c][key] for c in (self.cases if cases is None else cases)]))

    def per_case(self, setting: Setting | PostprocessConfig, key: str = "score") -> np.ndarray:
        """Scores of ``setting`` on every case, in ``cases`` order."""
        per_case = self.results[self.key(setting)]
        return np.array([per_case[c][key] for c in self.cases], float)

    def evaluate(self, settings: Sequence[Setting | PostprocessConfig]) -> list[float]:
        """Mean score of each setting over all cases (evaluating the ones not seen before)."""
        keys = [self.key(s) for s in settings]
        todo = list(dict.fromkeys(k for k in keys if k not in self.results))
        if todo:
            todo.sort(key=lambda s: repr(s.fusion))  # one fusion per run of settings: each fused once per task
            self._run(todo)
        return [self.mean(k) for k in keys]

    def _tasks(self, todo: list[Setting]) -> list[tuple[CaseSource, list[Setting]]]:
        chunks = max(1, math.ceil(self.num_processes / len(self.sources))) if self.num_processes else 1
        size = math.ceil(len(todo) / chunks)
        return [(s, todo[i : i + size]) for s in self.sources for i in range(0, len(todo), size)]

    def _accept(self, configs: list[Setting], outcome: tuple) -> None:
        case, results, new, hits, misses = outcome
        self.cache.add(case, new, hits, misses)
        for config, result in zip(configs, results, strict=True):
            self.results.setdefault(config, {})[case] = result
        if self.on_progress is not None:
            self.on_progress(len(configs), 0)

    def _run(self, todo: list[Setting]) -> None:
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
