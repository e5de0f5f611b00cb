"""How sure is a choice of ``tune``: paired differences over cases, bootstrap intervals, how often the same choice
wins in bootstrap resamples, and cross-validated gains. Pure functions of per-case score arrays (no metric runs).

- **Paired difference** of two settings: per case, score(A) − score(B); its mean is the gain of A over B.
- **Bootstrap 95 % interval**: the cases are resampled with replacement ``B`` times (seeded); the interval holds the
  2.5 and 97.5 percentiles of the mean difference. An interval that includes 0 means the cases do not tell A from
  B apart: the choice is within noise.
- **Win rate**: per resample, the best of a coordinate's groups of settings (each group scored by its best setting
  on the resampled cases, so a group's threshold is chosen again); the share of resamples in which the chosen
  group is not beaten (a tie counts as a win: two values that give the same masks cannot be told apart).
- **Cross-validated gain**: the cases are dealt into folds (case ``i`` to fold ``i % k``); on each fold the winner
  and the runner-up are chosen on the other folds' cases (again re-choosing within each group) and their
  difference is measured on the fold's cases; the mean over all cases, with its bootstrap interval. A positive
  interval says the ordering found on some cases holds on others.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

BOOTSTRAP_RESAMPLES = 2000
SEED = 0


def resample_counts(n_cases: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = SEED) -> np.ndarray:
    """``(resamples, n_cases)``: how many times each case is drawn in each bootstrap resample (seeded)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_cases, np.full(n_cases, 1.0 / n_cases), size=resamples).astype(float)


def bootstrap_interval(
    differences: npt.ArrayLike, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """The 95 % percentile interval of the mean of ``differences`` over case resamples."""
    d = np.asarray(differences, float)
    if d.size == 0:
        raise ValueError("no differences to bootstrap")
    means = resample_counts(d.size, resamples, seed) @ d / d.size
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def paired(a: npt.ArrayLike, b: npt.ArrayLike, resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """Per-case ``a - b``, its mean, the 95 % bootstrap interval and whether that interval includes 0."""
    d = np.asarray(a, float) - np.asarray(b, float)
    lo, hi = bootstrap_interval(d, resamples)
    return {"per_case": d.tolist(), "mean": float(d.mean()), "ci": [lo, hi], "includes_zero": bool(lo <= 0 <= hi)}


def _group_best(scores: np.ndarray, groups: Sequence[int], weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of case ``weights`` (R, n): each group's best mean ``(R, G)`` and which setting gives it."""
    means = weights @ scores.T / weights.sum(axis=1, keepdims=True)  # (R, S)
    group_of = np.asarray(groups)
    n_groups = int(group_of.max()) + 1
    best = np.full((means.shape[0], n_groups), -np.inf)
    arg = np.zeros((means.shape[0], n_groups), int)
    for s in range(means.shape[1]):
        g = group_of[s]
        better = means[:, s] > best[:, g]
        best[better, g] = means[better, s]
        arg[better, g] = s
    return best, arg


def win_rate(
    scores: np.ndarray, groups: Sequence[int], chosen: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = SEED
) -> float:
    """Share of bootstrap resamples of the cases in which group ``chosen`` is not beaten by another group.

    ``scores``: (settings, cases); ``groups[s]``: the group (value of the coordinate) of setting ``s``."""
    scores = np.asarray(scores, float)
    best, _ = _group_best(scores, groups, resample_counts(scores.shape[1], resamples, seed))
    return float(np.mean(best[:, chosen] >= best.max(axis=1) - 1e-12))


def folds_of(n_cases: int, folds: int) -> list[np.ndarray]:
    """Case indices of each fold: case ``i`` in fold ``i % k`` (``k`` at most the number of cases)."""
    k = max(2, min(int(folds), n_cases))
    return [np.arange(f, n_cases, k) for f in range(k)]


def cross_validated_gain(
    scores: np.ndarray, groups: Sequence[int], folds: int = 2, resamples: int = BOOTSTRAP_RESAMPLES
) -> dict | None:
    """Held-out difference between the winner and the runner-up chosen on the other folds (module docstring);
    None with fewer than two cases or two groups."""
    scores = np.asarray(scores, float)
    n = scores.shape[1]
    if n < 2 or len(set(groups)) < 2:
        return None
    heldout = np.zeros(n)
    picks = []
    for test in folds_of(n, folds):
        train = np.ones((1, n))
        train[0, test] = 0
        best, arg = _group_best(scores, groups, train)
        order = np.argsort(-best[0], kind="stable")
        first, second = arg[0, order[0]], arg[0, order[1]]
        heldout[test] = scores[first, test] - scores[second, test]
        picks.append((int(order[0]), int(order[1])))
    lo, hi = bootstrap_interval(heldout, resamples)
    return {
        "mean": float(heldout.mean()),
        "ci": [lo, hi],
        "includes_zero": bool(lo <= 0 <= hi),
        "picks": picks,
        "per_case": heldout.tolist(),
    }
