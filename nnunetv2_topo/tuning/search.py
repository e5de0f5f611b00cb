"""Choose the setting (ensemble + post-processing) by the exact competition score: coordinate descent over grids.

Strategy: start from ``start`` (equal weights, the defaults ``PostprocessConfig()``); sweep one axis at a time
(:mod:`nnunetv2_topo.tuning.ensemble`): first the ensemble axes (weights, fusion, each model's checkpoint; every
candidate at each grid threshold, as the fused map's calibration moves with them), then the threshold over its
whole grid, then, in pipeline order, each coordinate of the steps in ``STEP_ORDER`` (hysteresis high threshold, dust
size, 1-voxel plugging with its method, height-map patching, closing radii (z, yx), cavity filling;
:mod:`nnunetv2_topo.tuning.space`), keeping the best each time. Repeat the round until a round changes nothing (at
most ``max_rounds``). Every (setting, case) is scored once; settings that leave a tile of a case unchanged reuse
its Betti-matching counts (see :mod:`nnunetv2_topo.tuning.evaluator`).

Reported beside the in-sample gain (best mean − default mean over the same cases, optimistic: the cases chose the
setting) is a cross-validated one: cases are dealt into ``cv_folds`` folds; for each fold the setting with the best
mean over the *other* folds' cases, among all settings evaluated, is scored on the fold's cases. This reuses the
per-case scores (no extra metric runs). It is still mildly optimistic: the path of the search, hence the set of
candidates, saw every case. :func:`choice_stability` and :func:`without_models` give the intervals of each choice
(:mod:`nnunetv2_topo.tuning.stability`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from nnunetv2_topo.postprocessing.steps import PostprocessConfig
from nnunetv2_topo.tuning import stability
from nnunetv2_topo.tuning.ensemble import Setting, StepAxis, describe_setting, threshold_profile, without
from nnunetv2_topo.tuning.evaluator import RESULT_KEYS, Evaluator
from nnunetv2_topo.tuning.space import Coordinate, no_postprocessing, search_space, try_replace


class _TimeBudgetSpentError(Exception):
    """The time budget ran out before the search converged (control flow: ``tune`` stops and keeps the best so far;
    never reaches a user)."""


def step_axes(space: Sequence[Coordinate] | None = None) -> list[StepAxis]:
    return [StepAxis(c) for c in (search_space() if space is None else space)]


def coordinate_descent(
    evaluator: Evaluator,
    start: Setting | PostprocessConfig,
    space: Sequence[Coordinate] | None = None,
    max_rounds: int = 3,
    deadline: float | None = None,
    on_best: Callable[[Setting, float], None] | None = None,
    axes: Sequence | None = None,
) -> Setting:
    """The best setting found by sweeping one axis at a time (see the module docstring): ``axes`` (default: the
    step axes of ``space``, the post-processing search space).

    ``deadline`` (``time.monotonic()`` value): raises :class:`_TimeBudgetSpentError` before a sweep that would start
    after it. ``on_best(setting, score)`` is called with the starting point and with every improvement.
    """
    axes = step_axes(space) if axes is None else axes
    best = evaluator.key(start)
    best_score = evaluator.evaluate([best])[0]
    if on_best is not None:
        on_best(best, best_score)
    for _ in range(max_rounds):
        changed = False
        for axis in axes:
            if deadline is not None and time.monotonic() > deadline:
                raise _TimeBudgetSpentError(f"time budget spent before sweeping {axis.name}")
            candidates = [s for _, group in axis.groups(best) for s in group]
            scores = evaluator.evaluate(candidates)
            i = int(np.argmax(scores))
            if scores[i] > best_score and candidates[i] != best:
                best, best_score, changed = candidates[i], scores[i], True
                if on_best is not None:
                    on_best(best, best_score)
        if not changed:
            break
    return best


def cross_validate(evaluator: Evaluator, baseline: Setting | PostprocessConfig, folds: int = 2) -> dict | None:
    """Held-out score of the setting chosen on the other folds (see the module docstring), its per-case gain over
    ``baseline`` with a bootstrap interval; ``None`` with fewer than two cases. Case ``i`` (in sorted order) goes to
    fold ``i % folds``."""
    cases = evaluator.cases
    candidates = evaluator.complete
    baseline = evaluator.key(baseline)
    if len(cases) < 2 or not candidates or baseline not in candidates:
        return None
    k = max(2, min(int(folds), len(cases)))
    heldout: dict[str, float] = {}
    chosen = []
    for f in range(k):
        test = cases[f::k]
        train = [c for c in cases if c not in test]
        pick = max(candidates, key=lambda c: evaluator.mean(c, cases=train))
        chosen.append(describe_setting(pick, with_fusion=pick.fusion != evaluator.base))
        for c in test:
            heldout[c] = evaluator.results[pick][c]["score"]
    held = np.array([heldout[c] for c in cases])
    gain = stability.paired(held, evaluator.per_case(baseline))
    tuned = float(held.mean())
    base = evaluator.mean(baseline)
    return {
        "folds": k,
        "heldout_score": tuned,
        "baseline_score": base,
        "gain": tuned - base,
        "gain_ci": gain["ci"],
        "gain_includes_zero": gain["includes_zero"],
        "chosen": chosen,
    }


@dataclass
class AblationRow:
    label: str
    config: PostprocessConfig
    means: dict[str, float] = field(default_factory=dict)


def ablation(
    evaluator: Evaluator, best: Setting | PostprocessConfig, start: PostprocessConfig | None = None
) -> list[AblationRow]:
    """none → + each coordinate of ``best`` that differs from ``start`` (default: no post-processing),
    cumulatively, in ``STEP_ORDER``; every row with ``best``'s fusion."""
    fusion = best.fusion if isinstance(best, Setting) else None
    best = best.steps if isinstance(best, Setting) else best
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
    keys = [r.config if fusion is None else Setting(fusion, r.config) for r in rows]
    evaluator.evaluate(keys)
    for row, key in zip(rows, keys, strict=True):
        row.means = {k: evaluator.mean(key, k) for k in RESULT_KEYS}
    return rows


def choice_stability(evaluator: Evaluator, axes: Sequence, best: Setting, folds: int = 2) -> list[dict]:
    """Per axis: the chosen value and the runner-up (the best other value, each at its best threshold on an
    ensemble axis), their paired difference with its bootstrap interval, the chosen value's bootstrap win rate and
    the cross-validated gain of winner over runner-up (:mod:`nnunetv2_topo.tuning.stability`). Axes whose groups
    were not all scored (an interrupted search) are scored now."""
    rows = []
    for axis in axes:
        groups = axis.groups(best)
        if len(groups) < 2:
            continue
        settings = [s for _, g in groups for s in g]
        evaluator.evaluate(settings)
        labels = [label for label, _ in groups]
        index = [gi for gi, (_, g) in enumerate(groups) for _ in g]
        scores = np.array([evaluator.per_case(s) for s in settings])
        means = scores.mean(axis=1)
        chosen = next((gi for gi, (_, g) in enumerate(groups) if best in g), None)
        if chosen is None:
            continue
        rep: dict[int, int] = {}
        for s, gi in enumerate(index):
            if gi not in rep or means[s] > means[rep[gi]]:
                rep[gi] = s
        runner = max((gi for gi in rep if gi != chosen), key=lambda gi: means[rep[gi]])
        diff = stability.paired(evaluator.per_case(best), scores[rep[runner]])
        rows.append(
            {
                "axis": axis.name,
                "chosen": labels[chosen],
                "runner_up": labels[runner],
                "runner_up_setting": describe_setting(settings[rep[runner]]),
                "score_chosen": evaluator.mean(best),
                "score_runner_up": float(means[rep[runner]]),
                "difference": diff,
                "win_rate": stability.win_rate(scores, index, chosen),
                "cross_validated": stability.cross_validated_gain(scores, index, folds),
            }
        )
    return rows


def without_models(evaluator: Evaluator, best: Setting) -> list[dict]:
    """Per input taking part in ``best``: the best score without it (weight 0, the threshold chosen again on the
    grid, the other steps kept) and the paired difference to ``best`` with its interval."""
    rows = []
    for k, name in enumerate(best.fusion.inputs):
        fusion = without(best.fusion, k)
        if fusion is None:
            continue
        profile = threshold_profile(fusion, best.steps)
        scores = evaluator.evaluate(profile)
        pick = profile[int(np.argmax(scores))]
        rows.append(
            {
                "input": name,
                "index": k,
                "score_without": evaluator.mean(pick),
                "threshold_without": pick.steps.threshold,
                "difference": stability.paired(evaluator.per_case(best), evaluator.per_case(pick)),
            }
        )
    return rows
