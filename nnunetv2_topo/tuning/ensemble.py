"""The ensemble half of ``tune``'s search: which models take part, their weights, the fusion and each model's
checkpoint, searched jointly with the post-processing steps.

A :class:`Setting` is one point of the joint search: the fusion (a :class:`FusionSpec`: weights, one per input, 0 =
not taking part; ``logit``/``prob``; per input the checkpoint whose out-of-fold predictions are used) and the
post-processing steps. The search sweeps one *axis* at a time (:mod:`nnunetv2_topo.tuning.search`). An axis
offers groups of settings, one group per value of its coordinate; a group's score is the best of its settings.

- A **step axis** (threshold, dust size, ...: :mod:`.space`) changes one coordinate of the steps: one setting per
  group.
- An **ensemble axis** (``weights``, ``fusion``, ``checkpoint <input>``) changes the fusion; each of its groups
  holds that fusion at every threshold of the grid (the *threshold profile*), because the fused map's calibration,
  hence its best threshold, moves with the weights, the fusion and the checkpoint.

Weights: the simplex grid of step ``1/weight_grid`` (every model from 0 to 1; with 3 models and grid 4: 15
points) plus equal weights over every subset of the models (equal weights of all three are not on that grid). When
that exceeds ``MAX_WEIGHT_OPTIONS`` (many models), a coordinate search instead: one model's weight set to each grid
level, the others rescaled to keep the sum, plus equal weights.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

from nnunetv2_topo.postprocessing.config_file import FusionSpec
from nnunetv2_topo.postprocessing.fusion import FUSION_MODES
from nnunetv2_topo.postprocessing.steps import PostprocessConfig
from nnunetv2_topo.tuning.space import THRESHOLDS, Coordinate, describe, try_replace

MAX_WEIGHT_OPTIONS = 40
"""Above this many simplex-grid points (with equal-weight subsets), the weights are searched one model at a time."""

DEFAULT_WEIGHT_GRID = 4


@dataclass(frozen=True)
class Setting:
    """One point of the joint search: how the inputs are fused and how the fused map is post-processed."""

    fusion: FusionSpec
    steps: PostprocessConfig


@dataclass(frozen=True)
class EnsembleSpace:
    """What of the ensemble ``tune`` searches: ``weights`` (else fixed at the start's), ``fusion`` (logit/prob,
    else fixed), per input the checkpoints to choose from (``checkpoints[i]``; one entry = fixed)."""

    weights: bool = True
    fusion: bool = True
    checkpoints: tuple[tuple[str | None, ...], ...] = ()
    weight_grid: int = DEFAULT_WEIGHT_GRID

    def __post_init__(self) -> None:
        if isinstance(self.weight_grid, bool) or not isinstance(self.weight_grid, int) or self.weight_grid < 1:
            raise ValueError(f"weight_grid must be an integer >= 1, got {self.weight_grid!r}")


def _norm(weights: Sequence[float]) -> tuple[float, ...]:
    total = float(sum(weights))
    return tuple(round(w / total, 4) for w in weights)


def equal_subsets(n: int) -> list[tuple[float, ...]]:
    """Equal weights over every non-empty subset of ``n`` models (all of them first)."""
    out = []
    for size in range(n, 0, -1):
        for subset in itertools.combinations(range(n), size):
            out.append(_norm([1.0 if i in subset else 0.0 for i in range(n)]))
    return out


def simplex_grid(n: int, steps: int) -> list[tuple[float, ...]]:
    """Every weight vector of ``n`` models with weights in multiples of ``1/steps`` summing to 1."""
    out = []
    for bars in itertools.combinations(range(steps + n - 1), n - 1):
        parts, last = [], -1
        for b in (*bars, steps + n - 1):
            parts.append(b - last - 1)
            last = b
        out.append(_norm(parts))
    return out


def weight_options(current: Sequence[float], steps: int, max_options: int = MAX_WEIGHT_OPTIONS) -> list:
    """The weight vectors of one sweep of the weights axis (see the module docstring), ``current`` included."""
    n = len(current)
    grid = list(dict.fromkeys(equal_subsets(n) + simplex_grid(n, steps)))
    if len(grid) <= max_options:
        return list(dict.fromkeys([*grid, _norm(current)]))
    out = [_norm(current), _norm([1.0] * n)]
    rest_total = [sum(current) - w for w in current]
    for k in range(n):
        for level in range(steps + 1):
            share = level / steps
            others = [w / rest_total[k] if rest_total[k] > 0 else 1.0 / (n - 1) for w in current]
            w = [share if i == k else (1 - share) * others[i] for i in range(n)]
            if sum(w) > 0:
                out.append(_norm(w))
    return list(dict.fromkeys(out))


def threshold_profile(fusion: FusionSpec, steps: PostprocessConfig) -> list[Setting]:
    """``fusion`` with ``steps`` at every grid threshold valid with its hysteresis."""
    configs = [try_replace(steps, threshold=t) for t in THRESHOLDS]
    return [Setting(fusion, c) for c in configs if c is not None]


def used(fusion: FusionSpec) -> int:
    """How many inputs take part (weight > 0)."""
    return len(fusion.inputs) if fusion.weights is None else sum(w > 0 for w in fusion.weights)


@dataclass(frozen=True)
class StepAxis:
    """One coordinate of the post-processing steps (:class:`~nnunetv2_topo.tuning.space.Coordinate`)."""

    coordinate: Coordinate

    @property
    def name(self) -> str:
        return ", ".join(self.coordinate.fields)

    def groups(self, best: Setting) -> list[tuple[str, list[Setting]]]:
        out = []
        for value in self.coordinate.settings:
            config = try_replace(best.steps, **self.coordinate.changes(value))
            if config is not None:
                out.append((self.coordinate.label(value), [Setting(best.fusion, config)]))
        return out

    def value_of(self, setting: Setting) -> str:
        return self.coordinate.label(self.coordinate.setting_of(setting.steps))


@dataclass(frozen=True)
class EnsembleAxis:
    """``weights``, ``fusion`` or ``checkpoint`` of input ``index``: each group at every grid threshold."""

    kind: str
    index: int = -1
    options: tuple = ()
    weight_grid: int = DEFAULT_WEIGHT_GRID

    @property
    def name(self) -> str:
        return f"checkpoint of input {self.index + 1}" if self.kind == "checkpoint" else self.kind

    def _fusions(self, fusion: FusionSpec) -> list[FusionSpec]:
        if self.kind == "weights":
            current = fusion.weights or (1.0,) * len(fusion.inputs)
            return [replace(fusion, weights=w) for w in weight_options(current, self.weight_grid)]
        if self.kind == "fusion":
            return [replace(fusion, mode=m) for m in FUSION_MODES] if used(fusion) > 1 else [fusion]
        assert fusion.checkpoints is not None, "tune_postprocessing starts from the first checkpoint of each input"
        names = list(fusion.checkpoints)
        out = []
        for option in self.options:
            names[self.index] = option
            out.append(replace(fusion, checkpoints=tuple(names)))
        return out

    def groups(self, best: Setting) -> list[tuple[str, list[Setting]]]:
        return [(self.label(f), threshold_profile(f, best.steps)) for f in self._fusions(best.fusion)]

    def label(self, fusion: FusionSpec) -> str:
        if self.kind == "weights":
            return "weights " + " ".join(f"{w:g}" for w in fusion.weights or (1.0,) * len(fusion.inputs))
        if self.kind == "fusion":
            return f"fusion {fusion.mode}"
        assert fusion.checkpoints is not None, "tune_postprocessing starts from the first checkpoint of each input"
        return f"{fusion.checkpoints[self.index]}"

    def value_of(self, setting: Setting) -> str:
        return self.label(setting.fusion)


def ensemble_axes(start: FusionSpec, space: EnsembleSpace | None) -> list[EnsembleAxis]:
    """The ensemble axes searched from ``start`` (none without ``space`` or with one input)."""
    if space is None:
        return []
    axes = []
    n = len(start.inputs)
    if space.weights and n > 1:
        axes.append(EnsembleAxis("weights", weight_grid=space.weight_grid))
    if space.fusion and n > 1:
        axes.append(EnsembleAxis("fusion"))
    for i, options in enumerate(space.checkpoints):
        if len(options) > 1:
            axes.append(EnsembleAxis("checkpoint", i, tuple(options)))
    return axes


def describe_fusion(fusion: FusionSpec) -> str:
    """``weights 0.5 0.5 0, logit`` (plus the checkpoints that are not the final one)."""
    weights = fusion.weights or (1.0,) * max(1, len(fusion.inputs))
    text = "weights " + " ".join(f"{w:g}" for w in weights) + f", {fusion.mode}"
    if fusion.checkpoints and any(c not in (None, "checkpoint_final.pth") for c in fusion.checkpoints):
        text += ", checkpoints " + " ".join(str(c) for c in fusion.checkpoints)
    return text


def describe_setting(setting: Setting, with_fusion: bool = True) -> str:
    steps = describe(setting.steps)
    return f"{describe_fusion(setting.fusion)}; {steps}" if with_fusion else steps


def without(fusion: FusionSpec, k: int) -> FusionSpec | None:
    """``fusion`` with input ``k`` left out (weight 0), or None when it takes no part or is the only one."""
    weights = list(fusion.weights or (1.0,) * len(fusion.inputs))
    if weights[k] <= 0 or sum(w > 0 for w in weights) < 2:
        return None
    weights[k] = 0.0
    return replace(fusion, weights=_norm(weights))
