"""Hyperparameters of the TopoWarmup trainers: defaults, YAML overrides, validation.

``nnUNet_topo_config=/path/to/config.yaml`` overrides any key below for any TopoWarmup trainer. Precedence:
base defaults < the variant's ``topo_defaults`` < the YAML file. ``loss_weights`` is replaced as a whole (terms
not listed get weight 0). Every problem fails at start-up with a message naming the file, key and value, and
listing the valid keys.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_ENV_VAR",
    "KEYS",
    "SEED_LOSS_WEIGHTS",
    "TopoConfigError",
    "config_from_environment",
    "format_config",
    "load_yaml_config",
    "resolve_config",
    "save_config",
]

CONFIG_ENV_VAR = "nnUNet_topo_config"

SEED_LOSS_WEIGHTS: dict[str, float] = {
    "dice": 0.3,
    "focal": 0.4,
    "boundary": 0.15,
    "cldice": 0.10,
    "connectivity": 0.05,
}
"""The seed's five terms with its original weights."""


class TopoConfigError(ValueError):
    """A bad TopoWarmup configuration (names the source, key, value and the fix)."""


def _term_names() -> tuple[str, ...]:
    from nnunetv2_topo.losses import TERM_NAMES

    return tuple(TERM_NAMES)


# --------------------------------------------------------------------------- value checks
def _number(value: Any) -> float:
    """A finite real number; numeric strings are accepted because YAML 1.1 reads ``1e-4`` as a string."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError("must be a number") from None
    if not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError("must be finite")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer, not {type(value).__name__} {value!r}")
    return int(value)


def _positive(v: float) -> None:
    if v <= 0:
        raise ValueError("must be > 0")


def _non_negative(v: float) -> None:
    if v < 0:
        raise ValueError("must be >= 0")


def _at_least_one(v: int) -> None:
    if v < 1:
        raise ValueError("must be >= 1")


def _open_unit(v: float) -> None:
    if not 0.0 < v < 1.0:
        raise ValueError("must lie in (0, 1)")


def _closed_unit(v: float) -> None:
    if not 0.0 <= v <= 1.0:
        raise ValueError("must lie in [0, 1]")


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value.lower()

    return parse


def _weights(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping term -> weight, not {type(value).__name__}")
    names = _term_names()
    out: dict[str, float] = {}
    for term, w in value.items():
        if term not in names:
            raise ValueError(f"unknown loss term {term!r}; the terms are {', '.join(names)}")
        try:
            w = _number(w)
        except ValueError as exc:
            raise ValueError(f"weight of {term!r} {exc}") from None
        if w < 0:
            raise ValueError(f"weight of {term!r} is negative ({w}); weights must be >= 0")
        out[term] = w
    if not any(w > 0 for w in out.values()):
        raise ValueError("all weights are 0; at least one term needs a positive weight")
    return {t: w for t, w in out.items() if w > 0}


def _band(value: Any) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError("must be a pair [inner, outer] (voxels)")
    inner, outer = (_number(v) for v in value)
    if not 0 <= inner < outer:
        raise ValueError("must satisfy 0 <= inner < outer")
    return (inner, outer)


@dataclass(frozen=True)
class Key:
    """One configuration key: its parser, range check, default and meaning (the docs table is built from it)."""

    type_name: str
    default: Any
    meaning: str
    parse: Callable[[Any], Any]
    check: Callable[[Any], None] | None = None

    def validate(self, value: Any) -> Any:
        parsed = self.parse(value)
        if self.check is not None:
            self.check(parsed)
        return parsed


LOSS_DEFAULT = None
"""Default of the term parameters: ``None`` means "the loss API's own default" (resolved by the trainer)."""

KEYS: dict[str, Key] = {
    "initial_lr": Key("float > 0", 1e-2, "base LR (reached at the end of warmup)", _number, _positive),
    "weight_decay": Key("float >= 0", 3e-5, "optimizer weight decay", _number, _non_negative),
    "num_epochs": Key("int >= 1", 1000, "number of epochs", _integer, _at_least_one),
    "num_iterations_per_epoch": Key("int >= 1", 250, "training iterations per epoch", _integer, _at_least_one),
    "num_val_iterations_per_epoch": Key(
        "int >= 1", 50, "validation iterations (patches batches) per epoch", _integer, _at_least_one
    ),
    "optimizer": Key(
        "sgd | adamw",
        "sgd",
        "sgd: nnU-Net's SGD (momentum 0.99, Nesterov); adamw: torch AdamW",
        _choice("sgd", "adamw"),
    ),
    "warmup_epochs": Key(
        "int >= 0", 10, "linear warmup lr = initial_lr*(epoch+1)/warmup_epochs; 0 = none", _integer, _non_negative
    ),
    "plateau_metric": Key(
        "val_loss | ema_fg_dice",
        "val_loss",
        "metric of ReduceLROnPlateau (val_loss: mode min; ema_fg_dice: mode max)",
        _choice("val_loss", "ema_fg_dice"),
    ),
    "plateau_patience": Key("int >= 0", 8, "epochs without improvement before a reduction", _integer, _non_negative),
    "plateau_factor": Key("float in (0, 1)", 0.5, "LR multiplier on a plateau", _number, _open_unit),
    "plateau_min_lr": Key("float >= 0", 1e-6, "lower bound of the LR", _number, _non_negative),
    "grad_clip_norm": Key(
        "float > 0", 2.0, "clip the total gradient norm to this (after AMP unscale)", _number, _positive
    ),
    "grad_norm_log_every": Key(
        "int >= 1", 50, "print the pre-clip gradient norm every N iterations", _integer, _at_least_one
    ),
    "max_consecutive_skips": Key(
        "int >= 1", 20, "stop with an error after this many consecutive non-finite steps", _integer, _at_least_one
    ),
    "loss_weights": Key(
        "mapping term -> float >= 0",
        SEED_LOSS_WEIGHTS,
        "weights of dice, ce, focal, boundary, cldice, skeleton_recall, connectivity (unlisted = 0)",
        _weights,
    ),
    "focal_alpha": Key("float in [0, 1]", LOSS_DEFAULT, "focal loss alpha (foreground weight)", _number, _closed_unit),
    "focal_gamma": Key("float >= 0", LOSS_DEFAULT, "focal loss gamma", _number, _non_negative),
    "cldice_iterations": Key("int >= 1", LOSS_DEFAULT, "soft-skeleton iterations of clDice", _integer, _at_least_one),
    "skeleton_tube": Key(
        "int >= 0",
        LOSS_DEFAULT,
        "dilation (voxels) of the skeleton target for skeleton recall",
        _integer,
        _non_negative,
    ),
    "boundary_band": Key(
        "[float, float]", LOSS_DEFAULT, "boundary weight 1 within |d| <= inner, linear to 0 at outer", _band
    ),
}

LOSS_PARAM_KEYS: tuple[str, ...] = ("focal_alpha", "focal_gamma", "cldice_iterations", "skeleton_tube", "boundary_band")
"""Keys passed through to ``TopologyLoss`` (under the same names)."""


def _valid_keys_text() -> str:
    return "Valid keys: " + ", ".join(KEYS)


def _fail(source: str, message: str) -> TopoConfigError:
    return TopoConfigError(f"{source}: {message}. {_valid_keys_text()}.")


def resolve_config(
    overrides: Mapping[str, Any] | None = None,
    variant_defaults: Mapping[str, Any] | None = None,
    source: str = "config",
    variant_name: str = "trainer variant",
) -> dict[str, Any]:
    """Merge the defaults of :data:`KEYS`, then ``variant_defaults``, then ``overrides`` (the YAML); validate.

    Returns the effective configuration. Raises :class:`TopoConfigError` naming the source, the key and the value.
    """
    effective: dict[str, Any] = {name: key.default for name, key in KEYS.items()}
    for layer_source, layer in ((variant_name, variant_defaults or {}), (source, overrides or {})):
        if not isinstance(layer, Mapping):
            raise _fail(layer_source, f"the top level must be a mapping of key: value, got {type(layer).__name__}")
        for name, value in layer.items():
            if name not in KEYS:
                close = difflib.get_close_matches(str(name), list(KEYS), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise _fail(layer_source, f"unknown key {name!r}{hint}")
            if value is None and KEYS[name].default is LOSS_DEFAULT:
                effective[name] = None
                continue
            try:
                effective[name] = KEYS[name].validate(value)
            except ValueError as exc:
                raise _fail(
                    layer_source,
                    f"key {name!r} = {value!r} is invalid: {exc} (expected {KEYS[name].type_name})",
                ) from None
    effective["loss_weights"] = dict(effective["loss_weights"])
    return effective


def load_yaml_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file (an empty file is an empty mapping)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise TopoConfigError(
            f"{CONFIG_ENV_VAR}={path}: no such file. Point {CONFIG_ENV_VAR} at a YAML file or unset it. "
            f"{_valid_keys_text()}."
        )
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise TopoConfigError(f"{p}: not valid YAML ({exc}). {_valid_keys_text()}.") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise _fail(str(p), f"the top level must be a mapping of key: value, got {type(data).__name__}")
    return dict(data)


def config_from_environment(
    variant_defaults: Mapping[str, Any] | None = None, variant_name: str = "trainer variant"
) -> tuple[dict[str, Any], str | None]:
    """Effective configuration from ``variant_defaults`` and the file named by ``nnUNet_topo_config`` (if set).

    Returns ``(config, path_or_None)``.
    """
    path = os.environ.get(CONFIG_ENV_VAR) or None
    overrides = load_yaml_config(path) if path else {}
    return resolve_config(
        overrides, variant_defaults, source=str(path) if path else "config", variant_name=variant_name
    ), path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def format_config(config: Mapping[str, Any]) -> str:
    """One ``key: value`` line per key, in the order of :data:`KEYS`."""
    width = max(len(k) for k in config)
    return "\n".join(f"  {k:<{width}} : {json.dumps(_jsonable(v))}" for k, v in config.items())


def save_config(config: Mapping[str, Any], path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> None:
    """Write the effective configuration as JSON (atomically: temp file, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    payload = {**(dict(extra) if extra else {}), "config": _jsonable(config)}
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, p)
