"""Which configuration a TopoWarmup run uses: a fresh run, a resumed one (``--c``) or a validation-only one (``--val``).

* fresh: the variant's defaults and the file named by ``nnUNet_topo_config``;
* ``--c``: the configuration saved in the checkpoint nnU-Net resumes from, changed only as
  :func:`nnunetv2_topo.trainers.config_file.resume_config` allows; the history of configurations is kept;
* ``--val`` (and anything else that only loads ``checkpoint_final.pth``): when the file is gone or broken, the saved
  configuration (validation needs no training settings); training from there still fails with the file's error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nnunetv2_topo.errors import exit_if_entry_point
from nnunetv2_topo.trainers.config import CONFIG_ENV_VAR, TopoConfigError, check_consistency, format_config, to_jsonable
from nnunetv2_topo.trainers.config_file import (
    config_from_environment,
    config_path_from_environment,
    load_yaml_config,
    resume_config,
    save_config,
)

__all__ = [
    "CONFIG_JSON",
    "RESUME_CHECKPOINTS",
    "RunConfig",
    "fold_folder",
    "log_run_config",
    "run_config",
    "saved_topo_state",
    "write_config_json",
]

CONFIG_JSON = "topo_config.json"
"""The configuration in use and the run's history of configurations, in the fold folder."""

RESUME_CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")
"""The checkpoints ``nnUNetv2_train --c`` looks for, in nnU-Net's order (``run_training.maybe_load_checkpoint``)."""


@dataclass
class RunConfig:
    config: dict[str, Any]
    source: str | None
    """The file the configuration came from (None: defaults, or the saved configuration alone)."""
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    """Every configuration of the run: ``{"epoch", "config", "config_file", "changes"}``, oldest first."""
    deferred_error: TopoConfigError | None = None
    """A problem of the file that only matters if this process trains (raised in ``on_train_start``)."""


def fold_folder(plans: dict, configuration: str, fold: int | str, trainer_name: str) -> Path | None:
    """nnU-Net's output folder of this fold (``get_output_folder``), or None when ``nnUNet_results`` is unset."""
    from nnunetv2.paths import nnUNet_results
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    if not nnUNet_results.is_set():
        return None
    return Path(get_output_folder(plans["dataset_name"], trainer_name, plans["plans_name"], configuration, fold))


def saved_topo_state(folder: Path | None, names: tuple[str, ...] = RESUME_CHECKPOINTS) -> tuple[Path, dict] | None:
    """``(checkpoint, topo_state)`` of the first of ``names`` present in ``folder`` (None if none has one)."""
    if folder is None:
        return None
    for name in names:
        path = folder / name
        if path.is_file():
            checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
            state = checkpoint.get("topo_state")
            if state is None:
                return None
            state = dict(state)
            state.setdefault("epoch", int(checkpoint.get("current_epoch", 0)))
            return path, state
    return None


def _history_entry(epoch: int, config: dict, source: str | None, changes: dict | None = None) -> dict[str, Any]:
    return {
        "epoch": int(epoch),
        "config": dict(config),
        "config_file": source,
        "changes": {k: [old, new] for k, (old, new) in (changes or {}).items()},
    }


def run_config(
    folder: Path | None,
    resume: bool,
    variant_defaults: dict[str, Any],
    variant_name: str,
    fixed_keys: tuple[str, ...] = (),
    consistency: bool = True,
) -> RunConfig:
    """The configuration of this run (see the module docstring). ``consistency``: check the relations between
    TopoWarmup keys (off for a trainer that uses only the budget keys)."""
    try:
        return _run_config(folder, resume, variant_defaults, variant_name, fixed_keys, consistency)
    except TopoConfigError as exc:
        exit_if_entry_point(exc)  # nnUNetv2_train: the message, exit 2, no traceback
        raise


def _run_config(
    folder: Path | None,
    resume: bool,
    variant_defaults: dict[str, Any],
    variant_name: str,
    fixed_keys: tuple[str, ...],
    consistency: bool,
) -> RunConfig:
    kwargs: dict[str, Any] = {
        "variant_defaults": variant_defaults,
        "variant_name": variant_name,
        "fixed_keys": fixed_keys,
    }
    saved = saved_topo_state(folder) if resume else None
    if saved is not None:
        return _resumed(saved, read_file=True, consistency=consistency, **kwargs)
    try:
        config, source = config_from_environment(**kwargs)
    except TopoConfigError as exc:
        final = saved_topo_state(folder, ("checkpoint_final.pth",)) if not resume else None
        if final is None:
            raise
        # --val of a finished run: the saved configuration serves; training would still need a valid file
        path = final[0]
        out = _resumed(final, read_file=False, consistency=consistency, **kwargs)
        out.deferred_error = exc
        out.warnings.insert(0, f"{exc.args[0].split('. Valid keys')[0]}; using the configuration saved in {path}")
        return out
    warnings = check_consistency(config, source or variant_name) if consistency else []
    return RunConfig(config, source, warnings=warnings, history=[_history_entry(0, config, source)])


def _resumed(
    saved: tuple[Path, dict],
    *,
    read_file: bool,
    variant_defaults: dict[str, Any],
    variant_name: str,
    fixed_keys: tuple[str, ...],
    consistency: bool,
) -> RunConfig:
    path, state = saved
    epoch = int(state["epoch"])
    source = config_path_from_environment() if read_file else None
    data = load_yaml_config(source) if source else None
    config, changes, notes, warnings = resume_config(
        state["config"], data, source, variant_defaults, variant_name, fixed_keys
    )
    history = [dict(h) for h in state.get("config_history") or []]
    if not history:  # a checkpoint written before the history was kept
        history = [_history_entry(0, state["config"], None)]
        history[0]["note"] = "configuration saved in the checkpoint (the epoch it took effect was not recorded)"
    if changes:
        history.append(_history_entry(epoch, config, source, changes))
    if source is None:
        notes.insert(0, f"{CONFIG_ENV_VAR} is unset: continuing with the configuration saved in {path}")
    else:
        notes.insert(0, f"resuming from {path}: the saved configuration, with what {source} sets")
    if consistency:
        warnings = check_consistency(config, source or f"configuration saved in {path}") + warnings
    return RunConfig(config, source, notes, warnings, history)


def log_run_config(run: RunConfig, trainer_name: str, log: Any) -> None:
    """Log the effective configuration, where it came from, and the run's notes and warnings."""
    origin = f"from {run.source}" if run.source else "set nnUNet_topo_config to override"
    if run.notes and not run.source:
        origin = "the saved configuration"
    log(
        f"{trainer_name} configuration ({origin}):\n" + format_config(run.config),
        also_print_to_console=True,
        add_timestamp=False,
    )
    for note in run.notes:
        log(f"Configuration: {note}", also_print_to_console=True)
    for warning in run.warnings:
        log(f"WARNING (configuration): {warning}", also_print_to_console=True)


def write_config_json(run: RunConfig, trainer_name: str, folder: str | Path) -> None:
    """``topo_config.json``: the configuration in use and every configuration the run used (``history``, each with
    the epoch it took effect)."""
    history = [{**h, "config": to_jsonable(h["config"])} for h in run.history]
    extra = {"trainer": trainer_name, "config_file": run.source, "history": history}
    save_config(run.config, Path(folder) / CONFIG_JSON, extra=extra)
