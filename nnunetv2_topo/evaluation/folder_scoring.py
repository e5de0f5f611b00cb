"""Score a folder of predictions against a folder of ground truths (pairs by case id, TIFF and NIfTI), raw or after
post-processing: ``nnunetv2_topo evaluate``, the trainer's final validation and the benchmarks.

:func:`evaluate_folders` scores a folder pair; :func:`postprocess_folder` post-processes a folder;
:func:`score_folder` does both (raw and post-processed scores).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.input_checks import label_map_problem, label_value_problem
from nnunetv2_topo.io import VolumeError, index_volumes, read_volume, write_tiff
from nnunetv2_topo.metrics.engine import auto_workers, make_engine_pool
from nnunetv2_topo.metrics.leaderboard import MetricInputError, PendingScore, start_score
from nnunetv2_topo.metrics.rule_threads import shared_threads
from nnunetv2_topo.metrics.score_fields import SCORE_FIELDS
from nnunetv2_topo.metrics.topo_score import COMPETITION_TILE_VOXELS, check_engine
from nnunetv2_topo.postprocessing.steps import PostprocessConfig, postprocess_volume

MEAN_KEYS = SCORE_FIELDS


class EvaluationError(TopoError, ValueError):
    """The folders cannot be evaluated (missing pairs, empty folder, unreadable or mismatched volumes)."""


class EngineWorkerDiedError(TopoError, RuntimeError):
    """A Betti-matching worker process died while scoring (most likely out of memory)."""


class NoPredictionsError(TopoError, FileNotFoundError):
    """A prediction folder without predicted volumes."""


def _list_volumes(folder: Path, role: str) -> dict[str, Path]:
    return index_volumes(folder, role, EvaluationError, required=True)


def _preview(ids: Iterable[str], limit: int = 10) -> str:
    ids = sorted(ids)
    text = ", ".join(ids[:limit])
    return text + (f" … (+{len(ids) - limit} more)" if len(ids) > limit else "")


def pair_files(
    pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, only_predicted: bool = False
) -> list[tuple[str, Path, Path]]:
    """``[(case_id, pred_path, gt_path)]`` sorted by id; raises :class:`EvaluationError` on any missing pair.

    ``only_predicted``: ground truth without a prediction is skipped instead of refused (a folder holding every
    case, such as nnU-Net's ``gt_segmentations``, scored against one fold's predictions).
    """
    preds = _list_volumes(Path(pred_dir), "prediction")
    gts = _list_volumes(Path(gt_dir), "ground-truth")
    if only_predicted:
        gts = {cid: path for cid, path in gts.items() if cid in preds}
    no_pred = set(gts) - set(preds)
    no_gt = set(preds) - set(gts)
    if no_pred or no_gt:
        parts = []
        if no_pred:
            parts.append(f"{len(no_pred)} case(s) without a prediction in {pred_dir}: {_preview(no_pred)}")
        if no_gt:
            parts.append(f"{len(no_gt)} prediction(s) without ground truth in {gt_dir}: {_preview(no_gt)}")
        raise EvaluationError("unpaired files: " + "; ".join(parts) + " (files pair by the name before the first '.')")
    return [(cid, preds[cid], gts[cid]) for cid in sorted(gts)]


class LazyEnginePool:
    """An engine pool of ``workers`` processes, started on the first call (the first tile the rules hand back)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool: cf.ProcessPoolExecutor | None = None

    def __call__(self) -> cf.ProcessPoolExecutor | None:
        if self.pool is None and self.workers > 0:
            self.pool = make_engine_pool(self.workers)
        return self.pool

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _start_case(
    cid: str,
    pred_path: Path,
    gt_path: Path,
    executor: cf.Executor | None,
    engine: str = "auto",
    rules_executor: cf.Executor | None = None,
    engine_executor=None,
    keep_masks: bool = False,
) -> PendingScore:
    try:
        pred = read_volume(pred_path)
        gt = read_volume(gt_path)
    except VolumeError as exc:
        raise EvaluationError(f"case '{cid}': {exc}") from exc
    problem = label_value_problem(gt)
    if problem:
        raise EvaluationError(
            f"case '{cid}': ground truth {gt_path}: {problem}; remap it (0/255 masks such as deprecated_train_labels "
            "are not labels) or remove the case"
        )
    problem = label_map_problem(pred)
    if problem:
        raise EvaluationError(f"case '{cid}': prediction {pred_path}: {problem}")
    try:
        return start_score(pred, gt, executor, engine, rules_executor, engine_executor, keep_masks)
    except MetricInputError as exc:
        raise EvaluationError(f"case '{cid}' ({pred_path.name} vs {gt_path.name}): {exc}") from exc


Diagnose = Callable[[str, dict, np.ndarray, np.ndarray, list], None]
"""``diagnose(case_id, result, pred_fg, gt_fg, tile_counts)``: called with every case's score, its two foreground
masks and its 8 tiles' counts (the error map of ``evaluate --errors``)."""


def _finish(cid: str, pending: PendingScore, fallback: dict[str, int], diagnose: Diagnose | None = None) -> dict:
    try:
        result = pending.result()
        fallback[cid] = int(pending.fallback_tiles or 0)
        if diagnose is not None and pending.masks is not None:
            masks, pending.masks = pending.masks, None
            diagnose(cid, result, masks[0], masks[1], pending.tile_counts())
        return result
    except BrokenProcessPool as exc:
        raise EngineWorkerDiedError(
            f"case '{cid}': a Betti-matching worker died (most likely out of memory: one 160³ tile needs ~4.6 GB); "
            "run with fewer processes (-np)"
        ) from exc


def mean_scores(cases: dict[str, dict]) -> dict[str, float]:
    """Plain mean over cases of score, topo, surface_dice and voi_score."""
    if not cases:
        return {k: float("nan") for k in MEAN_KEYS}
    return {k: float(np.mean([c[k] for c in cases.values()])) for k in MEAN_KEYS}


def evaluate_folders(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    num_processes: int = 1,
    progress: bool = True,
    only_predicted: bool = False,
    engine: str = "auto",
    diagnose: Diagnose | None = None,
) -> dict:
    """Score every case; returns ``{"cases": {id: leaderboard_score(...)}, "mean": {score, topo, surface_dice,
    voi_score}, "fallback_tiles": {"total": n, "cases": {id: n}}}`` (tiles the rules handed to the engine).

    ``num_processes`` parallel tile workers take the tiles of all cases (the costly part) while this thread reads
    volumes and computes SurfaceDice and VOI: threads for the rules (``engine="auto"`` or ``"rules"``), with an
    engine pool for tiles past the rules' bound started only when one is (capped by memory at ~4.6 GB per 160³
    tile); processes for ``engine="betti-matching-3d"``. ``0`` runs everything here, serially.
    ``only_predicted`` skips ground truth that has no prediction (see :func:`pair_files`). ``diagnose``: see
    :data:`Diagnose` (called here, in order of the cases, while later cases' tiles run; the scores are unchanged).
    Raises :class:`EvaluationError` on pairing problems, unreadable, non-3-D or mismatched volumes.
    """
    if num_processes < 0:
        raise ValueError(f"num_processes must be >= 0, got {num_processes}")
    check_engine(engine)
    pairs = pair_files(pred_dir, gt_dir, only_predicted)

    results: dict[str, dict] = {}
    fallback: dict[str, int] = {}
    executor = make_engine_pool(num_processes) if num_processes > 0 and engine == "betti-matching-3d" else None
    rules_executor = shared_threads(num_processes) if num_processes > 0 and engine != "betti-matching-3d" else None
    fallback_pool = LazyEnginePool(min(num_processes, auto_workers(num_processes, COMPETITION_TILE_VOXELS)))
    bar = tqdm(total=len(pairs), desc="evaluate", unit="case", disable=not progress)
    pending: deque[tuple[str, PendingScore]] = deque()
    try:
        for cid, pred_path, gt_path in pairs:
            pending.append(
                (
                    cid,
                    _start_case(
                        cid, pred_path, gt_path, executor, engine, rules_executor, fallback_pool, diagnose is not None
                    ),
                )
            )
            # keep a bounded number of cases in flight so volumes are not all read ahead
            while len(pending) > max(1, num_processes):
                done_id, done = pending.popleft()
                results[done_id] = _finish(done_id, done, fallback, diagnose)
                bar.update(1)
        while pending:
            done_id, done = pending.popleft()
            results[done_id] = _finish(done_id, done, fallback, diagnose)
            bar.update(1)
    finally:
        bar.close()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        fallback_pool.shutdown()
    fallback_tiles = {"total": sum(fallback.values()), "cases": dict(sorted(fallback.items()))}
    return {"cases": results, "mean": mean_scores(results), "fallback_tiles": fallback_tiles}


def postprocess_folder(
    pred_dir: str | os.PathLike, out_dir: str | os.PathLike, config: PostprocessConfig, progress: bool = False
) -> list[Path]:
    """Post-process every volume of ``pred_dir`` into ``out_dir/<id>.tif`` (uint8 0/1); returns the written files."""
    preds = index_volumes(pred_dir, "prediction")
    if not preds:
        raise NoPredictionsError(f"no predicted volumes (.tif, .tiff, .nii, .nii.gz) in {pred_dir}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for cid, pred in tqdm(preds.items(), desc="postprocess", unit="case", disable=not progress):
        path = out_dir / f"{cid}.tif"
        write_tiff(path, postprocess_volume(read_volume(pred), config))
        written.append(path)
    return written


def score_folder(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    config: PostprocessConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    num_processes: int = 1,
    progress: bool = False,
    only_predicted: bool = False,
) -> dict:
    """Score the predictions of ``pred_dir`` raw and, when ``config`` is given, post-processed into ``out_dir``.

    Returns ``{"raw": evaluate_folders(...)}`` plus ``"postprocessed"`` and ``"postprocess_config"`` with a
    ``config``. ``only_predicted``: ground truth without a prediction is skipped (nnU-Net's ``gt_segmentations``
    holds every training case).
    """
    if config is not None and out_dir is None:
        raise ValueError("score_folder needs out_dir for the post-processed predictions when config is given")
    summary = {"raw": evaluate_folders(pred_dir, gt_dir, num_processes, progress, only_predicted)}
    if config is not None:
        assert out_dir is not None  # checked above
        postprocess_folder(pred_dir, out_dir, config, progress)
        summary["postprocessed"] = evaluate_folders(out_dir, gt_dir, num_processes, progress, only_predicted)
        summary["postprocess_config"] = config.to_dict()
    return summary
