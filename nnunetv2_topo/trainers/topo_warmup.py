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

from nnunetv2_topo.errors import TopoError, exit_if_entry_point
from nnunetv2_topo.evaluation.scoring_pool import ScoringPool, threads_per_rank
from nnunetv2_topo.scheduling import PlateauDriver, WarmupPlateauScheduler
from nnunetv2_topo.trainers.checkpoint import (
    LOAD_ORDER,
    TOPO_STATE_KEY,
    LoadedCheckpoint,
    load_checkpoint_file,
    nnunet_payload,
    restore_checkpoint,
    topo_state,
    write_checkpoint,
)
from nnunetv2_topo.trainers.diagnostics import (
    PLOT_EVERY_EPOCHS,
    PROGRESS_PNG,
    finite_mean_max,
    plot_due,
    plot_progress_topo,
    write_progress_json,
)
from nnunetv2_topo.trainers.distributed import gather_objects, rank_and_world, reduce_term_means
from nnunetv2_topo.trainers.early_stop import EarlyStopMixin
from nnunetv2_topo.trainers.epoch_log import EpochLog
from nnunetv2_topo.trainers.final_validation import FinalValidation, gt_segmentations_dir
from nnunetv2_topo.trainers.guarded_step import GuardedStep
from nnunetv2_topo.trainers.loss_adapter import TopoLossCall, deep_supervision_weights, loss_parameters
from nnunetv2_topo.trainers.loss_schedule import LossWeightSchedule
from nnunetv2_topo.trainers.optimizers import build_optimizer
from nnunetv2_topo.trainers.resume import ResumeMixin
from nnunetv2_topo.trainers.run_config import fold_folder, log_run_config, run_config, write_config_json
from nnunetv2_topo.trainers.score_controller import RoundHooks, ScoreRoundController
from nnunetv2_topo.trainers.score_predict import PredictionSetup, ScoreCasePredictor
from nnunetv2_topo.trainers.score_rounds import BEST_SCORE_CHECKPOINT
from nnunetv2_topo.trainers.seeding import seed_data, seed_weights
from nnunetv2_topo.trainers.weight_ema import WeightEMA, unwrap_network

__all__ = ["DatasetLabelsError", "TopoLossCall", "nnUNetTrainerTopoWarmup"]


class DatasetLabelsError(TopoError, RuntimeError):
    """A dataset the TopoWarmup trainers cannot train (not background + one foreground class)."""


class nnUNetTrainerTopoWarmup(EarlyStopMixin, ResumeMixin, nnUNetTrainer):
    """nnU-Net trainer with the topology loss (by default CE + Dice + clDice), Muon + AdamW (both chosen by benchmark)
    and a warmup -> ReduceLROnPlateau schedule."""

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
            raise DatasetLabelsError(
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
        threads = threads_per_rank(rank_and_world()[1])  # logits -> segmentation and the scoring worker
        pool = ScoringPool(timeout_s=cfg["score_case_timeout_s"], threads=threads)
        self.score_rounds = ScoreRoundController(cfg["score_every_epochs"], log=self.print_to_log_file, pool=pool)
        setup = lambda: PredictionSetup.from_trainer(self)  # noqa: E731 (the network exists after initialize)
        self.score_predictor = ScoreCasePredictor(setup, self.gt_dir, bool(cfg["score_mirroring"]), threads)
        self.plot_every = PLOT_EVERY_EPOCHS  # progress_topo.png (progress_topo.json: every epoch)
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

    def get_training_transforms(self, *args: Any, **kwargs: Any) -> ComposeTransforms:
        """nnU-Net's training transforms plus the loss's extra targets before deep-supervision downsampling."""
        return self.loss.insert_targets_transform(super().get_training_transforms(*args, **kwargs))

    def get_validation_transforms(self, *args: Any, **kwargs: Any) -> ComposeTransforms:
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
        driver = self.plateau_driver
        assert driver is not None, "on_train_epoch_start before configure_optimizers"
        lr = driver.start_epoch(self.current_epoch)
        self.print_to_log_file("")
        self.print_to_log_file(f"Epoch {self.current_epoch}")
        self.print_to_log_file(f"Current learning rate: {lr:.6g} ({driver.phase(self.current_epoch)})")
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
        driver = self.plateau_driver
        assert driver is not None, "on_validation_epoch_end before configure_optimizers"
        driver.end_epoch(
            self.current_epoch,
            float(self.logger.get_value("val_losses", step=-1)),
            ema_fg_dice=float(self.logger.get_value("ema_fg_dice", step=-1)),
        )  # fmt: skip (val_score steps once per scoring round: RoundHooks.step_plateau)
        self.logger.log("val_loss_ema", driver.val_loss_ema, self.current_epoch)

    def on_epoch_end(self) -> None:
        epoch = self.current_epoch
        self.epoch_log.pad(epoch)
        if self.score_rounds.every > 0:
            self._score_rounds_epoch_end()
        driver = self.plateau_driver
        assert driver is not None, "on_epoch_end before configure_optimizers"
        status = driver.status(epoch)
        for line in self.epoch_log.summary(epoch, self.guarded_step.clip_norm) + ([status] if status else []):
            self.print_to_log_file(line)
        super().on_epoch_end()
        if self.local_rank == 0:
            self.write_diagnostics()

    def write_diagnostics(self) -> None:
        """Write ``progress_topo.json`` (every epoch) and ``progress_topo.png`` (every ``plot_every`` epochs and
        after the last) into the fold folder (rank 0, after nnU-Net's ``on_epoch_end``)."""
        log = self.logger.local_logger.my_fantastic_logging
        driver = self.plateau_driver
        last = self.current_epoch >= self.num_epochs or (driver is not None and driver.should_stop())
        try:
            write_progress_json(log, self.output_folder)
            if last or plot_due(self.current_epoch - 1, self.plot_every):
                plot_progress_topo(log, join(self.output_folder, PROGRESS_PNG))
        except Exception as exc:  # noqa: BLE001 (a plotting problem must not end a long training)
            self.print_to_log_file(f"WARNING: could not write {PROGRESS_PNG}: {type(exc).__name__}: {exc}")

    def on_train_end(self) -> None:
        if self.score_rounds.every > 0:  # every rank: await the round in flight, apply it, stop the worker
            self.score_rounds.finish(self.current_epoch - 1, self.round_hooks())
        super().on_train_end()

    # ------------------------------------------------------------------ competition-score rounds
    def score_cases(self) -> list[str]:
        """The validation cases of this fold scored in every round (see ``ScoreRoundController.choose_cases``)."""
        return self.score_rounds.choose_cases(self.do_split()[1], self.topo_config["score_num_cases"], self.fold)

    def _latest_checkpoint_due(self, epoch: int) -> bool:
        """nnU-Net's ``on_epoch_end`` writes ``checkpoint_latest.pth`` after this epoch."""
        return (epoch + 1) % self.save_every == 0 and epoch != self.num_epochs - 1

    def _score_rounds_epoch_end(self) -> None:
        epoch = self.current_epoch
        cases = self.score_cases() if self.score_rounds.due(epoch) else []
        self.score_rounds.epoch_end(epoch, cases, self._latest_checkpoint_due(epoch), self.round_hooks())

    def round_hooks(self) -> RoundHooks:
        """What the score rounds need from this trainer (:class:`~.score_controller.RoundHooks`)."""
        write = None
        if self.local_rank == 0 and not self.disable_checkpointing:
            path = join(self.output_folder, BEST_SCORE_CHECKPOINT)
            write = lambda checkpoint: write_checkpoint(checkpoint, path)  # noqa: E731
        weights = "EMA weights" if self.weight_ema is not None else "weights"
        mirroring = "on" if self.topo_config["score_mirroring"] else "off"
        assert self.plateau_driver is not None, "round_hooks before configure_optimizers"
        return RoundHooks(
            self.score_predictor, self.plans_manager.image_reader_writer_class, self.epoch_log.log_scores,
            self.plateau_driver.end_round, self.checkpoint_payload if self.local_rank == 0 else None, write,
            f"sliding window, mirroring {mirroring}, this epoch's {weights}",
        )  # fmt: skip

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

    def checkpoint_payload(self) -> dict[str, Any]:
        """nnU-Net's keys (:func:`~nnunetv2_topo.trainers.checkpoint.nnunet_payload`) and ``topo_state``
        (:func:`~nnunetv2_topo.trainers.checkpoint.topo_state`); the tensors are the live ones."""
        return {**nnunet_payload(self, self.weight_ema), TOPO_STATE_KEY: topo_state(self)}

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint plus ``topo_state``, written atomically (rank 0)."""
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        write_checkpoint(self.checkpoint_payload(), filename)

    load_order: ClassVar[tuple[str, ...]] = LOAD_ORDER
    """The load steps (:data:`~nnunetv2_topo.trainers.checkpoint.LOAD_ORDER`)."""

    def load_checkpoint(self, filename_or_checkpoint: str | dict) -> None:
        """Every load step of :attr:`load_order` on the file (``--c`` continues the same run; ``--val`` validates
        the model the checkpoint holds: see :class:`~nnunetv2_topo.trainers.resume.ResumeMixin`)."""
        if not isinstance(filename_or_checkpoint, (str, os.PathLike)):
            raise TypeError(f"{type(self).__name__}.load_checkpoint expects a checkpoint file name")
        path = str(filename_or_checkpoint)
        checkpoint = load_checkpoint_file(path)
        state = checkpoint.get(TOPO_STATE_KEY)
        if not self.was_initialized:
            self.initialize()
        if not self.resuming:
            self.adopt_trained_model(state, path)
        self.prepare_optimizer_switch(state)
        restore_checkpoint(self, LoadedCheckpoint(path, checkpoint, state or {}), self.load_order)
        self.epoch_log.register(self.current_epoch)
