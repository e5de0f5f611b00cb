"""``postprocess.json``: fusion + post-processing steps + what tune measured (minimal stand-in for 9a's module)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from nnunetv2_topo.postprocessing.steps import PostprocessConfig

POSTPROCESS_FILE_VERSION = 1


@dataclass(frozen=True)
class FusionSpec:
    mode: str = "logit"
    weights: tuple[float, ...] | None = None
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class PostprocessFile:
    fusion: FusionSpec = field(default_factory=FusionSpec)
    steps: PostprocessConfig = field(default_factory=PostprocessConfig)
    measured: dict = field(default_factory=dict)


def load_postprocess_file(path: str | os.PathLike) -> PostprocessFile:
    d = json.loads(Path(path).read_text())
    if d.get("version") != POSTPROCESS_FILE_VERSION:
        raise ValueError(f"{path}: 'version' must be {POSTPROCESS_FILE_VERSION}, got {d.get('version')!r}")
    fusion = d.get("fusion", {})
    weights = fusion.get("weights")
    weights = None if weights is None else tuple(weights)
    spec = FusionSpec(fusion.get("mode", "logit"), weights, tuple(fusion.get("inputs", ())))
    return PostprocessFile(spec, PostprocessConfig.from_dict(d.get("steps", {})), d.get("measured", {}))


def save_postprocess_file(path: str | os.PathLike, pf: PostprocessFile) -> None:
    path = Path(path)
    f = pf.fusion
    d = {
        "version": POSTPROCESS_FILE_VERSION,
        "fusion": {"mode": f.mode, "weights": None if f.weights is None else list(f.weights), "inputs": list(f.inputs)},
        "steps": pf.steps.to_dict(),
        "measured": pf.measured,
    }
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(d, indent=2))
    os.replace(tmp, path)
