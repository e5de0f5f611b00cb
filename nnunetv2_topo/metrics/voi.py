"""Variation of information between the 26-connected components of prediction and ground truth.

Components are labelled separately in each mask (background keeps label 0); the entropies (log base 2) are taken
over the voxels of the union of both foregrounds only. ``split = H(pred | gt)``, ``merge = H(gt | pred)``,
``VOI_score = 1 / (1 + alpha * (split + merge))`` with ``alpha = 0.3``; an empty union scores 1.
"""

from __future__ import annotations

from typing import Literal

import cc3d
import numpy as np

VOI_ALPHA = 0.3


def _entropy(counts: np.ndarray, n: int) -> float:
    p = counts[counts > 0].astype(np.float64) / n
    return float(-(p * np.log2(p)).sum())


def _joint_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Counts of the distinct (a, b) label pairs (both non-negative integer arrays)."""
    nb = int(b.max()) + 1
    key = a.astype(np.int64) * nb + b.astype(np.int64)
    if (int(a.max()) + 1) * nb <= max(4 * key.size, 1 << 20):
        counts = np.bincount(key)
        return counts[counts > 0]
    return np.unique(key, return_counts=True)[1]


def voi(pred: np.ndarray, gt: np.ndarray, connectivity: Literal[6, 18, 26] = 26) -> tuple[float, float]:
    """``(split, merge)`` in bits for two 3-D binary masks."""
    pred = np.ascontiguousarray(pred, dtype=bool)
    gt = np.ascontiguousarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"voi needs two masks of equal shape, got {pred.shape} and {gt.shape}")
    union = pred | gt
    n = int(np.count_nonzero(union))
    if n == 0:
        return 0.0, 0.0
    lp = cc3d.connected_components(pred, connectivity=connectivity)[union]
    lg = cc3d.connected_components(gt, connectivity=connectivity)[union]
    h_joint = _entropy(_joint_counts(lg, lp), n)
    h_gt = _entropy(np.bincount(lg), n)
    h_pred = _entropy(np.bincount(lp), n)
    split = max(h_joint - h_gt, 0.0)
    merge = max(h_joint - h_pred, 0.0)
    return split, merge


def voi_score(split: float, merge: float, alpha: float = VOI_ALPHA) -> float:
    """``1 / (1 + alpha * (split + merge))``."""
    return 1.0 / (1.0 + alpha * (split + merge))
