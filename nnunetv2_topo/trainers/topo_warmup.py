"""``nnUNetTrainerTopoWarmup``: nnU-Net's trainer with the topology loss, a warmup -> plateau LR schedule, gradient
clipping with logged norms, non-finite step skipping, weight EMA and competition-score rounds.

This class only wires nnU-Net's hooks to the components that own each concern (``docs/explanation/
trainer-components.md``: configuration, loss adapter and loss schedule, guarded step, plateau driver, weight EMA, score
rounds, final validation, checkpoint payload, collectives). Network, data, augmentation and inference are nnU-Net's.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from nnunetv2_topo.errors import exit_if_entry_point
from nnunetv2_topo.scheduling import PlateauDriver, WarmupPlateauScheduler
from nnunetv2_topo.trainers.checkpoint import TOPO_STATE_KEY, load_checkpoint_file, nnunet_payload, write_checkpoint
from nnunetv2_topo.trainers.diagnostics import PROGRESS_PNG, finite_mean_max, plot_progress_topo, write_progress_json
from nnunetv2_topo.trainers.distributed import gather_objects, reduce_term_means
from nnunetv2_topo.trainers.early_stop import EarlyStopMixin
from nnunetv2_topo.trainers.epoch_log import EpochLog
from nnunetv2_topo.trainers.final_validation import FinalValidation, gt_segmentations_dir
from nnunetv2_topo.trainers.guarded_step import GuardedStep
from nnunetv2_topo.trainers.loss_adapter import TopoLossCall, deep_supervision_weights, loss_parameters
from nnunetv2_topo.trainers.loss_schedule import LossWeightSchedule
from nnunetv2_topo.trainers.optimizers import build_optimizer
from nnunetv2_topo.trainers.resume import ResumeMixin
from nnunetv2_topo.trainers.run_config import fold_folder, log_run_config, run_config, write_config_json
from nnunetv2_topo.trainers.score_controller import ScoreRoundController, record_message
from nnunetv2_topo.trainers.score_predict import ScoreCasePredictor
from nnunetv2_topo.trainers.score_rounds import BEST_SCORE_CHECKPOINT
from nnunetv2_topo.trainers.seeding import seed_data, seed_weights
from nnunetv2_topo.trainers.weight_ema import WeightEMA, unwrap_network

__all__ = ["TopoLossCall", "nnUNetTrainerTopoWarmup"]


class nnUNetTrainerTopoWarmup(EarlyStopMixin, ResumeMixin, nnUNetTrainer):
    """nnU-Net trainer with the topology loss (by default CE + Dice + clDice, chosen by benchmark) and a warmup ->
    ReduceLROnPlateau schedule."""

    topo_defaults: ClassVar[dict[str, Any]] = {}
    """Hyperparameters of this variant (merged along the class hierarchy; the YAML config overrides them)."""

    topo_fixed_keys: ClassVar[tuple[str, ...]] = ()
    """Keys of ``topo_defaults`` the variant's name promises (``num_epochs`` of ``_250epochs``): a config file may
    repeat their value but not change it."""

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 (nnU-Net's signature)
    ) -> None:
        # configuration first: a bad file fails before nnU-Net creates output folders and log files
        name = type(self).__name__
        resuming = bool(plans.get("continue_training"))
        run = run_config(
            fold_folder(plans, configuration, fold, name), resume=resuming,
            variant_defaults=self.merged_topo_defaults(), variant_name=f"{name}.topo_defaults",
            fixed_keys=self.topo_fixed_keys,
        )  # fmt: skip
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.resuming = resuming
        self.topo_run = run
        self.topo_config, self.topo_config_path, self.config_history = run.config, run.source, run.history
        cfg = self.topo_config
        self.initial_lr = cfg["initial_lr"]
        self.weight_decay = cfg["weight_decay"]
        self.num_epochs = cfg["num_epochs"]
        self.num_iterations_per_epoch = cfg["num_iterations_per_epoch"]
        self.num_val_iterations_per_epoch = cfg["num_val_iterations_per_epoch"]
        self.active_terms: tuple[str, ...] = tuple(cfg["loss_weights"])
        if self.label_manager.has_regions or self.label_manager.num_segmentation_heads != 2:
            raise RuntimeError(
                f"{name} needs a binary dataset (labels background, one foreground class and optionally 'ignore'); "
                f"dataset.json labels are {dataset_json.get('labels')}. Use nnUNetTrainer for multi-class or "
                "region-based data."
            )
        # the components (docs/explanation/trainer-components.md); the plateau driver comes with the optimizer
        self.guarded_step = GuardedStep(
            cfg["grad_clip_norm"], cfg["max_consecutive_skips"], cfg["grad_norm_log_every"],
            log=self.print_to_log_file, initial_lr=self.initial_lr,
        )  # fmt: skip
        self.plateau_driver: PlateauDriver | None = None
        self.weight_ema: WeightEMA | None = None
        self.gt_dir = gt_segmentations_dir(self.preprocessed_dataset_folder_base)
        self.score_rounds = ScoreRoundController(cfg["score_every_epochs"], log=self.print_to_log_file)
        self.score_predictor = ScoreCasePredictor(self, self.gt_dir, bool(cfg["score_mirroring"]))
        self.final_validation = FinalValidation(
            self.output_folder, self.gt_dir, dataset_json["file_ending"], cfg["final_score_workers"],
            log=self.print_to_log_file,
        )  # fmt: skip
        self.epoch_log = EpochLog(self.logger, self.active_terms, scoring=self.score_rounds.every > 0)
        self.loss_schedule = LossWeightSchedule(cfg, self.print_to_log_file)
        self._ema_context: Any = None
        self._train_terms: list[dict[str, float]] = []
        self._val_terms: list[dict[str, float]] = []
        self.epoch_log.register(self.current_epoch)
        log_run_config(run, name, self.print_to_log_file)

    @classmethod
    def merged_topo_defaults(cls) -> dict[str, Any]:
        """``topo_defaults`` merged from the base class down to ``cls`` (a subclass wins)."""
        merged: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("topo_defaults", {}))
        return merged

    # ------------------------------------------------------------------ optimizer, schedule, loss
    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, WarmupPlateauScheduler]:
        cfg = self.topo_config
        optimizer = build_optimizer(cfg["optimizer"], self.network, self.initial_lr, self.weight_decay, cfg)
        self.plateau_driver = PlateauDriver.from_config(self.topo_config, optimizer, log=self.print_to_log_file)
        return optimizer, self.plateau_driver.scheduler

    def _build_loss(self) -> TopoLossCall:
        ds_weights = None
        if self.enable_deep_supervision:
            scales = len(self._get_deep_supervision_scales())
            ds_weights = deep_supervision_weights(scales, lowest_nonzero=self.is_ddp and not self._do_i_compile())
        ignore, batch_dice = self.label_manager.ignore_label, self.configuration_manager.batch_dice
        return TopoLossCall.from_parameters(**loss_parameters(self.topo_config, ignore, ds_weights, batch_dice))

    def get_training_transforms(self, *args: Any, **kwargs: Any) -> ComposeTransforms:  # type: ignore[override]
        """nnU-Net's training transforms plus the loss's extra targets before deep-supervision downsampling."""
        return self.loss.insert_targets_transform(super().get_training_transforms(*args, **kwargs))

    def get_validation_transforms(self, *args: Any, **kwargs: Any) -> ComposeTransforms:  # type: ignore[override]
        return self.loss.insert_targets_transform(super().get_validation_transforms(*args, **kwargs))

    def initialize(self) -> None:
        seed_weights(self.topo_config["seed"])  # DDP then broadcasts rank 0's weights
        super().initialize()
        decay = self.topo_config["ema_decay"]
        self.weight_ema = WeightEMA(unwrap_network(self.network), decay) if decay > 0 else None

    # ------------------------------------------------------------------ training epoch
    def on_train_start(self) -> None:
        if self.topo_run.deferred_error is not None:  # nnUNetv2_train: one line, exit 2; elsewhere raised
            exit_if_entry_point(self.topo_run.deferred_error)
            raise self.topo_run.deferred_error
        if not self.was_initialized:
            self.initialize()
        seed_data(self.topo_config["seed"], self.current_epoch, self.local_rank)
        super().on_train_start()
        if self.local_rank == 0:
            self.save_topo_config()
        if self.score_rounds.every > 0:
            self.score_cases()
            if self.local_rank == 0:
                self.copy_gt_spacing_sidecars()  # the scoring process reads gt_segmentations with Tiff3DIO
            self.score_rounds.pool.start()

    def on_train_epoch_start(self) -> None:
        # replaces nnU-Net's version, which calls lr_scheduler.step(current_epoch): the ReduceLROnPlateau trap
        self.network.train()
        lr = self.plateau_driver.start_epoch(self.current_epoch)
        self.print_to_log_file("")
        self.print_to_log_file(f"Epoch {self.current_epoch}")
        self.print_to_log_file(f"Current learning rate: {lr:.6g} ({self.plateau_driver.phase(self.current_epoch)})")
        self.logger.log("lrs", lr, self.current_epoch)
        self.guarded_step.start_epoch()
        self._train_terms = []
        self.loss_schedule.start_epoch(self.current_epoch, self.loss, self.logger, self.num_iterations_per_epoch)

    def train_step(self, batch: dict) -> dict:
        batch = self.loss.take_targets(batch, self.device)
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        if isinstance(target, list):
            target = [i.to(self.device, non_blocking=True) for i in target]
        else:
            target = target.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        # nnU-Net's idiom: autocast only on CUDA (slow on CPU, unsupported on MPS)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            output = self.network(data)
            del data
            loss = self.loss(output, target)
        result = self.guarded_step.step(loss, self.network, self.optimizer, self.grad_scaler)
        if result.stepped and self.weight_ema is not None:
            self.weight_ema.update(unwrap_network(self.network))
        terms = self.loss.last_term_values  # on the device: read once per epoch (reduce_term_means), no sync here
        self._train_terms.append(terms)
        scaler = self.grad_scaler
        self.guarded_step.record(
            result, self.current_epoch * self.num_iterations_per_epoch + len(self._train_terms) - 1,
            self.optimizer.param_groups[0]["lr"], terms, amp_scale=scaler.get_scale if scaler is not None else None,
            context=f"epoch {self.current_epoch}, ",
        )  # fmt: skip
        return {"loss": np.array(result.loss_value if result.stepped else math.nan)}

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        losses = np.asarray(collate_outputs(train_outputs)["loss"], dtype=np.float64).ravel()
        losses = np.concatenate(gather_objects(losses))
        finite = losses[np.isfinite(losses)]
        self.logger.log("train_losses", float(finite.mean()) if finite.size else math.nan, self.current_epoch)
        for term, value in reduce_term_means(self._train_terms, self.active_terms).items():
            self.logger.log(f"train_loss_{term}", value, self.current_epoch)
        # gradients are identical on all ranks after DDP's all-reduce: no reduction needed for the norms
        gmean, gmax = finite_mean_max(self.guarded_step.epoch_grad_norms)
        self.logger.log("grad_norm_mean", gmean, self.current_epoch)
        self.logger.log("grad_norm_max", gmax, self.current_epoch)
        self.logger.log("skipped_steps", self.guarded_step.epoch_skipped, self.current_epoch)

    # ------------------------------------------------------------------ validation epoch
    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._val_terms = []
        self.loss_schedule.start_validation(self.loss)
        if self.weight_ema is not None:  # validate the averaged weights (restored in on_validation_epoch_end)
            self._ema_context = self.weight_ema.applied_to(unwrap_network(self.network))
            self._ema_context.__enter__()

    def validation_step(self, batch: dict) -> dict:
        out = super().validation_step(self.loss.take_targets(batch, self.device))
        self._val_terms.append(self.loss.last_term_values)
        return out

    def on_validation_epoch_end(self, val_outputs: list[dict]) -> None:
        if self._ema_context is not None:
            self._ema_context.__exit__(None, None, None)
            self._ema_context = None
        super().on_validation_epoch_end(val_outputs)  # logs all-gathered val_losses, mean/ema fg Dice
        for term, value in reduce_term_means(self._val_terms, self.active_terms).items():
            self.logger.log(f"val_loss_{term}", value, self.current_epoch)
        # val_losses and ema_fg_dice are all-gathered by nnU-Net: the plateau steps identically on every rank
        self.plateau_driver.end_epoch(
            self.current_epoch,
            float(self.logger.get_value("val_losses", step=-1)),
            ema_fg_dice=float(self.logger.get_value("ema_fg_dice", step=-1)),
        )  # fmt: skip (val_score steps once per scoring round, in _apply_score_record)
        self.logger.log("val_loss_ema", self.plateau_driver.val_loss_ema, self.current_epoch)

    def on_epoch_end(self) -> None:
        epoch = self.current_epoch
        self.epoch_log.pad(epoch)
        if self.score_rounds.every > 0:
            self._score_rounds_epoch_end()
        status = self.plateau_driver.status(epoch)
        for line in self.epoch_log.summary(epoch, self.guarded_step.clip_norm) + ([status] if status else []):
            self.print_to_log_file(line)
        super().on_epoch_end()
        if self.local_rank == 0:
            self.write_diagnostics()

    def write_diagnostics(self) -> None:
        """Write ``progress_topo.json`` and ``progress_topo.png`` into the fold folder (rank 0)."""
        log = self.logger.local_logger.my_fantastic_logging
        try:
            write_progress_json(log, self.output_folder)
            plot_progress_topo(log, join(self.output_folder, PROGRESS_PNG))
        except Exception as exc:  # noqa: BLE001 (a plotting problem must not end a long training)
            self.print_to_log_file(f"WARNING: could not write {PROGRESS_PNG}: {type(exc).__name__}: {exc}")

    def on_train_end(self) -> None:
        if self.score_rounds.every > 0:  # every rank: await the round in flight and apply it
            for record in self.score_rounds.collect(self.current_epoch - 1, must_wait=True):
                self._apply_score_record(record)
            self.score_rounds.shutdown()
        super().on_train_end()

    # ------------------------------------------------------------------ competition-score rounds
    def score_cases(self) -> list[str]:
        """The validation cases of this fold scored in every round (see ``ScoreRoundController.choose_cases``)."""
        return self.score_rounds.choose_cases(self.do_split()[1], self.topo_config["score_num_cases"], self.fold)

    def _latest_checkpoint_due(self, epoch: int) -> bool:
        """nnU-Net's ``on_epoch_end`` writes ``checkpoint_latest.pth`` after this epoch."""
        return (epoch + 1) % self.save_every == 0 and epoch != self.num_epochs - 1

    def _score_rounds_epoch_end(self) -> None:
        """Every rank: apply a finished round (awaited only when the next round is due or checkpoint_latest.pth
        follows), then start this epoch's round if due."""
        epoch = self.current_epoch
        due = self.score_rounds.due(epoch)
        for record in self.score_rounds.collect(epoch, must_wait=due or self._latest_checkpoint_due(epoch)):
            self._apply_score_record(record)
        if due:
            cases = self.score_rounds.round_cases(self.score_cases())
            snapshot = self.checkpoint_payload if self.local_rank == 0 else None
            reader = self.plans_manager.image_reader_writer_class
            done = self.score_rounds.start(epoch, cases, self.score_predictor, reader, snapshot)
            weights = "EMA weights" if self.weight_ema is not None else "weights"
            self.print_to_log_file(
                f"Scoring round of epoch {epoch}: predicted {len(done.cases)} validation cases in "
                f"{done.predict_seconds:.1f} s in the training process ({len(cases)} over all ranks; sliding "
                f"window, mirroring {'on' if self.topo_config['score_mirroring'] else 'off'}, this epoch's {weights}); "
                "the competition metric runs in a background process"
            )

    def _apply_score_record(self, record: dict[str, Any]) -> None:
        """Every rank: log a round's scores at the epoch whose weights were scored, keep checkpoint_best_score.pth
        when it is the best round (rank 0), step a ``val_score`` plateau."""
        self.epoch_log.log_scores(record)
        write = None
        if self.local_rank == 0 and not self.disable_checkpointing:
            path = join(self.output_folder, BEST_SCORE_CHECKPOINT)
            write = lambda checkpoint: write_checkpoint(checkpoint, path)  # noqa: E731
        best = self.score_rounds.accept(record, write)
        self.print_to_log_file(record_message(record, best, BEST_SCORE_CHECKPOINT), also_print_to_console=True)
        if record["error"] is None:
            self.plateau_driver.end_round(int(record["epoch"]), float(record["score"]))

    # ------------------------------------------------------------------ final validation
    def copy_gt_spacing_sidecars(self) -> int:
        from nnunetv2.paths import nnUNet_raw

        raw_labels = Path(nnUNet_raw) / self.plans_manager.dataset_name / "labelsTr" if nnUNet_raw else None
        return self.final_validation.copy_gt_spacing_sidecars(raw_labels)

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """nnU-Net's validation (predictions + Dice ``summary.json``) of the weights predict loads (the EMA when
        the run had it), then the competition metric into ``validation/summary_topo.json`` (rank 0)."""
        if self.local_rank == 0:
            self.copy_gt_spacing_sidecars()
        if self.weight_ema is not None:
            self.print_to_log_file(
                f"Validating the EMA weights (ema_decay {self.weight_ema.decay}, {self.weight_ema.num_updates} updates)"
            )
            with self.weight_ema.applied_to(unwrap_network(self.network)):
                super().perform_actual_validation(save_probabilities)
        else:
            super().perform_actual_validation(save_probabilities)
        if self.local_rank == 0:
            self.final_validation.score_or_report(self.logger.log_summary)

    # ------------------------------------------------------------------ checkpoints
    def save_topo_config(self) -> None:
        write_config_json(self.topo_run, type(self).__name__, self.output_folder)

    def topo_state(self) -> dict[str, Any]:
        """Every component's state (``checkpoint[TOPO_STATE_KEY]``)."""
        return {
            "lr_scheduler": self.plateau_driver.state_dict(),
            "config": dict(self.topo_config),
            "config_history": list(self.config_history),
            "weight_ema": self.weight_ema.state_dict() if self.weight_ema is not None else None,
            **self.guarded_step.state_dict(),
            "score_rounds": self.score_rounds.state_dict(),
        }

    def checkpoint_payload(self) -> dict[str, Any]:
        """nnU-Net's keys (:func:`~nnunetv2_topo.trainers.checkpoint.nnunet_payload`) and ``topo_state``; the
        tensors are the live ones."""
        return {**nnunet_payload(self, self.weight_ema), TOPO_STATE_KEY: self.topo_state()}

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint plus ``topo_state``, written atomically (rank 0)."""
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        write_checkpoint(self.checkpoint_payload(), filename)

    def load_checkpoint(self, filename_or_checkpoint: str | dict) -> None:
        """nnU-Net's loading, then every component's state (``--c`` continues the same run; ``--val`` validates
        the model the checkpoint holds: see :class:`~nnunetv2_topo.trainers.resume.ResumeMixin`)."""
        if not isinstance(filename_or_checkpoint, (str, os.PathLike)):
            raise TypeError(f"{type(self).__name__}.load_checkpoint expects a checkpoint file name")
        checkpoint = load_checkpoint_file(filename_or_checkpoint)
        state = checkpoint.get(TOPO_STATE_KEY)
        if not self.was_initialized:
            self.initialize()
        if not self.resuming:
            self.adopt_trained_model(state, str(filename_or_checkpoint))
        switched = self.prepare_optimizer_switch(state)
        super().load_checkpoint(str(filename_or_checkpoint))
        if state is None:
            self.print_to_log_file(
                f"WARNING: {filename_or_checkpoint} has no TopoWarmup scheduler state (written by "
                f"{checkpoint.get('trainer_name')}); warmup/plateau restart from epoch {self.current_epoch}"
            )
        else:
            self.restore_optimizer(checkpoint, state, switched)
            self.plateau_driver.load_state_dict(state["lr_scheduler"])
            self.guarded_step.load_state_dict(state)
            self.score_rounds.load_state_dict(state.get("score_rounds") or {})
            if self.resuming:
                self.adopt_best_score_file()
        self.restore_weight_ema(checkpoint, state or {})
        self.epoch_log.register(self.current_epoch)
        if "val_loss_ema" not in ((state or {}).get("lr_scheduler") or {}):  # written before the driver kept it
            self.plateau_driver.resume_ema(self.logger.get_value("val_loss_ema", step=None)[: self.current_epoch])
