"""The fields of a leaderboard score result, defined once: their names, the short column titles, the weights of the
three parts, and the result dict every scorer returns (:func:`score_result`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["SCORE_FIELDS", "SCORE_TITLES", "WEIGHTS", "combine_score", "score_result"]

SCORE_FIELDS = ("score", "topo", "surface_dice", "voi_score")
"""The per-case fields that are averaged over cases (the score and its three parts)."""

SCORE_TITLES = {"score": "score", "topo": "topo", "surface_dice": "SD", "voi_score": "VOI"}
"""Short column titles of :data:`SCORE_FIELDS` in tables and plots."""

WEIGHTS = {"topo": 0.30, "surface_dice": 0.35, "voi_score": 0.35}
"""The leaderboard weights of the three parts."""


def combine_score(topo: float, surface_dice: float, voi_score: float) -> float:
    """The leaderboard score from its three parts: the weighted sum (:data:`WEIGHTS`), clipped to [0, 1]."""
    score = WEIGHTS["topo"] * topo + WEIGHTS["surface_dice"] * surface_dice + WEIGHTS["voi_score"] * voi_score
    return float(min(1.0, max(0.0, score)))


def score_result(
    topo: float,
    surface_dice: float,
    voi_split: float,
    voi_merge: float,
    voi_score: float,
    counts: Sequence[Sequence[int]] | np.ndarray,
) -> dict:
    """One volume's result: ``score`` (:func:`combine_score`), ``topo``, ``surface_dice``, ``voi_score``,
    ``voi_split``, ``voi_merge`` as floats and ``counts`` (``{"0": [m, p, g], "1": …, "2": …}``)."""
    return {
        "score": combine_score(topo, surface_dice, voi_score),
        "topo": float(topo),
        "surface_dice": float(surface_dice),
        "voi_score": float(voi_score),
        "voi_split": float(voi_split),
        "voi_merge": float(voi_merge),
        "counts": {str(k): [int(v) for v in counts[k]] for k in range(3)},
    }
