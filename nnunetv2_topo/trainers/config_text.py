"""A trainer configuration as text and JSON: the values JSON can hold, and the block a training log prints."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def to_jsonable(value: Any) -> Any:
    """``value`` with mappings as dicts with string keys and tuples as lists (what JSON and YAML round-trip)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def format_config(config: Mapping[str, Any]) -> str:
    """One ``key: value`` line per key, in the order of :func:`~nnunetv2_topo.trainers.config.all_keys`."""
    width = max(len(k) for k in config)
    return "\n".join(f"  {k:<{width}} : {json.dumps(to_jsonable(v))}" for k, v in config.items())
