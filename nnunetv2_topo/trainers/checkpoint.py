"""The checkpoint payload of the TopoWarmup trainers, the one place that knows every key: nnU-Net's keys (what
``nnUNetv2_predict``, ``--c`` and ``nnUNetv2_export_model_to_zip`` read) plus ``topo_state``, written atomically.

``topo_state`` holds the configuration (``config``, ``config_history``) and each component's ``state_dict()`` under
its own key (:data:`COMPONENT_KEYS`). Loading runs the steps of :data:`LOAD_ORDER` in that order, each a
``restore_<step>(loaded)`` method of the trainer; the order matters where a step reads what an earlier one
restored (``tests/test_trainer_checkpoint_order.py`` swaps steps and fails).

With ``ema_decay`` on, ``network_weights`` are the EMA weights (what predict loads) and ``raw_network_weights`` the
trained ones; the EMA state itself stores only its decay and update count, so the averaged weights are stored once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from nnunetv2_topo.io import atomic_path
from nnunetv2_topo.trainers.weight_ema import WeightEMA, unwrap_network

__all__ = [
    "COMPONENT_KEYS",
    "LOAD_ORDER",
    "LoadedCheckpoint",
    "RAW_WEIGHTS_KEY",
    "TOPO_STATE_KEY",
    "TOPO_STATE_KEYS",
    "component_state",
    "load_checkpoint_file",
    "nnunet_payload",
    "restore_checkpoint",
    "topo_state",
    "write_checkpoint",
]

RAW_WEIGHTS_KEY = "raw_network_weights"
TOPO_STATE_KEY = "topo_state"

COMPONENT_KEYS: dict[str, str] = {
    "lr_scheduler": "plateau_driver",
    "guarded_step": "guarded_step",
    "weight_ema": "weight_ema",
    "score_rounds": "score_rounds",
}
"""``topo_state`` key -> the trainer attribute holding the component (``state_dict()``; None: the key is null)."""

TOPO_STATE_KEYS: tuple[str, ...] = ("config", "config_history", *COMPONENT_KEYS)
"""Every key of ``topo_state``."""

LEGACY_FLAT_KEYS: dict[str, tuple[str, ...]] = {"guarded_step": ("consecutive_skips", "total_skipped_steps")}
"""Component states that older checkpoints kept at the top of ``topo_state``."""

LOAD_ORDER: tuple[str, ...] = (
    "nnunet",  # nnU-Net's keys: network_weights (the EMA's when on), optimizer, grad scaler, logging, epoch
    "optimizer",  # after nnunet: a switched optimizer kind, this configuration's initial_lr and weight_decay
    "lr_scheduler",  # after nnunet and optimizer: reads the LR the run last trained with, the logged val_loss_ema
    "guarded_step",
    "score_rounds",
    "best_score_file",  # after score_rounds: a better checkpoint_best_score.pth wins over the checkpoint's best
    "weight_ema",  # after nnunet: puts the raw weights back into the network, the average into the EMA
)
"""The steps of loading a checkpoint, in order: ``trainer.restore_<step>(loaded)`` (:class:`LoadedCheckpoint`)."""


def topo_state(trainer: Any) -> dict[str, Any]:
    """``checkpoint[TOPO_STATE_KEY]``: the configuration and every component's state under its own key."""
    state: dict[str, Any] = {"config": dict(trainer.topo_config), "config_history": list(trainer.config_history)}
    for key, attribute in COMPONENT_KEYS.items():
        component = getattr(trainer, attribute)
        state[key] = component.state_dict() if component is not None else None
    return state


def component_state(state: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The state of component ``key`` in ``topo_state`` (also from an older checkpoint's flat keys)."""
    if state.get(key) is not None:
        return state[key]
    flat = {k: state[k] for k in LEGACY_FLAT_KEYS.get(key, ()) if k in state}
    return flat or None


@dataclass(frozen=True)
class LoadedCheckpoint:
    """What every load step reads: the file, its payload and its ``topo_state`` (``{}`` when it has none)."""

    path: str
    checkpoint: dict[str, Any]
    state: dict[str, Any]


def restore_checkpoint(trainer: Any, loaded: LoadedCheckpoint, order: tuple[str, ...] = LOAD_ORDER) -> None:
    """Run the load steps of ``order`` on ``trainer`` (``trainer.restore_<step>(loaded)``)."""
    for step in order:
        getattr(trainer, f"restore_{step}")(loaded)


def nnunet_payload(trainer: Any, weight_ema: WeightEMA | None = None) -> dict[str, Any]:
    """The keys ``nnUNetTrainer.save_checkpoint`` writes, for ``trainer`` (the tensors are the live ones: copy them
    to keep a snapshot). ``tests/test_trainer_checkpoint.py`` checks them against nnU-Net's own method."""
    weights = unwrap_network(trainer.network).state_dict()
    payload: dict[str, Any] = {
        "network_weights": weights,
        "optimizer_state": trainer.optimizer.state_dict(),
        "grad_scaler_state": trainer.grad_scaler.state_dict() if trainer.grad_scaler is not None else None,
        "logging": trainer.logger.get_checkpoint(),
        "_best_ema": trainer._best_ema,
        "current_epoch": trainer.current_epoch + 1,
        "init_args": trainer.my_init_kwargs,
        "trainer_name": type(trainer).__name__,
        "inference_allowed_mirroring_axes": trainer.inference_allowed_mirroring_axes,
    }
    if weight_ema is not None:  # nnUNetv2_predict loads network_weights: the averaged weights
        payload[RAW_WEIGHTS_KEY], payload["network_weights"] = weights, weight_ema.weights()
    return payload


def write_checkpoint(checkpoint: dict[str, Any], filename: str | os.PathLike) -> None:
    """``torch.save`` to a temporary name, renamed when complete (an interrupted write leaves the old file)."""
    with atomic_path(filename) as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint_file(filename: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint on the CPU (memory-mapped: the tensors are read when used)."""
    return torch.load(filename, map_location="cpu", weights_only=False, mmap=True)
