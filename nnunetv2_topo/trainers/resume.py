"""What loading a checkpoint means for a TopoWarmup trainer (mixed into ``nnUNetTrainerTopoWarmup``): the load
steps of :data:`~nnunetv2_topo.trainers.checkpoint.LOAD_ORDER`, one ``restore_<step>`` method each.

* ``--c`` (``resuming``): every component continues; with ``allow_config_change`` the new ``initial_lr`` and
  ``weight_decay`` are put into the optimizer groups nnU-Net restored (logged), a changed ``optimizer`` starts a
  fresh optimizer state (logged), a changed ``plateau_metric`` keeps the LR and its cuts (logged); a changed
  ``num_epochs`` re-plans the final anneal (logged); the best competition score is the larger of the checkpoint's
  and the one of an existing ``checkpoint_best_score.pth``.
* anything else that loads a checkpoint (``--val``, ``--val --val_best``, ``--val --npz``): what defines the trained
  model (:data:`MODEL_KEYS`) comes from the checkpoint's saved configuration, whatever the configuration file says,
  so validation runs on ``network_weights``, the weights ``nnUNetv2_predict`` loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_topo.trainers.checkpoint import (
    RAW_WEIGHTS_KEY,
    LoadedCheckpoint,
    component_state,
    load_checkpoint_file,
)
from nnunetv2_topo.trainers.optimizers import build_optimizer
from nnunetv2_topo.trainers.score_rounds import BEST_SCORE_CHECKPOINT
from nnunetv2_topo.trainers.weight_ema import WeightEMA, unwrap_network

if TYPE_CHECKING:
    from nnunetv2_topo.trainers.host import TrainerHost as _Host
else:
    _Host = object

__all__ = ["MODEL_KEYS", "ResumeMixin"]

MODEL_KEYS: tuple[str, ...] = ("ema_decay",)
"""Configuration keys that decide which weights are the trained model (validation takes them from the checkpoint)."""


class ResumeMixin(_Host):
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
        """Before nnU-Net restores the optimizer (``--c``): when the checkpoint's ``optimizer`` differs from this
        configuration's, nnU-Net restores into a throwaway optimizer of the saved kind (loading SGD state into AdamW
        fails at the first step); returns the saved kind then, else None."""
        saved = ((state or {}).get("config") or {}).get("optimizer")
        if saved is None or saved == self.topo_config["optimizer"]:
            return None
        self.optimizer = build_optimizer(saved, self.network, self.initial_lr, self.weight_decay, self.topo_config)
        return saved

    # ------------------------------------------------------------------ the load steps (checkpoint.LOAD_ORDER)
    def restore_nnunet(self, loaded: LoadedCheckpoint) -> None:
        """nnU-Net's own loading: ``network_weights``, optimizer and grad-scaler state, logging, epoch."""
        nnUNetTrainer.load_checkpoint(self, loaded.path)  # (nnU-Net's own method reads a file name only)

    def restore_optimizer(self, loaded: LoadedCheckpoint) -> None:
        """``--c`` only (validation needs no optimizer): a fresh optimizer of this configuration's kind when
        ``optimizer`` changed, driven by the same plateau driver (its state stays), then this configuration's
        ``initial_lr`` (the saved LR scaled by new / old ``initial_lr``, so the plateau's cuts are kept) and
        ``weight_decay`` in every group. A no-op (nothing logged) when the configuration is unchanged."""
        checkpoint, saved = loaded.checkpoint, loaded.state.get("config")
        if not self.resuming or not saved:
            return
        cfg, driver = self.topo_config, self.plateau_driver
        assert driver is not None, "restore_optimizer before configure_optimizers"
        if saved.get("optimizer", cfg["optimizer"]) != cfg["optimizer"]:
            self.optimizer = build_optimizer(cfg["optimizer"], self.network, self.initial_lr, self.weight_decay, cfg)
            driver.attach(self.optimizer)
            self.print_to_log_file(
                f"optimizer changed on resume ({saved['optimizer']} -> {cfg['optimizer']}): {cfg['optimizer']} "
                f"starts from a fresh state (the {saved['optimizer']} momentum/moment estimates are dropped); the LR "
                "schedule continues",
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

    def restore_lr_scheduler(self, loaded: LoadedCheckpoint) -> None:
        """The plateau driver continues at this epoch (:meth:`PlateauDriver.resume`: a changed ``plateau_metric``
        or ``num_epochs`` is logged in one line each); a checkpoint of another trainer restarts the schedule."""
        saved = loaded.state.get("lr_scheduler")
        if saved is None:
            self.print_to_log_file(
                f"WARNING: {loaded.path} has no TopoWarmup scheduler state (written by "
                f"{loaded.checkpoint.get('trainer_name')}); warmup/plateau restart from epoch {self.current_epoch}"
            )
            return
        driver = self.plateau_driver
        assert driver is not None, "restore_lr_scheduler before configure_optimizers"
        for line in driver.resume(saved, loaded.state.get("config") or {}, self.current_epoch):
            self.print_to_log_file(line, also_print_to_console=True)
        if "val_loss_ema" not in saved:  # written before the driver kept it
            driver.resume_ema(self.logger.get_value("val_loss_ema", step=None)[: self.current_epoch])

    def restore_guarded_step(self, loaded: LoadedCheckpoint) -> None:
        self.guarded_step.load_state_dict(component_state(loaded.state, "guarded_step") or {})

    def restore_score_rounds(self, loaded: LoadedCheckpoint) -> None:
        self.score_rounds.load_state_dict(loaded.state.get("score_rounds") or {})

    def restore_best_score_file(self, loaded: LoadedCheckpoint) -> None:
        """``--c``: an existing ``checkpoint_best_score.pth`` keeps its place unless a later round beats it."""
        if not self.resuming:
            return
        path = join(self.output_folder, BEST_SCORE_CHECKPOINT)
        try:
            best = load_checkpoint_file(path)
        except FileNotFoundError:
            return
        self.score_rounds.adopt_best_of_file(best, path)

    def restore_weight_ema(self, loaded: LoadedCheckpoint) -> None:
        """nnU-Net loaded ``network_weights`` (the averaged ones when EMA was on): put the raw weights back into the
        network and restore the average from ``network_weights``."""
        checkpoint, state = loaded.checkpoint, loaded.state
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
