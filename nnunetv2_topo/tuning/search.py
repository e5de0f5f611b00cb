"""Choose the post-processing configuration by the exact competition score: coordinate descent over grids.

Strategy: start from the defaults (``PostprocessConfig()``); sweep the threshold over its whole grid with every
other step fixed and keep the best; then, in pipeline order, sweep each coordinate's grid the same way in ``STEP_ORDER``
(hysteresis high threshold, dust size, 1-voxel plugging with its method, height-map patching, closing radii
(z, yx), cavity filling; :mod:`nnunetv2_topo.tuning.space`). Repeat the round until a round changes nothing (at most
``max_rounds``). Every (configuration, case) is scored once; configurations that leave a tile of a case unchanged
reuse its Betti-matching counts (see :mod:`nnunetv2_topo.tuning.evaluator`).

Reported beside the in-sample gain (best mean − default mean over the same cases, optimistic: the cases chose the
configuration) is a cross-validated one: cases are dealt into ``cv_folds`` folds; for each fold the configuration
with the best mean over the *other* folds' cases, among all configurations evaluated, is scored on the fold's
cases. This reuses the per-case scores (no extra metric runs). It is still mildly optimistic: the path of the
search, hence the set of candidates, saw every case.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from nnunetv2_topo.postprocessing.steps import PostprocessConfig
from nnunetv2_topo.tuning.evaluator import RESULT_KEYS, Evaluator
from nnunetv2_topo.tuning.space import Coordinate, describe, no_postprocessing, search_space, try_replace


class TimeBudgetSpentError(Exception):
    """The time budget ran out before the search converged."""


def coordinate_descent(
    evaluator: Evaluator,
    start: PostprocessConfig,
    space: Sequence[Coordinate] | None = None,
    max_rounds: int = 3,
    deadline: float | None = None,
    on_best: Callable[[PostprocessConfig, float], None] | None = None,
) -> PostprocessConfig:
    """The best configuration found by sweeping one field's grid at a time (see the module docstring).

    ``deadline`` (``time.monotonic()`` value): raises :class:`TimeBudgetSpentError` before a sweep that would start
    after it. ``on_best(config, score)`` is called with the starting point and with every improvement.
    """
    space = search_space() if space is None else space
    best = start
    best_score = evaluator.evaluate([start])[0]
    if on_best is not None:
        on_best(best, best_score)
    for _ in range(max_rounds):
        changed = False
        for coordinate in space:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeBudgetSpentError(f"time budget spent before sweeping {', '.join(coordinate.fields)}")
            candidates = [
                c for v in coordinate.settings if (c := try_replace(best, **coordinate.changes(v))) is not None
            ]
            scores = evaluator.evaluate(candidates)
            i = int(np.argmax(scores))
            if scores[i] > best_score and candidates[i] != best:
                best, best_score, changed = candidates[i], scores[i], True
                if on_best is not None:
                    on_best(best, best_score)
        if not changed:
            break
    return best


def cross_validate(evaluator: Evaluator, baseline: PostprocessConfig, folds: int = 2) -> dict | None:
    """Held-out score of the configuration chosen on the other folds (see the module docstring); ``None`` with
    fewer than two cases. Case ``i`` (in sorted order) goes to fold ``i % folds``."""
    cases = evaluator.cases
    candidates = evaluator.complete
    if len(cases) < 2 or not candidates or baseline not in candidates:
        return None
    k = max(2, min(int(folds), len(cases)))
    heldout: dict[str, float] = {}
    chosen = []
    for f in range(k):
        test = cases[f::k]
        train = [c for c in cases if c not in test]
        pick = max(candidates, key=lambda c: evaluator.mean(c, cases=train))
        chosen.append(describe(pick))
        for c in test:
            heldout[c] = evaluator.results[pick][c]["score"]
    tuned = float(np.mean([heldout[c] for c in cases]))
    base = evaluator.mean(baseline)
    return {"folds": k, "heldout_score": tuned, "baseline_score": base, "gain": tuned - base, "chosen": chosen}


@dataclass
class AblationRow:
    label: str
    config: PostprocessConfig
    means: dict[str, float] = field(default_factory=dict)


def ablation(
    evaluator: Evaluator, best: PostprocessConfig, start: PostprocessConfig | None = None
) -> list[AblationRow]:
    """none → + each coordinate of ``best`` that differs from ``start`` (default: no post-processing),
    cumulatively, in ``STEP_ORDER``."""
    current = no_postprocessing() if start is None else start
    rows = [AblationRow(f"none (threshold {current.threshold})", current)]
    for coordinate in search_space():
        setting = coordinate.setting_of(best)
        if setting == coordinate.setting_of(current):
            continue
        nxt = try_replace(current, **coordinate.changes(setting))
        if nxt is None:
            continue
        current = nxt
        rows.append(AblationRow(f"+ {coordinate.label(setting)}", current))
    evaluator.evaluate([r.config for r in rows])
    for row in rows:
        row.means = {k: evaluator.mean(row.config, k) for k in RESULT_KEYS}
    return rows
