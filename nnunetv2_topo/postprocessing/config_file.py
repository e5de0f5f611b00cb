"""STAND-IN for engineer 9a's module (contract signatures only); replaced by 9a's at merge."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
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


def load_postprocess_file(path) -> PostprocessFile:
    try:
        d = json.loads(Path(path).read_text())
        if d.get("version") != POSTPROCESS_FILE_VERSION:
            raise ValueError(f"'version' must be {POSTPROCESS_FILE_VERSION}")
        f = d.get("fusion", {})
        weights = f.get("weights")
        fusion = FusionSpec(
            f.get("mode", "logit"), None if weights is None else tuple(weights), tuple(f.get("inputs", ()))
        )
        return PostprocessFile(fusion, PostprocessConfig(**d.get("steps", {})), d.get("measured", {}))
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


def save_postprocess_file(path, pf: PostprocessFile) -> None:
    d = {
        "version": POSTPROCESS_FILE_VERSION,
        "fusion": asdict(pf.fusion),
        "steps": asdict(pf.steps),
        "measured": pf.measured,
    }
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(json.dumps(d, indent=2))
    os.replace(tmp, path)
