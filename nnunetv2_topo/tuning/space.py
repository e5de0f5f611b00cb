"""The search space of ``tune``: one grid per post-processing field, in the pipeline's step order.

Each grid lists the "off" value first (the ablation's starting point). A grid is used only when
:class:`~nnunetv2_topo.postprocessing.PostprocessConfig` has that field, so steps added to the dataclass later
(``patch_holes``, a ``(z, yx)`` closing radius) join the search as soon as they exist.
"""

from __future__ import annotations

from dataclasses import fields, replace

from nnunetv2_topo.postprocessing.steps import STEP_ORDER, PostprocessConfig

ARGMAX_THRESHOLD = 0.5
"""Two-class argmax = foreground probability above 0.5: the threshold of the "none" row."""

THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7)

_GRIDS: dict[str, tuple] = {
    "hysteresis_high": (None, 0.5, 0.6, 0.7, 0.8, 0.9),
    "min_component_size": (0, 16, 64, 256, 1024, 4096),
    "plug_holes": (False, True),
    "patch_holes": (0, 64, 512),
    "fill_holes": (False, True),
}
_CLOSING_INT = (0, 1, 2)
_CLOSING_ZYX = ((0, 0), (1, 1), (2, 1), (3, 2))


def search_space() -> dict[str, tuple]:
    """``{field: candidate values}`` in search order: threshold first, then the steps in pipeline order."""
    names = [f.name for f in fields(PostprocessConfig)]
    order = ["threshold"] + [s for s in STEP_ORDER if s != "threshold"] + [n for n in names if n not in STEP_ORDER]
    space: dict[str, tuple] = {}
    for name in order:
        if name not in names or name in space:
            continue
        if name == "threshold":
            space[name] = THRESHOLDS
        elif name == "closing_radius":
            space[name] = _CLOSING_ZYX if isinstance(PostprocessConfig().closing_radius, tuple) else _CLOSING_INT
        elif name in _GRIDS:
            space[name] = _GRIDS[name]
    return space


def try_replace(config: PostprocessConfig, **changes) -> PostprocessConfig | None:
    """``replace(config, **changes)``, or ``None`` when the result is not a valid configuration."""
    try:
        return replace(config, **changes)
    except ValueError:
        return None


def no_postprocessing() -> PostprocessConfig:
    """Threshold 0.5 (argmax) with every searched step off: the ablation's first row."""
    off = {name: values[0] for name, values in search_space().items() if name != "threshold"}
    return replace(PostprocessConfig(), threshold=ARGMAX_THRESHOLD, **off)


def describe(config: PostprocessConfig, reference: PostprocessConfig | None = None) -> str:
    """``field=value`` for the fields that differ from ``reference`` (all searched fields when ``None``)."""
    parts = []
    for name in search_space():
        value = getattr(config, name)
        if reference is None or value != getattr(reference, name):
            parts.append(f"{name}={value}")
    return ", ".join(parts) if parts else "(same)"
