"""STAND-IN for engineer 9a's module (contract signatures only); replaced by 9a's at merge."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FUSION_MODES = ("logit", "prob")
LOGIT_CLAMP = 15.0


def probability_to_logit(p1: np.ndarray) -> np.ndarray:
    p = np.asarray(p1, np.float64)
    with np.errstate(divide="ignore"):
        logit = np.log(p) - np.log1p(-p)
    return np.clip(logit, -LOGIT_CLAMP, LOGIT_CLAMP).astype(np.float32)


def logit_to_probability(logit: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(np.asarray(logit, np.float32)).astype(np.float32)


def check_fusion_weights(weights: Sequence[float] | None, n: int) -> tuple[float, ...]:
    if weights is None:
        return (1.0,) * n
    w = tuple(float(x) for x in weights)
    if len(w) != n:
        raise ValueError(f"{len(w)} fusion weight(s) given for {n} input(s); give exactly one weight per input")
    if not all(np.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"fusion weights must be finite, >= 0 and have a positive sum, got {list(w)}")
    return w


class Fusion:
    def __init__(self, mode: str = "logit") -> None:
        if mode not in FUSION_MODES:
            raise ValueError(f"fusion mode must be one of {FUSION_MODES}, got {mode!r}")
        self.mode = mode
        self._sum: np.ndarray | None = None
        self._weight = 0.0

    def _add(self, value: np.ndarray, weight: float) -> None:
        if self._sum is None:
            self._sum = np.zeros(value.shape, np.float32)
        self._sum += np.float32(weight) * value
        self._weight += float(weight)

    def add_probability(self, p1: np.ndarray, weight: float = 1.0) -> None:
        p1 = np.asarray(p1, np.float32)
        self._add(probability_to_logit(p1) if self.mode == "logit" else p1, weight)

    def add_logit(self, logit: np.ndarray, weight: float = 1.0) -> None:
        logit = np.asarray(logit, np.float32)
        self._add(logit if self.mode == "logit" else logit_to_probability(logit), weight)

    def probability(self) -> np.ndarray:
        if self._sum is None:
            raise ValueError("nothing to fuse: add at least one map first")
        mean = self._sum / np.float32(self._weight)
        return logit_to_probability(mean) if self.mode == "logit" else mean.astype(np.float32)
