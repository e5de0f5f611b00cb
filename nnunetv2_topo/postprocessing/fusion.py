"""Fusion of several models' foreground maps for one case: weighted mean of binary logits or of probabilities.

The binary logit of a two-class softmax is ``l1 - l0 = log(p1 / p0)``; from probabilities it is computed with
:func:`probability_to_logit` (clamped at ``±LOGIT_CLAMP`` so that p = 0 or 1 stays finite). Work is done one
z-slice at a time, so fusing a case holds one float32 accumulator plus the map being added (and slice-sized
temporaries).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from nnunetv2_topo.errors import TopoError


class FusionError(TopoError, ValueError):
    """Fusion weights or maps that cannot be fused (the message names the value and the fix)."""


__all__ = [
    "FUSION_MODES",
    "LOGIT_CLAMP",
    "Fusion",
    "FusionError",
    "check_fusion_weights",
    "logit_to_probability",
    "probability_to_logit",
]

FUSION_MODES = ("logit", "prob")
LOGIT_CLAMP = 15.0


def probability_to_logit(p1: np.ndarray) -> np.ndarray:
    """float32 ``log(p1 / (1 - p1))`` clamped to ``±LOGIT_CLAMP``."""
    p = np.asarray(p1, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        logit = np.log(p) - np.log1p(-p)
    return np.clip(logit, -LOGIT_CLAMP, LOGIT_CLAMP).astype(np.float32)


def logit_to_probability(logit: np.ndarray) -> np.ndarray:
    """float32 sigmoid (exact at large magnitudes, no overflow warning)."""
    x = np.asarray(logit, np.float64)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


def check_fusion_weights(weights: Sequence[float] | None, n: int) -> tuple[float, ...]:
    """Weights for ``n`` inputs: ``None`` -> equal weights; else exactly ``n`` finite weights >= 0, positive sum."""
    if n < 1:
        raise FusionError(f"fusion needs at least one input, got {n}")
    if weights is None:
        return (1.0,) * n
    try:
        values = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        raise FusionError(f"fusion weights must be numbers, got {list(weights)!r}") from None
    if len(values) != n:
        raise FusionError(f"{len(values)} fusion weight(s) given for {n} input(s); give one weight per input, in order")
    bad = [w for w in values if not math.isfinite(w) or w < 0]
    if bad:
        raise FusionError(f"fusion weights must be finite and >= 0, got {bad[0]}")
    if sum(values) <= 0:
        raise FusionError("fusion weights sum to 0; at least one weight must be positive")
    return values


class Fusion:
    """Streaming weighted mean of several models' maps for one case, holding one float32 accumulator.

    mode "logit": weighted mean of the binary logit l1 - l0 (from probabilities: log(p1/p0) clamped at ±15);
    mode "prob": weighted mean of the foreground probability p1. Either way the result is a probability.
    """

    def __init__(self, mode: str = "logit") -> None:
        if mode not in FUSION_MODES:
            raise FusionError(f"fusion mode must be one of {', '.join(FUSION_MODES)}, got {mode!r}")
        self.mode = mode
        self._sum: np.ndarray | None = None
        self._weight = 0.0
        self.count = 0

    def _accumulate(self, volume: np.ndarray, weight: float, convert) -> None:
        volume = np.asarray(volume)
        if volume.ndim != 3:
            raise FusionError(f"expected a 3-D map (Z, Y, X), got shape {volume.shape}")
        weight = float(weight)
        if not math.isfinite(weight) or weight < 0:
            raise FusionError(f"fusion weight must be finite and >= 0, got {weight}")
        if self._sum is None:
            self._sum = np.zeros(volume.shape, np.float32)
        elif volume.shape != self._sum.shape:
            raise FusionError(f"shape {volume.shape} differs from the first map's {self._sum.shape}")
        for z in range(volume.shape[0]):
            self._sum[z] += np.float32(weight) * convert(volume[z])
        self._weight += weight
        self.count += 1

    def add_probability(self, p1: np.ndarray, weight: float = 1.0) -> None:
        """Add one model's foreground probability ``p1`` (Z, Y, X) in [0, 1]."""
        convert = probability_to_logit if self.mode == "logit" else (lambda a: np.asarray(a, np.float32))
        self._accumulate(p1, weight, convert)

    def add_logit(self, logit: np.ndarray, weight: float = 1.0) -> None:
        """Add one model's binary logit ``l1 - l0`` (Z, Y, X)."""
        if self.mode == "logit":
            convert = lambda a: np.clip(np.asarray(a, np.float32), -LOGIT_CLAMP, LOGIT_CLAMP)  # noqa: E731
        else:
            convert = logit_to_probability
        self._accumulate(logit, weight, convert)

    def probability(self) -> np.ndarray:
        """The fused foreground probability, float32 (Z, Y, X)."""
        if self._sum is None:
            raise FusionError("nothing to fuse: add at least one map first")
        if self._weight <= 0:
            raise FusionError("fusion weights sum to 0; at least one weight must be positive")
        out = np.empty_like(self._sum)
        for z in range(out.shape[0]):
            mean = self._sum[z] / np.float32(self._weight)
            out[z] = logit_to_probability(mean) if self.mode == "logit" else np.clip(mean, 0.0, 1.0)
        return out
