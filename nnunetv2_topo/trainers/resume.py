"""What loading a checkpoint means for a TopoWarmup trainer (mixed into ``nnUNetTrainerTopoWarmup``).

* ``--c`` (``resuming``): every component continues; with ``allow_config_change`` the new ``initial_lr`` and
  ``weight_decay`` are put into the optimizer groups nnU-Net restored (logged), a changed ``optimizer`` starts a
  fresh optimizer state (logged); the best competition score is the larger of the checkpoint's and the one of an
  existing ``checkpoint_best_score.pth``.
* anything else that loads a checkpoint (``--val``, ``--val --val_best``, ``--val --npz``): what defines the trained
  model (:data:`MODEL_KEYS`) comes from the checkpoint's saved configuration, whatever the configuration file says,
  so validation runs on ``network_weights``, the weights ``nnUNetv2_predict`` loads.
"""

from __future__ import annotations

from typing import Any

from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2_topo.trainers.checkpoint import RAW_WEIGHTS_KEY, load_checkpoint_file
from nnunetv2_topo.trainers.optimizers import build_optimizer
from nnunetv2_topo.trainers.score_rounds import BEST_SCORE_CHECKPOINT
from nnunetv2_topo.trainers.weight_ema import WeightEMA, unwrap_network

__all__ = ["MODEL_KEYS", "ResumeMixin"]

MODEL_KEYS: tuple[str, ...] = ("ema_decay",)
"""Configuration keys that decide which weights are the trained model (validation takes them from the checkpoint)."""


class ResumeMixin:
    """Checkpoint-loading steps of the TopoWarmup trainer (it provides ``topo_config``, ``optimizer``,
    ``configure_optimizers``, ``network``, ``weight_ema``, ``score_rounds``, ``print_to_log_file``)."""

    def adopt_trained_model(self, state: dict[str, Any] | None, path: str) -> None:
        """Validation-only loads: take :data:`MODEL_KEYS` from the checkpoint's saved configuration."""
        saved = (state or {}).get("config")
        if not saved:
            return
        for key in MODEL_KEYS:
            if key in saved and saved[key] != self.topo_config[key]:
                self.print_to_log_file(
                    f"{path} was trained with {key} = {saved[key]}; using it instead of {self.topo_config[key]} so "
                    "that validation runs on the weights nnUNetv2_predict loads (network_weights)",
                    also_print_to_console=True,
                )
                self.topo_config[key] = saved[key]
        if self.was_initialized:
            decay = self.topo_config["ema_decay"]
            if (self.weight_ema.decay if self.weight_ema is not None else 0.0) != decay:
                self.weight_ema = WeightEMA(unwrap_network(self.network), decay) if decay > 0 else None

    def prepare_optimizer_switch(self, state: dict[str, Any] | None) -> str | None:
        """Before nnU-Net restores the optimizer: when the checkpoint's ``optimizer`` differs from this
        configuration's, nnU-Net restores into a throwaway optimizer of the saved kind (loading SGD state into AdamW
        fails at the first step); returns the saved kind then, else None."""
        saved = ((state or {}).get("config") or {}).get("optimizer")
        if saved is None or saved == self.topo_config["optimizer"]:
            return None
        self.optimizer = build_optimizer(saved, self.network, self.initial_lr, self.weight_decay, self.topo_config)
        return saved

    def restore_optimizer(self, checkpoint: dict[str, Any], state: dict[str, Any], switched: str | None) -> None:
        """After nnU-Net restored the optimizer: a fresh one of this configuration's kind when ``optimizer`` changed
        (``switched``: the saved kind), then this configuration's ``initial_lr`` (the saved LR scaled by new / old
        ``initial_lr``, so the plateau's cuts are kept) and ``weight_decay`` in every group. A no-op (nothing logged)
        when the configuration is unchanged."""
        saved = state.get("config") or {}
        cfg = self.topo_config
        if switched is not None:
            self.optimizer, self.lr_scheduler = self.configure_optimizers()
            self.print_to_log_file(
                f"optimizer changed on resume ({switched} -> {cfg['optimizer']}): {cfg['optimizer']} starts from a "
                f"fresh state (the {switched} momentum/moment estimates are dropped); the LR schedule continues",
                also_print_to_console=True,
            )
        saved_groups = (checkpoint.get("optimizer_state") or {}).get("param_groups") or [{}]
        saved_lr = float(saved_groups[0].get("lr", self.optimizer.param_groups[0]["lr"]))
        old_initial = float(saved.get("initial_lr", cfg["initial_lr"]))
        lr = max(saved_lr * cfg["initial_lr"] / old_initial, cfg["plateau_min_lr"])
        old_decay = saved_groups[0].get("weight_decay", cfg["weight_decay"])
        for group in self.optimizer.param_groups:
            group["lr"], group["weight_decay"] = lr, cfg["weight_decay"]
        if old_initial != cfg["initial_lr"]:
            self.print_to_log_file(
                f"initial_lr changed on resume ({old_initial:g} -> {cfg['initial_lr']:g}): optimizer lr "
                f"{saved_lr:.4g} -> {lr:.4g} (scaled alike, the plateau's cuts kept)",
                also_print_to_console=True,
            )
        if old_decay != cfg["weight_decay"]:
            self.print_to_log_file(
                f"weight_decay changed on resume ({old_decay:g} -> {cfg['weight_decay']:g}): applied to every "
                "optimizer group",
                also_print_to_console=True,
            )

    def restore_weight_ema(self, checkpoint: dict[str, Any], state: dict[str, Any]) -> None:
        """nnU-Net loaded ``network_weights`` (the averaged ones when EMA was on): put the raw weights back into the
        network and restore the average from ``network_weights``."""
        raw = checkpoint.get(RAW_WEIGHTS_KEY)
        if raw is not None:
            unwrap_network(self.network).load_state_dict(raw)
        if self.weight_ema is None:
            return
        saved = state.get("weight_ema")
        if saved is not None and (raw is not None or "averaged" in saved):
            self.weight_ema.load_state_dict(saved, weights=checkpoint["network_weights"])
        else:
            self.weight_ema = WeightEMA(unwrap_network(self.network), self.weight_ema.decay)
            self.print_to_log_file("ema_decay is on but the checkpoint has no EMA state: the average starts here")

    def adopt_best_score_file(self) -> None:
        """``--c``: an existing ``checkpoint_best_score.pth`` keeps its place unless a later round beats it."""
        path = join(self.output_folder, BEST_SCORE_CHECKPOINT)
        try:
            checkpoint = load_checkpoint_file(path)
        except FileNotFoundError:
            return
        self.score_rounds.adopt_best_of_file(checkpoint, path)
