"""The score-round controller: when rounds run, which cases each rank predicts, when a finished round is applied,
the best score and ``checkpoint_best_score.pth`` (see :mod:`nnunetv2_topo.trainers.score_rounds` for one round).

DDP safety: every rank predicts its own share of the cases (``cases[rank::world_size]``) at the same epoch end and
scores them in its own background process, so no rank waits in a collective while another predicts alone (the
wait is at most the imbalance of one case). Whether a round is finished is agreed by a tiny all-reduce of each
rank's non-blocking ``done()``; when a round must be applied (the next one is due, ``checkpoint_latest.pth`` is
written next, training ends) every rank polls its own background metric and joins an all-reduce every poll interval
(:func:`~nnunetv2_topo.trainers.distributed.wait_on_every_rank`), so no rank ever blocks on the metric inside a
collective. Only then are the per-case results all-gathered (already computed: no waiting) and every rank applies the
same record. Every case has a deadline (``score_case_timeout_s``, enforced by
:class:`~nnunetv2_topo.evaluation.scoring_pool.ScoringPool`): a case past it fails on its rank, so the round's
record fails on every rank, is not compared with the best score, and the next round gets a fresh scoring process.

Every round scores all its cases (no cap): inside a collective a rank waits only for the imbalance between ranks,
at most one case's prediction (none when ``score_num_cases`` is a multiple of the number of ranks); a warning says
when that one case approaches the process group's timeout. The best score is only compared between rounds of the
same cases.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnunetv2_topo.evaluation.scoring_pool import ScoringPool
from nnunetv2_topo.trainers.checkpoint import TOPO_STATE_KEY
from nnunetv2_topo.trainers.diagnostics import console_log
from nnunetv2_topo.trainers.distributed import (
    all_ranks,
    gather_objects,
    process_group_timeout,
    rank_and_world,
    wait_on_every_rank,
)
from nnunetv2_topo.trainers.score_rounds import (
    BEST_SCORE_CHECKPOINT,
    ScoreRound,
    cpu_copy,
    round_record,
    select_score_cases,
)

__all__ = ["RoundHooks", "ScoreRoundController", "record_message"]

TIMEOUT_FRACTION = 0.5
"""Warn when one case's prediction (the most a rank waits for another after a round) passes this fraction of the
process group's timeout."""


@dataclass
class RoundHooks:
    """What the rounds need from the trainer, passed explicitly.

    Attributes:
        predict: ``predict(cases)`` yields ``(segmentation, gt_file)`` per case
            (:class:`~nnunetv2_topo.trainers.score_predict.ScoreCasePredictor`).
        reader_class: nnU-Net's image reader of the dataset (the worker reads the ground truth with it).
        log_scores: logs a record's scores at the epoch whose weights were scored.
        step_plateau: ``step_plateau(epoch, score)`` steps a ``val_score`` plateau.
        snapshot: rank 0: the checkpoint payload of this epoch (None elsewhere).
        write_best: rank 0: writes ``checkpoint_best_score.pth`` (None elsewhere or without checkpointing).
        describe: how the cases are predicted (for the log line).
    """

    predict: Callable[[list[str]], Iterable[tuple[np.ndarray, str]]]
    reader_class: type
    log_scores: Callable[[dict[str, Any]], None]
    step_plateau: Callable[[int, float], object]  # (the return value is ignored)
    snapshot: Callable[[], dict[str, Any]] | None = None
    write_best: Callable[[dict[str, Any]], None] | None = None
    describe: str = ""


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
        self.best_cases: list[str] | None = None
        """The cases of the best round (a round of other cases is not compared with it)."""
        self.seconds_per_case: float | None = None
        """The slowest rank's prediction time per case in the last round."""
        self._warned_imbalance = False

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

    def check_imbalance(self) -> None:
        """Warn (once) when one case's prediction, the most a rank waits for another in the next collective after
        a round, approaches the process group's timeout."""
        timeout = process_group_timeout()
        if timeout is None or not self.seconds_per_case or self._warned_imbalance:
            return
        if self.seconds_per_case > TIMEOUT_FRACTION * timeout:
            self._warned_imbalance = True
            self.log(
                f"WARNING: predicting one scoring case takes {self.seconds_per_case:.0f} s, near the process group's "
                f"timeout of {timeout:.0f} s: after a round a rank may wait that long for another. Make "
                "score_num_cases a multiple of the number of GPUs, turn score_mirroring off or lengthen the timeout",
                also_print_to_console=True,
            )

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
        for (segmentation, gt_file), case in zip(predict(mine), mine):  # the generator first: it runs to its end
            score_round.futures.append(self.pool.submit(segmentation, gt_file, reader_class, case=case))
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
                limit = getattr(self.pool, "timeout_s", None)
                self.log(
                    f"Waiting for the competition scoring of epoch {pending.epoch} (the next round is due, "
                    "checkpoint_latest.pth is written now or training ends; raise score_every_epochs if this "
                    "repeats" + (f"; each case at most score_case_timeout_s = {limit:g} s)" if limit else ")")
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
        self.check_imbalance()
        return [round_record(pending.epoch, applied_epoch, results, predict_seconds, pending.started)]

    def accept(self, record: dict[str, Any], write_best: Callable[[dict[str, Any]], None] | None = None) -> bool:
        """Keep ``record``; True when it is the best round so far (then, on the rank holding the snapshot,
        ``write_best`` receives it with this controller's state, whose best score is this round's)."""
        self.records.append(record)
        pending, self.pending = self.pending, None
        if record["error"] is not None:
            return False
        score, cases = float(record["score"]), record.get("cases")
        if self.best_score is not None and cases is not None and self.best_cases not in (None, cases):
            self.log(
                f"The scored cases changed ({len(self.best_cases)} -> {len(cases)} cases): the best competition "
                f"score ({self.best_score:.4f} of epoch {self.best_score_epoch}) is not compared with this round's; "
                f"the best restarts with epoch {record['epoch']}",
                also_print_to_console=True,
            )
        elif self.best_score is not None and score <= self.best_score:
            return False
        self.best_score, self.best_score_epoch, self.best_cases = score, int(record["epoch"]), cases
        if write_best is not None and pending is not None and pending.checkpoint:
            state = pending.checkpoint.get(TOPO_STATE_KEY)
            if isinstance(state, dict):
                state["score_rounds"] = self.state_dict()
            write_best(pending.checkpoint)
        return True

    def epoch_end(self, epoch: int, cases: Sequence[str], checkpoint_follows: bool, hooks: RoundHooks) -> None:
        """Every rank, at every epoch end: apply a finished round (awaited only when the next round is due or
        ``checkpoint_follows``: nnU-Net writes checkpoint_latest.pth next), then start this epoch's round if due."""
        due = self.due(epoch)
        for record in self.collect(epoch, must_wait=due or checkpoint_follows):
            self.apply(record, hooks)
        if due:
            done = self.start(epoch, cases, hooks.predict, hooks.reader_class, hooks.snapshot)
            self.log(
                f"Scoring round of epoch {epoch}: predicted {len(done.cases)} validation cases in "
                f"{done.predict_seconds:.1f} s in the training process ({len(cases)} over all ranks; "
                f"{hooks.describe}); the competition metric runs in a background process"
            )

    def apply(self, record: dict[str, Any], hooks: RoundHooks) -> bool:
        """Every rank: log a round's scores at the epoch whose weights were scored, keep checkpoint_best_score.pth
        when it is the best round (rank 0), step a ``val_score`` plateau. True when the round is the best."""
        hooks.log_scores(record)
        best = self.accept(record, hooks.write_best)
        self.log(record_message(record, best, BEST_SCORE_CHECKPOINT), also_print_to_console=True)
        if record["error"] is None:
            hooks.step_plateau(int(record["epoch"]), float(record["score"]))
        return best

    def finish(self, last_epoch: int, hooks: RoundHooks) -> None:
        """Every rank, at the end of training: await the round in flight (each case within its deadline), apply
        it, and stop the scoring process."""
        try:
            for record in self.collect(last_epoch, must_wait=True):
                self.apply(record, hooks)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop the scoring process now (a running case is killed, not awaited)."""
        self.pool.shutdown()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "records": [dict(r) for r in self.records],
            "best_score": self.best_score,
            "best_score_epoch": self.best_score_epoch,
            "best_cases": self.best_cases,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = [dict(r) for r in state.get("records", [])]
        self.best_score = state.get("best_score")
        self.best_score_epoch = state.get("best_score_epoch")
        self.best_cases = state.get("best_cases")

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
        assert epoch is not None  # the checkpoint's own epoch, or the one of the round looked up above
        if self.best_score is None or float(score) > self.best_score:
            self.log(f"Best competition score so far: {float(score):.4f} of epoch {epoch} (from {path})")
            self.best_score, self.best_score_epoch = float(score), int(epoch)
            self.best_cases = saved.get("best_cases", self.best_cases)


def record_message(record: dict[str, Any], best: bool, best_file: str) -> str:
    """The log line of an applied round (a failed one: why, and what to change)."""
    epoch = record["epoch"]
    if record["error"] is not None:
        return (
            f"WARNING: the competition scoring of epoch {epoch} failed ({record['error']}); val_score stays NaN for "
            "that epoch, the round is not compared with the best score and the plateau is not stepped (if the "
            "scoring process ran out of memory, lower score_num_cases; if a case ran past score_case_timeout_s and "
            "was killed, raise it)"
        )
    return (
        f"Competition score of epoch {epoch} ({record['num_cases']} validation cases; predicted in "
        f"{record['predict_seconds']:.1f} s in the training process, metric {record['metric_seconds']:.1f} s in "
        f"the background, applied after epoch {record['applied_epoch']}): score {record['score']:.4f}, topo "
        f"{record['topo']:.4f}, surface Dice {record['surface_dice']:.4f}, VOI {record['voi_score']:.4f}"
        + (f"; new best -> {best_file}" if best else "")
    )
