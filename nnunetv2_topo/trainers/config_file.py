"""The TopoWarmup configuration file: reading ``nnUNet_topo_config`` (YAML, a key given twice is an error), its
directives (``allow_config_change``), the configuration a resumed run continues with, and ``topo_config.json``.
The keys themselves live in :mod:`nnunetv2_topo.trainers.config`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from nnunetv2_topo.io import atomic_write_text
from nnunetv2_topo.trainers.config import (
    CONFIG_ENV_VAR,
    DIRECTIVE_KEYS,
    TopoConfigError,
    _fail,
    _valid_keys_text,
    _validated,
    all_keys,
    resolve_config,
    to_jsonable,
)

__all__ = [
    "config_from_environment",
    "config_from_file",
    "config_path_from_environment",
    "load_yaml_config",
    "resume_config",
    "save_config",
    "split_directives",
]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); keep one",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file (an empty file is an empty mapping; a key given twice is an error)."""
    p = Path(path)
    if not p.is_file():
        raise TopoConfigError(
            f"{CONFIG_ENV_VAR}={path}: no such file. Point {CONFIG_ENV_VAR} at a YAML file or unset it. "
            f"{_valid_keys_text()}."
        )
    try:
        data = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise TopoConfigError(f"{p}: not valid YAML ({exc}). {_valid_keys_text()}.") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise _fail(str(p), f"the top level must be a mapping of key: value, got {type(data).__name__}")
    return dict(data)


def config_path_from_environment() -> str | None:
    """The file named by ``nnUNet_topo_config``; ``None`` when unset. Set but empty is an error (a job script
    that meant to name a file but expanded an empty variable)."""
    value = os.environ.get(CONFIG_ENV_VAR)
    if value is None:
        return None
    if not value.strip():
        raise TopoConfigError(
            f"{CONFIG_ENV_VAR} is set but empty. Name a YAML file (export {CONFIG_ENV_VAR}=/path/config.yaml) or "
            f"unset it (unset {CONFIG_ENV_VAR}) to use the trainer's defaults."
        )
    return value


def split_directives(data: Mapping[str, Any], source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(hyperparameters, directives)`` of a config file's mapping; directives are validated here."""
    params = {k: v for k, v in data.items() if k not in DIRECTIVE_KEYS}
    directives = {k: v for k, v in data.items() if k in DIRECTIVE_KEYS}
    for name, value in directives.items():
        if not isinstance(value, bool):
            raise _fail(source, f"key {name!r} = {value!r} is invalid: must be true or false")
    return params, directives


def config_from_file(
    path: str | os.PathLike | None,
    variant_defaults: Mapping[str, Any] | None = None,
    variant_name: str = "trainer variant",
    fixed_keys: Iterable[str] = (),
) -> dict[str, Any]:
    """Effective configuration from ``variant_defaults`` and the YAML file ``path`` (``None``: the defaults alone),
    resolved as the trainer resolves the file of ``nnUNet_topo_config`` (``nnunetv2_topo schedule --topo-config``)."""
    overrides, _ = split_directives(load_yaml_config(path), str(path)) if path else ({}, {})
    return resolve_config(
        overrides,
        variant_defaults,
        source=str(path) if path else "config",
        variant_name=variant_name,
        fixed_keys=fixed_keys,
    )


def config_from_environment(
    variant_defaults: Mapping[str, Any] | None = None,
    variant_name: str = "trainer variant",
    fixed_keys: Iterable[str] = (),
) -> tuple[dict[str, Any], str | None]:
    """Effective configuration from ``variant_defaults`` and the file named by ``nnUNet_topo_config`` (if set).

    Returns ``(config, path_or_None)``.
    """
    path = config_path_from_environment()
    return config_from_file(path, variant_defaults, variant_name, fixed_keys), path


def resume_config(
    saved: Mapping[str, Any],
    file_data: Mapping[str, Any] | None,
    source: str | None,
    variant_defaults: Mapping[str, Any] | None = None,
    variant_name: str = "trainer variant",
    fixed_keys: Iterable[str] = (),
) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]], list[str], list[str]]:
    """The configuration a resumed run (``--c``) continues with: the saved one, plus what the file sets.

    Only keys the file sets are compared with the saved values (a default changed in a later version of this
    package is no change). Raising ``num_epochs`` is allowed; any other change is an error listing every
    changed key (old -> new) unless the file sets ``allow_config_change: true`` (then each is a warning). Keys
    missing from ``saved`` (added in a later version) take the variant's value.

    Returns ``(config, changes, notes, warnings)``; ``changes`` maps key -> (old, new) for every changed key.
    """
    known = {k: v for k, v in saved.items() if k in all_keys()}
    base = resolve_config(known, variant_defaults, source="saved configuration", variant_name=variant_name)
    if file_data is None:
        return base, {}, [], []
    params, directives = split_directives(file_data, source or "config")
    parsed = {name: _validated(name, value, source or "config") for name, value in params.items()}
    if "loss_weights" in parsed:
        parsed["loss_weights"] = dict(parsed["loss_weights"])
    config = resolve_config(
        {**known, **params}, variant_defaults, source=source or "config", variant_name=variant_name,
        fixed_keys=fixed_keys,
    )  # fmt: skip
    changes = {k: (base[k], v) for k, v in parsed.items() if to_jsonable(base[k]) != to_jsonable(v)}
    notes: list[str] = []  # (raising num_epochs is logged by the plateau driver: the LR, the anneal)
    warnings: list[str] = []
    blocking = {k: v for k, v in changes.items() if not (k == "num_epochs" and v[1] > v[0])}
    if blocking:
        listing = "; ".join(
            f"{k}: {json.dumps(to_jsonable(o))} -> {json.dumps(to_jsonable(n))}" for k, (o, n) in blocking.items()
        )
        if not directives.get("allow_config_change", False):
            raise TopoConfigError(
                f"{source}: --c would change the configuration this run was trained with: {listing}. Resume with "
                f"the saved configuration (unset {CONFIG_ENV_VAR}, or remove these keys from the file), or add "
                "'allow_config_change: true' to the file to change them on purpose (only raising num_epochs needs "
                "no permission)."
            )
        warnings.append(f"configuration changed on resume (allow_config_change: true): {listing}")
    return config, changes, notes, warnings


def save_config(config: Mapping[str, Any], path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> None:
    """Write the effective configuration as JSON (atomically: temp file, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    payload = {**(dict(extra) if extra else {}), "config": to_jsonable(config)}
    atomic_write_text(p, json.dumps(payload, indent=2) + "\n")
