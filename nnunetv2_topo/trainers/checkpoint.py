"""The checkpoint payload of the TopoWarmup trainers: nnU-Net's keys (what ``nnUNetv2_predict``, ``--c`` and
``nnUNetv2_export_model_to_zip`` read) plus ``topo_state``, written atomically.

With ``ema_decay`` on, ``network_weights`` are the EMA weights (what predict loads) and ``raw_network_weights`` the
trained ones; the EMA state itself stores only its decay and update count, so the averaged weights are stored once.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from nnunetv2_topo.io import atomic_path
from nnunetv2_topo.trainers.weight_ema import WeightEMA, unwrap_network

__all__ = ["RAW_WEIGHTS_KEY", "TOPO_STATE_KEY", "load_checkpoint_file", "nnunet_payload", "write_checkpoint"]

RAW_WEIGHTS_KEY = "raw_network_weights"
TOPO_STATE_KEY = "topo_state"


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
