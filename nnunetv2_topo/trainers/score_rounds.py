"""Checkpoint selection by the competition score (``score_every_epochs``): scoring rounds during training.

Every ``score_every_epochs`` epochs the trainer predicts a fixed, seeded subset of ``score_num_cases`` validation
cases of its fold with nnU-Net's sliding-window predictor, in the training process between two epochs (under DDP each
rank its share of the cases), with the weights of that epoch (the EMA weights when ``ema_decay`` is on, as validation
uses them). Each predicted segmentation goes, with the path of its ground truth, to the rank's spawned background
process that returns ``leaderboard_score(pred, gt, workers=0)``, so the training loop does not wait for the Betti
matching (:mod:`nnunetv2_topo.evaluation.scoring_pool`: a light process without torch, with a deadline on every
case). This module holds one round; :mod:`nnunetv2_topo.trainers.score_controller` runs them.

A round's result is applied at the first epoch end where all its cases are scored (at the latest when the next round
is due, before ``checkpoint_latest.pth`` is written, and at the end of training): ``val_score`` (and its topo,
surface Dice and VOI parts) is logged at the epoch whose weights were scored (NaN at the other epochs), the weights
of that epoch become ``checkpoint_best_score.pth`` when the round is the best so far, and ``plateau_metric:
val_score`` steps the plateau scheduler once per round. At most one round is in flight.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from nnunetv2_topo.evaluation.score_worker import SCORE_LOG_KEYS

__all__ = [
    "BEST_SCORE_CHECKPOINT",
    "SCORE_LOG_KEYS",
    "ScoreRound",
    "cpu_copy",
    "mean_scores",
    "round_record",
    "select_score_cases",
]

BEST_SCORE_CHECKPOINT = "checkpoint_best_score.pth"


def select_score_cases(val_keys: Iterable[str], num_cases: int, seed: int = 0) -> list[str]:
    """The fixed subset of ``num_cases`` validation cases scored every round (all of them when there are fewer);
    the same for the same keys and seed, sorted."""
    keys = sorted(val_keys)
    if num_cases >= len(keys):
        return keys
    return sorted(random.Random(seed).sample(keys, num_cases))


def mean_scores(results: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of every field of :data:`SCORE_LOG_KEYS` over the cases of a round."""
    return {f: float(np.mean([r[f] for r in results])) for f in SCORE_LOG_KEYS.values()}


def cpu_copy(obj: Any) -> Any:
    """A deep copy with every tensor detached and copied to the CPU (a checkpoint that later steps cannot change)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


@dataclass
class ScoreRound:
    """One scoring round: the epoch whose weights were predicted, its cases' pending scores and a CPU copy of the
    checkpoint of that epoch (written as ``checkpoint_best_score.pth`` if the round is the best)."""

    epoch: int
    cases: list[str]
    checkpoint: dict[str, Any]
    predict_seconds: float = 0.0
    futures: list[cf.Future] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def done(self) -> bool:
        return all(f.done() for f in self.futures)

    def local_results(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """This process's cases: each ``{"case", <score fields>, "seconds"}`` or ``{"case", "error"}`` (waits for
        the cases, ``timeout`` seconds at most each)."""
        out = []
        for case, future in zip(self.cases, self.futures):
            try:
                out.append({"case": case, **future.result(timeout=timeout)})
            except Exception as exc:  # noqa: BLE001 (any failure of the metric or the worker ends this round only)
                out.append({"case": case, "error": f"{type(exc).__name__}: {exc}"})
        return out

    def record(self, applied_epoch: int, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the cases (``timeout`` seconds at most each) and summarise the round (:func:`round_record`)."""
        return round_record(self.epoch, applied_epoch, self.local_results(timeout), self.predict_seconds, self.started)


def round_record(
    epoch: int, applied_epoch: int, results: Sequence[dict[str, Any]], predict_seconds: float, started: float
) -> dict[str, Any]:
    """The record of a round from its per-case ``results`` (of every rank): the mean scores (NaN and ``error`` when
    a case failed or passed its deadline), the cases, timings, the epoch at which it is applied."""
    record: dict[str, Any] = {
        "epoch": int(epoch),
        "applied_epoch": int(applied_epoch),
        "num_cases": len(results),
        "cases": sorted(r["case"] for r in results),
        "predict_seconds": round(predict_seconds, 3),
        "error": None,
    }
    errors = [f"{r['case']}: {r['error']}" if len(results) > 1 else r["error"] for r in results if "error" in r]
    if errors or not results:
        record.update({f: math.nan for f in SCORE_LOG_KEYS.values()})
        record["error"] = "; ".join(errors) or "no case was scored"
    else:
        record.update(mean_scores(results))
        record["metric_seconds"] = round(sum(r["seconds"] for r in results), 3)
    record["wall_seconds"] = round(time.perf_counter() - started, 3)
    return record
