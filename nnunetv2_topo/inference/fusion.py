"""Fusion of several models' probability maps (minimal stand-in for engineer 9a's module, same interface)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FUSION_MODES = ("logit", "prob")
LOGIT_CLAMP = 15.0


def probability_to_logit(p1: np.ndarray) -> np.ndarray:
    p = np.asarray(p1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logit = np.log(p) - np.log1p(-p)
    return np.clip(logit, -LOGIT_CLAMP, LOGIT_CLAMP).astype(np.float32)


def logit_to_probability(logit: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.asarray(logit, dtype=np.float64)))).astype(np.float32)


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
    """Streaming weighted mean of several models' maps for one case (logit or probability space)."""

    def __init__(self, mode: str = "logit") -> None:
        if mode not in FUSION_MODES:
            raise ValueError(f"fusion mode must be one of {', '.join(FUSION_MODES)}, got {mode!r}")
        self.mode = mode
        self._acc: np.ndarray | None = None
        self._weight = 0.0

    def _add(self, x: np.ndarray, weight: float) -> None:
        x = np.asarray(x, dtype=np.float32) * np.float32(weight)
        self._acc = x if self._acc is None else self._acc + x
        self._weight += weight

    def add_probability(self, p1: np.ndarray, weight: float = 1.0) -> None:
        self._add(probability_to_logit(p1) if self.mode == "logit" else p1, weight)

    def add_logit(self, logit: np.ndarray, weight: float = 1.0) -> None:
        self._add(logit if self.mode == "logit" else logit_to_probability(logit), weight)

    def probability(self) -> np.ndarray:
        if self._acc is None or self._weight <= 0:
            raise ValueError("nothing to fuse: add at least one map with a positive weight")
        mean = self._acc / np.float32(self._weight)
        return logit_to_probability(mean) if self.mode == "logit" else mean.astype(np.float32)
