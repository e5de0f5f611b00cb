"""The search space of ``tune``: one grid per coordinate, in the pipeline's step order (``STEP_ORDER``).

A coordinate is a set of :class:`~nnunetv2_topo.postprocessing.PostprocessConfig` fields changed together, with
its candidate settings; the first setting is "off" (the ablation's starting point). Coordinates, by step:

- ``threshold``: ``threshold`` (0.05–0.9), then ``hysteresis_high`` (off, 0.5–0.9; a value <= the threshold is
  skipped as invalid);
- ``remove_dust``: ``min_component_size`` (0 to 20,000 voxels, the 1st place's size at 320³);
- ``plug_holes``: ``plug_holes`` with ``plug_method`` (off, lookup table, axis test, both), one coordinate so that
  the method is only searched where plugging is on;
- ``patch_holes``: the largest patched hole (0 = off, 25–400 pixels);
- ``closing``: ``closing_radius`` as (z, yx) radii, isotropic and anisotropic (the 12th place's);
- ``fill_holes``: off/on.

Every field of ``PostprocessConfig`` is covered (``STEP_FIELDS``; ``uncovered_fields()`` is empty, which a test
checks, so a field added to the config without a grid here fails the tests instead of going unsearched).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nnunetv2_topo.postprocessing.steps import STEP_FIELDS, STEP_ORDER, PostprocessConfig

ARGMAX_THRESHOLD = 0.5
"""Two-class argmax = foreground probability above 0.5: the threshold of the "none" row."""

THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class Coordinate:
    """One axis of the search: ``fields`` changed together; ``settings`` one value per field each, "off" first."""

    step: str
    fields: tuple[str, ...]
    settings: tuple[tuple, ...]

    def setting_of(self, config: PostprocessConfig) -> tuple:
        return tuple(getattr(config, f) for f in self.fields)

    def changes(self, setting: tuple) -> dict:
        return dict(zip(self.fields, setting, strict=True))

    def label(self, setting: tuple) -> str:
        return ", ".join(f"{f} = {v}" for f, v in zip(self.fields, setting, strict=True))


_COORDINATES = (
    Coordinate("threshold", ("threshold",), tuple((t,) for t in THRESHOLDS)),
    Coordinate("threshold", ("hysteresis_high",), ((None,), (0.5,), (0.6,), (0.7,), (0.8,), (0.85,), (0.9,))),
    Coordinate(
        "remove_dust",
        ("min_component_size",),
        tuple((s,) for s in (0, 64, 250, 500, 1000, 2000, 5000, 20000)),
    ),
    Coordinate(
        "plug_holes", ("plug_holes", "plug_method"), ((False, "lut"), (True, "lut"), (True, "axis"), (True, "both"))
    ),
    Coordinate("patch_holes", ("patch_holes",), ((0,), (25,), (100,), (400,))),
    Coordinate("closing", ("closing_radius",), tuple((r,) for r in ((0, 0), (1, 1), (2, 1), (1, 2), (2, 2), (3, 3)))),
    Coordinate("fill_holes", ("fill_holes",), ((False,), (True,))),
)


def search_space() -> tuple[Coordinate, ...]:
    """The coordinates in search order: threshold first, then the steps in ``STEP_ORDER``."""
    return tuple(sorted(_COORDINATES, key=lambda c: STEP_ORDER.index(c.step)))  # stable: threshold first


def searched_fields() -> tuple[str, ...]:
    """Every field of the search, in search order."""
    return tuple(f for c in search_space() for f in c.fields)


def uncovered_fields() -> list[str]:
    """Fields of ``STEP_FIELDS`` (i.e. of ``PostprocessConfig``) that no coordinate searches (should be none)."""
    searched = set(searched_fields())
    return [f for fields in STEP_FIELDS.values() for f in fields if f not in searched]


def try_replace(config: PostprocessConfig, **changes) -> PostprocessConfig | None:
    """``replace(config, **changes)``, or ``None`` when the result is not a valid configuration."""
    try:
        return replace(config, **changes)
    except ValueError:
        return None


def no_postprocessing() -> PostprocessConfig:
    """Threshold 0.5 (argmax) with every searched step off: the ablation's first row."""
    off: dict = {}
    for c in search_space():
        if c.fields != ("threshold",):
            off.update(c.changes(c.settings[0]))
    return replace(PostprocessConfig(), threshold=ARGMAX_THRESHOLD, **off)


def describe(config: PostprocessConfig, reference: PostprocessConfig | None = None) -> str:
    """``field=value`` for the fields that differ from ``reference`` (all searched fields when ``None``)."""
    parts = []
    for name in searched_fields():
        value = getattr(config, name)
        if reference is None or value != getattr(reference, name):
            parts.append(f"{name}={value}")
    return ", ".join(parts) if parts else "(same)"
