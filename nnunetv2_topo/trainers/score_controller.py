"""The score-round controller: when rounds run, which cases each rank predicts, when a finished round is applied,
the best score and ``checkpoint_best_score.pth`` (see :mod:`nnunetv2_topo.trainers.score_rounds` for one round).

DDP safety: every rank predicts its own share of the cases (``cases[rank::world_size]``) at the same epoch end and
scores them in its own background process, so no rank waits in a collective while another predicts alone (the
wait is at most the imbalance of one case). Whether a round is finished is agreed by a tiny all-reduce of each
rank's non-blocking ``done()``; when a round must be applied (the next one is due, ``checkpoint_latest.pth`` is
written next, training ends) every rank polls its own background metric and joins an all-reduce every poll interval
(:func:`~nnunetv2_topo.trainers.distributed.wait_on_every_rank`), so no rank ever blocks on the metric inside a
collective. Only then are the per-case results all-gathered (already computed: no waiting) and every rank applies the
same record. When the measured prediction time of a round approaches the process group's timeout, the number of
cases is capped (with a warning).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from nnunetv2_topo.trainers.checkpoint import TOPO_STATE_KEY
from nnunetv2_topo.trainers.diagnostics import console_log
from nnunetv2_topo.trainers.distributed import (
    all_ranks,
    gather_objects,
    process_group_timeout,
    rank_and_world,
    wait_on_every_rank,
)
from nnunetv2_topo.trainers.score_rounds import ScoreRound, ScoringPool, cpu_copy, round_record, select_score_cases

__all__ = ["ScoreRoundController", "record_message"]

TIMEOUT_FRACTION = 0.5
"""A round's estimated prediction time is kept below this fraction of the process group's timeout."""


class ScoreRoundController:
    """Scoring rounds every ``every`` epochs (0: off). Owns the cases, the round in flight, the applied records and
    the best score (its :meth:`state_dict`).

    Args:
        every: ``score_every_epochs``.
        log: the trainer's log (``message, also_print_to_console=...``).
        pool: the background scoring process of this rank.
        poll_seconds: how often ranks agree on "every case scored" while waiting.
    """

    def __init__(
        self,
        every: int,
        log: Callable[..., None] = console_log,
        pool: ScoringPool | None = None,
        poll_seconds: float = 0.5,
    ) -> None:
        self.every = int(every)
        self.log = log
        self.pool = pool or ScoringPool()
        self.poll_seconds = poll_seconds
        self.cases: list[str] | None = None
        self.pending: ScoreRound | None = None
        self.records: list[dict[str, Any]] = []
        self.best_score: float | None = None
        self.best_score_epoch: int | None = None
        self.seconds_per_case: float | None = None
        """The slowest rank's prediction time per case in the last round (for the timeout estimate)."""

    # ------------------------------------------------------------------ schedule and cases
    def due(self, epoch: int) -> bool:
        return self.every > 0 and (epoch + 1) % self.every == 0

    def choose_cases(self, val_keys: Iterable[str], wanted: int, fold: int | str) -> list[str]:
        """The validation cases of the fold scored in every round (``wanted`` of them, a subset fixed by seed 0
        whatever the training seed, so runs are compared on the same cases); chosen and logged once."""
        if self.cases is None:
            val_keys = list(val_keys)
            if wanted > len(val_keys):
                self.log(
                    f"WARNING (configuration): score_num_cases = {wanted} but fold {fold} has only "
                    f"{len(val_keys)} validation cases: every round scores all {len(val_keys)}",
                    also_print_to_console=True,
                )
            self.cases = select_score_cases(val_keys, wanted)
            self.log(
                f"Competition-score rounds every {self.every} epochs on {len(self.cases)} validation cases: "
                f"{', '.join(self.cases)}"
            )
        return self.cases

    def round_cases(self, cases: Sequence[str]) -> list[str]:
        """The cases of the next round: all of them, unless the last round's per-case prediction time says the
        round would approach the process group's timeout (then fewer, with a warning)."""
        timeout = process_group_timeout()
        _, world = rank_and_world()
        if timeout is None or not self.seconds_per_case:
            return list(cases)
        per_rank = math.ceil(len(cases) / world)
        estimate = self.seconds_per_case * per_rank
        budget = TIMEOUT_FRACTION * timeout
        if estimate <= budget:
            return list(cases)
        keep = max(1, int(budget // self.seconds_per_case)) * world
        self.log(
            f"WARNING: a scoring round of {len(cases)} cases would take about {estimate:.0f} s per rank "
            f"({self.seconds_per_case:.1f} s per case), near the process group's timeout of {timeout:.0f} s: this "
            f"round scores {min(keep, len(cases))} cases. Lower score_num_cases or turn score_mirroring off",
            also_print_to_console=True,
        )
        return list(cases)[:keep]

    # ------------------------------------------------------------------ rounds
    def start(
        self,
        epoch: int,
        cases: Sequence[str],
        predict: Callable[[list[str]], Iterable[tuple[np.ndarray, str]]],
        reader_class: type,
        snapshot: Callable[[], dict[str, Any]] | None = None,
    ) -> ScoreRound:
        """Every rank: predict this rank's share of ``cases`` (``predict`` yields ``(segmentation, gt_file)`` per
        case) and hand each to the background metric; rank 0 keeps a CPU copy of ``snapshot()`` (written as
        ``checkpoint_best_score.pth`` if the round is the best)."""
        rank, world = rank_and_world()
        mine = list(cases)[rank::world]
        checkpoint = cpu_copy(snapshot()) if (rank == 0 and snapshot is not None) else {}
        score_round = ScoreRound(epoch, mine, checkpoint)
        t0 = time.perf_counter()
        for segmentation, gt_file in predict(mine):
            score_round.futures.append(self.pool.submit(segmentation, gt_file, reader_class))
        score_round.predict_seconds = time.perf_counter() - t0
        self.pending = score_round
        return score_round

    def collect(self, applied_epoch: int, must_wait: bool) -> list[dict[str, Any]]:
        """The finished round's record (the same on every rank), or ``[]`` while it is being scored and nothing
        forces a wait. Every rank calls it at the same points."""
        pending = self.pending
        if pending is None:
            return []
        if must_wait:
            if not pending.done():
                self.log(
                    f"Waiting for the competition scoring of epoch {pending.epoch} (the next round is due, "
                    "checkpoint_latest.pth is written now or training ends; raise score_every_epochs if this "
                    "repeats)"
                )
            wait_on_every_rank(pending.done, self.poll_seconds)
        elif not all_ranks(pending.done()):
            return []
        # every case is scored on every rank: gathering the results waits for nobody's metric
        shares = gather_objects(
            {"results": pending.local_results(), "predict_seconds": pending.predict_seconds, "n": len(pending.cases)}
        )
        by_case = {r["case"]: r for share in shares for r in share["results"]}
        results = [by_case[c] for c in sorted(by_case)]
        predict_seconds = max(share["predict_seconds"] for share in shares)
        per_case = [s["predict_seconds"] / s["n"] for s in shares if s["n"]]
        self.seconds_per_case = max(per_case) if per_case else None
        return [round_record(pending.epoch, applied_epoch, results, predict_seconds, pending.started)]

    def accept(self, record: dict[str, Any], write_best: Callable[[dict[str, Any]], None] | None = None) -> bool:
        """Keep ``record``; True when it is the best round so far (then, on the rank holding the snapshot,
        ``write_best`` receives it with this controller's state, whose best score is this round's)."""
        self.records.append(record)
        pending, self.pending = self.pending, None
        if record["error"] is not None:
            return False
        score = float(record["score"])
        if self.best_score is not None and score <= self.best_score:
            return False
        self.best_score, self.best_score_epoch = score, int(record["epoch"])
        if write_best is not None and pending is not None and pending.checkpoint:
            state = pending.checkpoint.get(TOPO_STATE_KEY)
            if isinstance(state, dict):
                state["score_rounds"] = self.state_dict()
            write_best(pending.checkpoint)
        return True

    def shutdown(self) -> None:
        self.pool.shutdown()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "records": [dict(r) for r in self.records],
            "best_score": self.best_score,
            "best_score_epoch": self.best_score_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = [dict(r) for r in state.get("records", [])]
        self.best_score = state.get("best_score")
        self.best_score_epoch = state.get("best_score_epoch")

    def adopt_best_of_file(self, checkpoint: dict[str, Any], path: str) -> None:
        """Take the best score of an existing ``checkpoint_best_score.pth`` when it beats the resumed one (a file
        written after the checkpoint training resumes from), so a worse round never replaces it."""
        saved = (checkpoint.get("topo_state") or {}).get("score_rounds") or {}
        score, epoch = saved.get("best_score"), saved.get("best_score_epoch")
        own_epoch = int(checkpoint.get("current_epoch", 0)) - 1
        if epoch != own_epoch:  # written before the file recorded its own score: look its round up
            found = [r for r in self.records + saved.get("records", []) if r.get("epoch") == own_epoch]
            score, epoch = (found[-1].get("score"), own_epoch) if found else (None, None)
        if score is None or not math.isfinite(float(score)):
            self.log(
                f"WARNING: {path} does not say which score it holds; a round better than {self.best_score} replaces it"
            )
            return
        if self.best_score is None or float(score) > self.best_score:
            self.log(f"Best competition score so far: {float(score):.4f} of epoch {epoch} (from {path})")
            self.best_score, self.best_score_epoch = float(score), int(epoch)


def record_message(record: dict[str, Any], best: bool, best_file: str) -> str:
    """The log line of an applied round (a failed one: why, and what to change)."""
    epoch = record["epoch"]
    if record["error"] is not None:
        return (
            f"WARNING: the competition scoring of epoch {epoch} failed ({record['error']}); val_score stays NaN for "
            "that epoch and the plateau is not stepped (if the scoring process ran out of memory, lower "
            "score_num_cases)"
        )
    return (
        f"Competition score of epoch {epoch} ({record['num_cases']} validation cases; predicted in "
        f"{record['predict_seconds']:.1f} s in the training process, metric {record['metric_seconds']:.1f} s in "
        f"the background, applied after epoch {record['applied_epoch']}): score {record['score']:.4f}, topo "
        f"{record['topo']:.4f}, surface Dice {record['surface_dice']:.4f}, VOI {record['voi_score']:.4f}"
        + (f"; new best -> {best_file}" if best else "")
    )
