"""``postprocess.json``: one versioned file with the fusion, the post-processing steps and what ``tune`` measured.

    {"version": 1,
     "fusion": {"mode": "logit", "weights": [0.4, 0.6], "inputs": ["models/a", "models/b"],
                "checkpoints": ["checkpoint_final.pth", "checkpoint_best_score.pth"]},
     "steps": {"threshold": 0.35, "hysteresis_high": 0.85, "min_component_size": 1000, ...},
     "measured": {...free-form JSON written by tune...}}

Unknown keys, bad values and other versions are refused with a ValueError naming the file and the key.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnunetv2_topo.io import atomic_write_text
from nnunetv2_topo.postprocessing.fusion import FUSION_MODES, check_fusion_weights
from nnunetv2_topo.postprocessing.steps import PostprocessConfig, PostprocessConfigError

POSTPROCESS_FILE_VERSION = 1
_TOP_KEYS = ("version", "fusion", "steps", "measured")
_FUSION_KEYS = ("mode", "weights", "inputs", "checkpoints")
CHECKPOINT_PREFIX, CHECKPOINT_SUFFIX = "checkpoint_", ".pth"


@dataclass(frozen=True)
class FusionSpec:
    """How the inputs are fused: ``mode`` (logit|prob), ``weights`` (None = equal; one per input, in order) and
    ``inputs``, the inputs (as given on the command line) the file was tuned on. A weight of 0 leaves an input out
    (``tune`` chose the ensemble without it; it is not read). ``checkpoints`` (None = not chosen): per input, the
    checkpoint file (``checkpoint_<name>.pth``) whose out-of-fold predictions were used, or None for an input that
    is not a model folder; ``predict`` loads that checkpoint of each ``--model``."""

    mode: str = "logit"
    weights: tuple[float, ...] | None = None
    inputs: tuple[str, ...] = ()
    checkpoints: tuple[str | None, ...] | None = None

    def __post_init__(self) -> None:
        if self.mode not in FUSION_MODES:
            raise PostprocessConfigError(f"mode must be one of {', '.join(FUSION_MODES)}, got {self.mode!r}")
        if not isinstance(self.inputs, (list, tuple)) or not all(isinstance(i, str) for i in self.inputs):
            raise PostprocessConfigError(f"inputs must be a list of paths (strings), got {self.inputs!r}")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if self.weights is not None:
            if not isinstance(self.weights, (list, tuple)) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) for w in self.weights
            ):
                raise PostprocessConfigError(f"weights must be null or a list of numbers, got {self.weights!r}")
            n = len(self.inputs) or len(self.weights)
            object.__setattr__(self, "weights", check_fusion_weights(self.weights, n))
        if self.checkpoints is not None:
            object.__setattr__(self, "checkpoints", check_checkpoint_names(self.checkpoints, len(self.inputs)))

    @property
    def used(self) -> tuple[bool, ...] | None:
        """Per input, whether it takes part (weight > 0); None with equal weights (all do)."""
        return None if self.weights is None else tuple(w > 0 for w in self.weights)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode,
            "weights": None if self.weights is None else list(self.weights),
            "inputs": list(self.inputs),
        }
        if self.checkpoints is not None:
            out["checkpoints"] = list(self.checkpoints)
        return out


def check_checkpoint_names(names: Any, n_inputs: int) -> tuple[str | None, ...]:
    """``names`` as a tuple: one per input (``n_inputs``; 0 = any count), each null or ``checkpoint_<name>.pth``."""
    if not isinstance(names, (list, tuple)):
        raise PostprocessConfigError(f"checkpoints must be null or a list (one entry per input), got {names!r}")
    if n_inputs and len(names) != n_inputs:
        raise PostprocessConfigError(
            f"{len(names)} checkpoint(s) for {n_inputs} input(s); give one per input, in order"
        )
    for name in names:
        ok = isinstance(name, str) and name.startswith(CHECKPOINT_PREFIX) and name.endswith(CHECKPOINT_SUFFIX)
        if name is not None and not (ok and len(name) > len(CHECKPOINT_PREFIX + CHECKPOINT_SUFFIX) and "/" not in name):
            raise PostprocessConfigError(
                f"checkpoint {name!r} is not a checkpoint file name: expected null or checkpoint_<name>.pth "
                "(e.g. checkpoint_final.pth, checkpoint_best_score.pth)"
            )
    return tuple(names)


@dataclass(frozen=True)
class PostprocessFile:
    """The content of a ``postprocess.json``."""

    fusion: FusionSpec = field(default_factory=FusionSpec)
    steps: PostprocessConfig = field(default_factory=PostprocessConfig)
    measured: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": POSTPROCESS_FILE_VERSION,
            "fusion": self.fusion.to_dict(),
            "steps": self.steps.to_dict(),
            "measured": self.measured,
        }


def _finite_json(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise PostprocessConfigError(f"{where} holds {value}; JSON needs finite numbers (use null)")
    if isinstance(value, dict):
        for k, v in value.items():
            _finite_json(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _finite_json(v, f"{where}[{i}]")


def parse_postprocess_dict(d: Any, source: str = "postprocess file") -> PostprocessFile:
    """A :class:`PostprocessFile` from parsed JSON; errors name ``source`` and the key."""
    if not isinstance(d, dict):
        raise PostprocessConfigError(f"{source}: expected a JSON object at the top, got {type(d).__name__}")
    unknown = sorted(set(d) - set(_TOP_KEYS))
    if unknown:
        raise PostprocessConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(_TOP_KEYS)}"
        )
    if "version" not in d:
        raise PostprocessConfigError(
            f"{source}: missing key 'version' (this release writes {POSTPROCESS_FILE_VERSION})"
        )
    if d["version"] != POSTPROCESS_FILE_VERSION or isinstance(d["version"], bool):
        raise PostprocessConfigError(
            f"{source}: key 'version' is {d['version']!r}; this release reads version {POSTPROCESS_FILE_VERSION}"
            " only: run tune again to write a current file"
        )
    fusion = d.get("fusion", {})
    if not isinstance(fusion, dict):
        raise PostprocessConfigError(f"{source}: key 'fusion' must be a JSON object, got {type(fusion).__name__}")
    unknown = sorted(set(fusion) - set(_FUSION_KEYS))
    if unknown:
        raise PostprocessConfigError(
            f"{source}: unknown key(s) fusion.{', fusion.'.join(unknown)}; known: {', '.join(_FUSION_KEYS)}"
        )
    try:
        spec = FusionSpec(
            mode=fusion.get("mode", "logit"),
            weights=fusion.get("weights"),
            inputs=fusion.get("inputs", ()),
            checkpoints=fusion.get("checkpoints"),
        )
    except (TypeError, ValueError) as exc:
        raise PostprocessConfigError(f"{source}: key 'fusion': {exc}") from None
    try:
        steps = PostprocessConfig.from_dict(d.get("steps", {}))
    except (TypeError, ValueError) as exc:
        raise PostprocessConfigError(f"{source}: key 'steps': {exc}") from None
    measured = d.get("measured", {})
    if not isinstance(measured, dict):
        raise PostprocessConfigError(f"{source}: key 'measured' must be a JSON object, got {type(measured).__name__}")
    return PostprocessFile(fusion=spec, steps=steps, measured=measured)


def load_postprocess_file(path: str | os.PathLike) -> PostprocessFile:
    """Read and validate a ``postprocess.json``."""
    path = Path(path)
    if not path.is_file():
        raise PostprocessConfigError(f"{path}: no such post-processing file; write one with nnunetv2_topo tune")
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PostprocessConfigError(f"{path}: not valid JSON ({exc})") from None
    return parse_postprocess_dict(d, str(path))


def unfinished_search_warning(pf: PostprocessFile, source: str | os.PathLike) -> str | None:
    """A warning when ``pf`` was saved by a ``tune`` run that never finished (killed while its status was
    "searching": the steps are the best found up to then); None otherwise."""
    if pf.measured.get("status") != "searching":
        return None
    return (
        f"warning: {source} comes from a tune run that did not finish (status 'searching', e.g. killed): its steps "
        "are the best found until then, not the result of a complete search; run nnunetv2_topo tune again to finish"
    )


def save_postprocess_file(path: str | os.PathLike, pf: PostprocessFile) -> None:
    """Write ``pf`` as JSON, atomically (:func:`nnunetv2_topo.io.atomic_write_text`)."""
    path = Path(path)
    d = pf.to_dict()
    _finite_json(d, "postprocess file")
    text = json.dumps(d, indent=2, sort_keys=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
