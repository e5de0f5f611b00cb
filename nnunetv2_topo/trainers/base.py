"""``nnUNetTrainerTopoWarmup``: nnU-Net's trainer with the topology loss, a warmup -> plateau LR schedule,
gradient clipping with logged norms, non-finite step skipping and per-term diagnostics.

Everything else (network, data loading, augmentation, deep supervision, checkpoints, inference) is nnU-Net's own.
Variants (:mod:`nnunetv2_topo.trainers.variants`) only change ``topo_defaults``; the file named by
``nnUNet_topo_config`` overrides any hyperparameter (:mod:`nnunetv2_topo.trainers.config`).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast, nn
from torch import distributed as dist

from nnunetv2_topo.io import atomic_path, atomic_write_text
from nnunetv2_topo.scheduling import PlateauDriver, WarmupPlateauScheduler
from nnunetv2_topo.trainers.config import format_config, loss_keys, save_config, to_jsonable
from nnunetv2_topo.trainers.diagnostics import (
    PROGRESS_PNG,
    TOPO_LOG_KEYS,
    finite_mean_max,
    plot_progress_topo,
    write_progress_json,
)
from nnunetv2_topo.trainers.early_stop import EarlyStopMixin
from nnunetv2_topo.trainers.run_config import fold_folder, run_config
from nnunetv2_topo.trainers.score_rounds import (
    BEST_SCORE_CHECKPOINT,
    SCORE_LOG_KEYS,
    ScoreRound,
    ScoringPool,
    cpu_copy,
    select_score_cases,
)
from nnunetv2_topo.trainers.seeding import seed_data, seed_weights
from nnunetv2_topo.trainers.weight_ema import WeightEMA, unwrap_network

__all__ = ["TopoLossCall", "nnUNetTrainerTopoWarmup"]

CONFIG_FILE = "topo_config.json"


class TopoLossCall(nn.Module):
    """Adapts ``TopologyLoss`` to nnU-Net's ``self.loss(output, target)`` call.

    The extra per-voxel targets (skeleton, band) are split off the batch by the trainer before nnU-Net's code sees
    the target and are handed to the loss through :attr:`extras` right before the call.
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.topology_loss = loss
        self.extras: dict[str, torch.Tensor] = {}

    @property
    def required_targets(self) -> tuple[str, ...]:
        """The precomputed targets the loss reads, in channel order."""
        return tuple(getattr(self.topology_loss, "required_targets", ()))

    @property
    def target_params(self) -> dict[str, Any]:
        """The parameters of :attr:`required_targets` by configuration key."""
        return dict(getattr(self.topology_loss, "target_params", {}))

    @property
    def last_terms(self) -> dict[str, float]:
        return dict(getattr(self.topology_loss, "last_terms", {}))

    def forward(self, output: Any, target: Any) -> torch.Tensor:
        if not isinstance(output, (list, tuple)):  # deep supervision disabled
            output, target = [output], [target]
        return self.topology_loss(list(output), list(target), **self.extras)


class nnUNetTrainerTopoWarmup(EarlyStopMixin, nnUNetTrainer):
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
        run = run_config(
            fold_folder(plans, configuration, fold, name),
            resume=bool(plans.get("continue_training")),
            variant_defaults=self.merged_topo_defaults(),
            variant_name=f"{name}.topo_defaults",
            fixed_keys=self.topo_fixed_keys,
        )
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.topo_config, self.topo_config_path = run.config, run.source
        self.config_history = run.history
        self._deferred_config_error = run.deferred_error
        cfg = self.topo_config
        self.initial_lr = cfg["initial_lr"]
        self.weight_decay = cfg["weight_decay"]
        self.num_epochs = cfg["num_epochs"]
        self.num_iterations_per_epoch = cfg["num_iterations_per_epoch"]
        self.num_val_iterations_per_epoch = cfg["num_val_iterations_per_epoch"]
        self.grad_clip_norm = float(cfg["grad_clip_norm"])
        self.grad_norm_log_every = int(cfg["grad_norm_log_every"])
        self.max_consecutive_skips = int(cfg["max_consecutive_skips"])
        self.active_terms: tuple[str, ...] = tuple(cfg["loss_weights"])

        if self.label_manager.has_regions or self.label_manager.num_segmentation_heads != 2:
            raise RuntimeError(
                f"{type(self).__name__} needs a binary dataset (labels background, one foreground class and "
                f"optionally 'ignore'); dataset.json labels are {dataset_json.get('labels')}. Use nnUNetTrainer "
                "for multi-class or region-based data."
            )

        self.consecutive_skips = 0
        self.total_skipped_steps = 0
        self.weight_ema: WeightEMA | None = None  # -> initialize
        self._ema_context: Any = None
        self._epoch_grad_norms: list[float] = []
        self._epoch_skipped = 0
        self._train_terms: list[dict[str, float]] = []
        self._val_terms: list[dict[str, float]] = []
        self.score_every_epochs = int(cfg["score_every_epochs"])
        self.score_records: list[dict[str, Any]] = []
        """Every applied scoring round (``score_every_epochs``), oldest first; kept across ``--c``."""
        self.best_score: float | None = None
        self.best_score_epoch: int | None = None
        self._score_round: ScoreRound | None = None
        self._score_cases: list[str] | None = None
        self._score_predictor: Any = None
        self._scoring_pool = ScoringPool()
        self._register_log_keys()

        origin = f"from {self.topo_config_path}" if self.topo_config_path else "set nnUNet_topo_config to override"
        if run.notes and not self.topo_config_path:
            origin = "the saved configuration"
        self.print_to_log_file(
            f"{name} configuration ({origin}):\n" + format_config(cfg),
            also_print_to_console=True,
            add_timestamp=False,
        )
        for note in run.notes:
            self.print_to_log_file(f"Configuration: {note}", also_print_to_console=True)
        for warning in run.warnings:
            self.print_to_log_file(f"WARNING (configuration): {warning}", also_print_to_console=True)

    # ------------------------------------------------------------------ configuration
    @classmethod
    def merged_topo_defaults(cls) -> dict[str, Any]:
        """``topo_defaults`` merged from the base class down to ``cls`` (a subclass wins)."""
        merged: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("topo_defaults", {}))
        return merged

    def _log_keys(self) -> list[str]:
        keys = [f"{split}_loss_{t}" for t in self.active_terms for split in ("train", "val")]
        score_keys = list(SCORE_LOG_KEYS) if self.score_every_epochs > 0 else []
        return keys + list(TOPO_LOG_KEYS) + ["val_loss_ema"] + score_keys

    def _register_log_keys(self) -> None:
        """Add this trainer's keys to nnU-Net's local logger (padding with NaN up to the current epoch, so a resumed
        run whose configuration added a term keeps one value per epoch)."""
        store = self.logger.local_logger.my_fantastic_logging
        for key in self._log_keys():
            values = store.setdefault(key, [])
            values.extend([math.nan] * (self.current_epoch - len(values)))

    # ------------------------------------------------------------------ optimizer, schedule, loss
    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, WarmupPlateauScheduler]:
        cfg = self.topo_config
        params = self.network.parameters()
        if cfg["optimizer"] == "sgd":
            optimizer = torch.optim.SGD(
                params, self.initial_lr, weight_decay=self.weight_decay, momentum=0.99, nesterov=True
            )
        else:
            optimizer = torch.optim.AdamW(params, self.initial_lr, weight_decay=self.weight_decay)
        self.plateau_driver = PlateauDriver.from_config(cfg, optimizer, log=self.print_to_log_file)
        return optimizer, self.plateau_driver.scheduler

    def deep_supervision_weights(self) -> list[float] | None:
        """nnU-Net's weights: 1/2^i per scale, the lowest 0 (1e-6 under DDP without compile), normalised."""
        if not self.enable_deep_supervision:
            return None
        n = len(self._get_deep_supervision_scales())
        weights = np.array([1 / (2**i) for i in range(n)])
        weights[-1] = 1e-6 if (self.is_ddp and not self._do_i_compile()) else 0
        return list(weights / weights.sum())

    def loss_parameters(self) -> dict[str, Any]:
        """Keyword arguments of ``TopologyLoss`` from the configuration (every term parameter it declares)."""
        cfg = self.topo_config
        kwargs: dict[str, Any] = {
            "weights": dict(cfg["loss_weights"]),
            "ignore_label": self.label_manager.ignore_label,
            "ds_weights": self.deep_supervision_weights(),
            "batch_dice": self.configuration_manager.batch_dice,
        }
        kwargs.update({k: cfg[k] for k in loss_keys() if k != "loss_weights"})
        return kwargs

    def _build_loss(self) -> TopoLossCall:
        from nnunetv2_topo.losses import TopologyLoss

        return TopoLossCall(TopologyLoss(**self.loss_parameters()))

    # ------------------------------------------------------------------ data: extra target channels
    def _topo_targets_transform(self) -> Any | None:
        targets = self.loss.required_targets if self.loss is not None else ()
        if not targets:
            return None
        from nnunetv2_topo.transforms import TopoTargetsTransform

        return TopoTargetsTransform(targets, self.label_manager.ignore_label, **self.loss.target_params)

    def _insert_topo_transform(self, transforms: ComposeTransforms) -> ComposeTransforms:
        extra = self._topo_targets_transform()
        if extra is None:
            return transforms
        position = next(
            (i for i, t in enumerate(transforms.transforms) if isinstance(t, DownsampleSegForDSTransform)),
            len(transforms.transforms),
        )
        transforms.transforms.insert(position, extra)
        return transforms

    def get_training_transforms(self, *args: Any, **kwargs: Any) -> ComposeTransforms:  # type: ignore[override]
        """nnU-Net's training transforms plus ``TopoTargetsTransform`` just before deep-supervision downsampling."""
        return self._insert_topo_transform(super().get_training_transforms(*args, **kwargs))

    def get_validation_transforms(self, *args: Any, **kwargs: Any) -> ComposeTransforms:  # type: ignore[override]
        return self._insert_topo_transform(super().get_validation_transforms(*args, **kwargs))

    def _split_topo_targets(self, batch: dict) -> dict:
        """Split the extra channels off ``batch['target']`` (so nnU-Net's code sees labels only) and hand them,
        on the device, to the loss."""
        names = self.loss.required_targets
        if not names:
            self.loss.extras = {}
            return batch
        from nnunetv2_topo.transforms import split_topo_targets

        labels, extras = split_topo_targets(batch["target"], names)
        self.loss.extras = {k: v.to(self.device, non_blocking=True) for k, v in extras.items()}
        return {**batch, "target": labels}

    # ------------------------------------------------------------------ DDP helpers
    def _all_ranks(self, flag: bool) -> bool:
        """True when ``flag`` holds on every rank (one tiny all-reduce under DDP, called on every rank)."""
        if not self.is_ddp:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item() > 0.5)

    def _reduce_term_means(self, records: list[dict[str, float]]) -> dict[str, float]:
        """Mean of each active term over the finite values of all ranks (a collective under DDP: every rank calls
        it with the same term list)."""
        sums = np.zeros(len(self.active_terms), dtype=np.float64)
        counts = np.zeros(len(self.active_terms), dtype=np.float64)
        for rec in records:
            for i, t in enumerate(self.active_terms):
                v = rec.get(t)
                if v is not None and math.isfinite(v):
                    sums[i] += v
                    counts[i] += 1
        if self.is_ddp:
            t = torch.tensor(np.concatenate([sums, counts]), device=self.device, dtype=torch.float64)
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            both = t.cpu().numpy()
            sums, counts = both[: len(sums)], both[len(sums) :]
        return {t: (float(s / c) if c > 0 else math.nan) for t, s, c in zip(self.active_terms, sums, counts)}

    # ------------------------------------------------------------------ epoch hooks
    def on_train_epoch_start(self) -> None:
        # replaces nnU-Net's version, which calls lr_scheduler.step(current_epoch): the ReduceLROnPlateau trap
        self.network.train()
        lr = self.plateau_driver.start_epoch(self.current_epoch)
        self.print_to_log_file("")
        self.print_to_log_file(f"Epoch {self.current_epoch}")
        self.print_to_log_file(f"Current learning rate: {lr:.6g} ({self.plateau_driver.phase(self.current_epoch)})")
        self.logger.log("lrs", lr, self.current_epoch)
        self._epoch_grad_norms = []
        self._epoch_skipped = 0
        self._train_terms = []

    def train_step(self, batch: dict) -> dict:
        batch = self._split_topo_targets(batch)
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
        self.loss.extras = {}

        # backward always runs (no device sync before it; under DDP every rank joins the gradient all-reduce),
        # then the update is skipped on every rank alike if the loss or the gradient norm is not finite
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)  # clip the true gradient, not the scaled one
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip_norm))
            loss_value = float(loss.detach().float().cpu())
            stepped = self._update_allowed(loss_value, grad_norm)
            if stepped:
                self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()  # lowers the scale after an overflow, as in nnU-Net
        else:
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip_norm))
            loss_value = float(loss.detach().float().cpu())
            stepped = self._update_allowed(loss_value, grad_norm)
            if stepped:
                self.optimizer.step()
        if stepped and self.weight_ema is not None:
            self.weight_ema.update(unwrap_network(self.network))
        self._train_terms.append(self.loss.last_terms)  # read after the update: no extra sync before backward
        self._after_step(loss_value, grad_norm, stepped)
        return {"loss": np.array(loss_value if stepped else math.nan)}

    def _update_allowed(self, loss_value: float, grad_norm: float) -> bool:
        """Both finite on every rank. DDP has all-reduced the gradients, so the norm is the same everywhere; the
        loss is not, hence one tiny all-reduce (made by every rank, every step)."""
        return self._all_ranks(math.isfinite(loss_value)) and math.isfinite(grad_norm)

    def _after_step(self, loss_value: float, grad_norm: float, stepped: bool) -> None:
        iteration = len(self._train_terms) - 1
        global_iteration = self.current_epoch * self.num_iterations_per_epoch + iteration
        if math.isfinite(grad_norm):
            self._epoch_grad_norms.append(grad_norm)
        if global_iteration % self.grad_norm_log_every == 0:
            self.print_to_log_file(
                f"iteration {global_iteration}: grad norm (pre-clip) {grad_norm:.4g}, loss {loss_value:.4g}, "
                f"lr {self.optimizer.param_groups[0]['lr']:.4g}",
                also_print_to_console=False,
            )
        if stepped:
            self.consecutive_skips = 0
            return
        self.consecutive_skips += 1
        self._epoch_skipped += 1
        self.total_skipped_steps += 1
        amp_note = ""
        if self.grad_scaler is not None and math.isfinite(loss_value):
            amp_note = f"; AMP grad scale now {self.grad_scaler.get_scale():g} (a few early overflows are normal)"
        self.print_to_log_file(
            f"WARNING: iteration {global_iteration}: step skipped, loss {loss_value}, grad norm {grad_norm} "
            f"(non-finite; {self.consecutive_skips} in a row, {self.total_skipped_steps} in total{amp_note})"
        )
        if self.consecutive_skips >= self.max_consecutive_skips:
            terms = ", ".join(f"{k} {v:.4g}" for k, v in self.loss.last_terms.items())
            raise RuntimeError(
                f"Training stopped: {self.consecutive_skips} consecutive steps had a non-finite loss or gradient "
                f"norm (epoch {self.current_epoch}, last loss {loss_value}, grad norm {grad_norm}, terms: {terms}). "
                f"Check the input data for NaN/inf, lower initial_lr (now {self.initial_lr}) or the weight of the "
                f"term that is not finite (loss_weights in nnUNet_topo_config); max_consecutive_skips="
                f"{self.max_consecutive_skips}."
            )

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        outputs = collate_outputs(train_outputs)
        losses = np.asarray(outputs["loss"], dtype=np.float64).ravel()
        if self.is_ddp:
            gathered: list[Any] = [None for _ in range(dist.get_world_size())]
            dist.all_gather_object(gathered, losses)
            losses = np.concatenate(gathered)
        finite = losses[np.isfinite(losses)]
        self.logger.log("train_losses", float(finite.mean()) if finite.size else math.nan, self.current_epoch)

        for term, value in self._reduce_term_means(self._train_terms).items():
            self.logger.log(f"train_loss_{term}", value, self.current_epoch)
        # gradients are identical on all ranks after DDP's all-reduce: no reduction needed for the norms
        gmean, gmax = finite_mean_max(self._epoch_grad_norms)
        self.logger.log("grad_norm_mean", gmean, self.current_epoch)
        self.logger.log("grad_norm_max", gmax, self.current_epoch)
        self.logger.log("skipped_steps", self._epoch_skipped, self.current_epoch)

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._val_terms = []
        if self.weight_ema is not None:  # validate the averaged weights (restored in on_validation_epoch_end)
            self._ema_context = self.weight_ema.applied_to(unwrap_network(self.network))
            self._ema_context.__enter__()

    def validation_step(self, batch: dict) -> dict:
        out = super().validation_step(self._split_topo_targets(batch))
        self.loss.extras = {}
        self._val_terms.append(self.loss.last_terms)
        return out

    def on_validation_epoch_end(self, val_outputs: list[dict]) -> None:
        if self._ema_context is not None:
            self._ema_context.__exit__(None, None, None)
            self._ema_context = None
        super().on_validation_epoch_end(val_outputs)  # logs all-gathered val_losses, mean/ema fg Dice
        for term, value in self._reduce_term_means(self._val_terms).items():
            self.logger.log(f"val_loss_{term}", value, self.current_epoch)
        # val_losses and ema_fg_dice are all-gathered by nnU-Net: the plateau steps identically on every rank
        self.plateau_driver.end_epoch(
            self.current_epoch,
            float(self.logger.get_value("val_losses", step=-1)),
            ema_fg_dice=float(self.logger.get_value("ema_fg_dice", step=-1)),
        )  # val_score: stepped once per scoring round, when its result arrives (_apply_score_record)
        self.logger.log("val_loss_ema", self.plateau_driver.val_loss_ema, self.current_epoch)

    def _pad_topo_log(self) -> None:
        """One value per epoch for every key of this trainer, also for a term dropped on resume (nnU-Net plots
        progress.png up to its shortest list: a list that stopped growing would freeze it)."""
        store = self.logger.local_logger.my_fantastic_logging
        for key, values in store.items():
            if key.startswith(("train_loss_", "val_loss_")) or key in TOPO_LOG_KEYS or key in SCORE_LOG_KEYS:
                values.extend([math.nan] * (self.current_epoch + 1 - len(values)))

    def on_epoch_end(self) -> None:
        epoch = self.current_epoch
        self._pad_topo_log()
        if self.score_every_epochs > 0:
            self._score_rounds_epoch_end()

        def fmt(prefix: str) -> str:
            return ", ".join(f"{t} {self.logger.get_value(f'{prefix}_loss_{t}', epoch):.4f}" for t in self.active_terms)

        self.print_to_log_file(f"lr {self.logger.get_value('lrs', epoch):.4g}")
        self.print_to_log_file(f"train terms: {fmt('train')}")
        self.print_to_log_file(f"val terms: {fmt('val')}")
        gmean, gmax = self.logger.get_value("grad_norm_mean", epoch), self.logger.get_value("grad_norm_max", epoch)
        self.print_to_log_file(
            f"grad norm (pre-clip, clip at {self.grad_clip_norm:g}): mean {gmean:.4g}, max {gmax:.4g}; "
            f"skipped steps {self.logger.get_value('skipped_steps', epoch)}"
        )
        status = self.plateau_driver.status(epoch)
        if status is not None:
            self.print_to_log_file(status)
        super().on_epoch_end()
        if self.local_rank == 0:
            self.write_diagnostics()

    def write_diagnostics(self) -> None:
        """Write ``progress_topo.json`` and ``progress_topo.png`` into the fold folder (rank 0)."""
        log = self.logger.local_logger.my_fantastic_logging
        try:
            write_progress_json(log, self.output_folder)
            plot_progress_topo(log, join(self.output_folder, PROGRESS_PNG))
        except Exception as exc:  # a plotting problem must not end a long training
            self.print_to_log_file(f"WARNING: could not write {PROGRESS_PNG}: {type(exc).__name__}: {exc}")

    def initialize(self) -> None:
        seed_weights(self.topo_config["seed"])  # DDP then broadcasts rank 0's weights
        super().initialize()
        decay = self.topo_config["ema_decay"]
        self.weight_ema = WeightEMA(unwrap_network(self.network), decay) if decay > 0 else None

    def on_train_start(self) -> None:
        if self._deferred_config_error is not None:
            raise self._deferred_config_error
        if not self.was_initialized:
            self.initialize()
        seed_data(self.topo_config["seed"], self.current_epoch, self.local_rank)
        super().on_train_start()
        if self.local_rank == 0:
            self.save_topo_config()
            if self.score_every_epochs > 0:
                self.score_cases()
                self.copy_gt_spacing_sidecars()  # the scoring process reads gt_segmentations with Tiff3DIO
                self._scoring_pool.start()

    def save_topo_config(self) -> None:
        """``topo_config.json``: the configuration in use and every configuration the run used (``history``, each
        with the epoch it took effect)."""
        save_config(
            self.topo_config,
            Path(self.output_folder) / CONFIG_FILE,
            extra={
                "trainer": type(self).__name__,
                "config_file": self.topo_config_path,
                "history": [{**h, "config": to_jsonable(h["config"])} for h in self.config_history],
            },
        )

    # ------------------------------------------------------------------ final validation
    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """nnU-Net's validation (predictions + Dice ``summary.json``), then the competition metric on the raw and
        post-processed predictions into ``validation/summary_topo.json`` (rank 0)."""
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
        if self.local_rank != 0:
            return
        try:
            self.score_validation_topo()
        except Exception as exc:  # the Dice validation above stands; say clearly why the extra score is missing
            self.report_scoring_failure(exc)

    def report_scoring_failure(self, exc: BaseException) -> str:
        """Log why ``summary_topo.json`` is missing and the command that scores the folder afterwards."""
        val_dir = Path(self.output_folder) / "validation"
        gt_dir = Path(self.preprocessed_dataset_folder_base) / "gt_segmentations"
        cause = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, (BrokenProcessPool, MemoryError)) or "worker died" in str(exc):
            cause += " (most likely out of memory: lower final_score_workers in nnUNet_topo_config)"
        message = (
            f"WARNING: competition-metric scoring of the validation failed, so {val_dir / 'summary_topo.json'} is "
            f"missing: {cause}. The predictions are kept; score them afterwards with:\n  nnunetv2_topo evaluate "
            f"--pred {val_dir} --gt {gt_dir} --only-predicted --json {val_dir / 'summary_topo_raw.json'}"
        )
        self.print_to_log_file(message, also_print_to_console=True)
        return message

    def copy_gt_spacing_sidecars(self) -> int:
        """Give nnU-Net's ``gt_segmentations/`` copy the Tiff3DIO spacing sidecars of the raw labels.

        nnU-Net copies only the label TIFFs there, so its validation read them with a "no spacing file found"
        warning per case. Copies ``$nnUNet_raw/<dataset>/labelsTr/<case>.json`` beside each TIFF lacking one;
        returns how many were copied (0 for other file types or when the raw dataset is not reachable)."""
        import shutil

        from nnunetv2.paths import nnUNet_raw

        if self.dataset_json.get("file_ending") not in (".tif", ".tiff") or not nnUNet_raw:
            return 0
        raw_labels = Path(nnUNet_raw) / self.plans_manager.dataset_name / "labelsTr"
        gt_dir = Path(self.preprocessed_dataset_folder_base) / "gt_segmentations"
        if not raw_labels.is_dir() or not gt_dir.is_dir():
            return 0
        copied = 0
        for seg in gt_dir.glob(f"*{self.dataset_json['file_ending']}"):
            sidecar = seg.with_name(seg.name[: -len(self.dataset_json["file_ending"])] + ".json")
            source = raw_labels / sidecar.name
            if not sidecar.exists() and source.is_file():
                with atomic_path(sidecar) as tmp:
                    shutil.copyfile(source, tmp)
                copied += 1
        return copied

    def final_score_workers(self, num_cases: int, largest_voxels: int) -> int:
        """Betti-matching workers for the final scoring: the CLI's rule (cores, and free memory for one tile of
        the largest volume each: ``metrics.engine.auto_workers``), at most ``final_score_workers``; 0 (serial,
        in this process) for a single case."""
        from nnunetv2_topo.metrics.engine import auto_workers

        if num_cases <= 1:
            return 0
        tile_voxels = math.ceil(largest_voxels / 8)  # the metric cuts every axis in two
        workers = auto_workers(8 * num_cases, tile_voxels)
        if self.topo_config["final_score_workers"] is not None:
            workers = min(workers, int(self.topo_config["final_score_workers"]))
        self.print_to_log_file(
            f"Competition scoring of {num_cases} cases with {workers} Betti-matching workers (cores, free memory "
            f"for tiles of {tile_voxels} voxels, final_score_workers={self.topo_config['final_score_workers']})"
        )
        return workers

    def score_validation_topo(self) -> dict[str, Any]:
        """Score ``validation/`` with the leaderboard metric, raw and post-processed; write summary_topo.json."""
        import json

        from nnunetv2_topo.inference.scoring import score_folder
        from nnunetv2_topo.io import index_volumes, volume_shape
        from nnunetv2_topo.postprocessing import PostprocessConfig

        val_dir = Path(self.output_folder) / "validation"
        gt_dir = Path(self.preprocessed_dataset_folder_base) / "gt_segmentations"
        preds = index_volumes(val_dir, "validation")
        if not preds:
            raise FileNotFoundError(f"no predicted volumes in {val_dir}")
        largest = max(math.prod(volume_shape(path)) for path in preds.values())
        num_processes = self.final_score_workers(len(preds), largest)
        # gt_segmentations holds every training case: score only this fold's predictions
        summary = score_folder(
            val_dir, gt_dir, PostprocessConfig(), val_dir / "postprocessed", num_processes, only_predicted=True
        )
        raw, post = summary["raw"], summary["postprocessed"]
        out = val_dir / "summary_topo.json"
        atomic_write_text(out, json.dumps(summary, indent=2, default=float))
        for kind, result in (("raw", raw), ("postprocessed", post)):
            for key, value in result["mean"].items():
                self.logger.log_summary(f"final_val/topo_{kind}_{key}", value)
        self.print_to_log_file(
            f"Validation competition score (mean over {len(preds)} cases): raw {raw['mean']['score']:.4f}, "
            f"post-processed {post['mean']['score']:.4f} (details: {out})",
            also_print_to_console=True,
        )
        return summary

    # ------------------------------------------------------------------ competition-score rounds
    def score_cases(self) -> list[str]:
        """The validation cases of this fold scored in every round (``score_num_cases`` of them, a subset fixed by
        seed 0 whatever the training seed, so runs are compared on the same cases); logged once."""
        if self._score_cases is None:
            _, val_keys = self.do_split()
            wanted = self.topo_config["score_num_cases"]
            if wanted > len(val_keys):
                self.print_to_log_file(
                    f"WARNING (configuration): score_num_cases = {wanted} but fold {self.fold} has only "
                    f"{len(val_keys)} validation cases: every round scores all {len(val_keys)}",
                    also_print_to_console=True,
                )
            self._score_cases = select_score_cases(val_keys, wanted)
            self.print_to_log_file(
                f"Competition-score rounds every {self.score_every_epochs} epochs on {len(self._score_cases)} "
                f"validation cases: {', '.join(self._score_cases)}"
            )
        return self._score_cases

    def _score_round_due(self, epoch: int) -> bool:
        return self.score_every_epochs > 0 and (epoch + 1) % self.score_every_epochs == 0

    def _latest_checkpoint_due(self, epoch: int) -> bool:
        """nnU-Net's ``on_epoch_end`` writes ``checkpoint_latest.pth`` after this epoch."""
        return (epoch + 1) % self.save_every == 0 and epoch != self.num_epochs - 1

    def _from_rank0(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a collective under DDP: every rank calls it)."""
        if not self.is_ddp:
            return obj
        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def _score_rounds_epoch_end(self) -> None:
        """Apply a finished round (waiting for it only when the next round is due or ``checkpoint_latest.pth`` is
        written after this epoch), then start this epoch's round if due. Called on every rank."""
        epoch = self.current_epoch
        records: list[dict[str, Any]] = []
        if self.local_rank == 0 and self._score_round is not None:
            pending = self._score_round
            if pending.done() or self._score_round_due(epoch) or self._latest_checkpoint_due(epoch):
                if not pending.done():
                    self.print_to_log_file(
                        f"Waiting for the competition scoring of epoch {pending.epoch} (the next round is due or "
                        "checkpoint_latest.pth is written now; raise score_every_epochs if this repeats)"
                    )
                records.append(pending.record(applied_epoch=epoch))
        for record in self._from_rank0(records):
            self._apply_score_record(record)
        if self.local_rank == 0 and self._score_round_due(epoch):
            self._start_score_round(epoch)

    def _finish_score_rounds(self) -> None:
        """End of training: await the round still running and apply it (every rank), stop the scoring process."""
        records: list[dict[str, Any]] = []
        if self.local_rank == 0 and self._score_round is not None:
            self.print_to_log_file(f"Waiting for the competition scoring of epoch {self._score_round.epoch}")
            records.append(self._score_round.record(applied_epoch=self.current_epoch - 1))
        for record in self._from_rank0(records):
            self._apply_score_record(record)
        self._scoring_pool.shutdown()

    def _score_predictor_for(self, module: nn.Module) -> Any:
        """nnU-Net's sliding-window predictor on this trainer's own network (built once, as nnU-Net's final
        validation builds it; mirroring only with ``score_mirroring``)."""
        if self._score_predictor is None:
            from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

            predictor = nnUNetPredictor(
                tile_step_size=0.5,
                use_gaussian=True,
                use_mirroring=bool(self.topo_config["score_mirroring"]),
                perform_everything_on_device=self.device.type == "cuda",
                device=self.device,
                verbose=False,
                verbose_preprocessing=False,
                allow_tqdm=False,
            )
            predictor.manual_initialization(
                module, self.plans_manager, self.configuration_manager, None, self.dataset_json,
                type(self).__name__, self.inference_allowed_mirroring_axes,
            )  # fmt: skip
            self._score_predictor = predictor
        return self._score_predictor

    def _start_score_round(self, epoch: int) -> None:
        """Rank 0: snapshot this epoch's checkpoint, predict the score cases with the weights validation uses (EMA
        when on) in this process, and hand each segmentation to the scoring process."""
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        cases = self.score_cases()
        module = unwrap_network(self.network)
        score_round = ScoreRound(epoch, list(cases), cpu_copy(self.checkpoint_payload()))
        predictor = self._score_predictor_for(module)
        dataset = self.dataset_class(
            self.preprocessed_dataset_folder, cases,
            folder_with_segs_from_previous_stage=self.folder_with_segs_from_previous_stage,
        )  # fmt: skip
        gt_dir = Path(self.preprocessed_dataset_folder_base) / "gt_segmentations"
        reader = self.plans_manager.image_reader_writer_class
        averaged = self.weight_ema.applied_to(module) if self.weight_ema is not None else contextlib.nullcontext()
        t0 = time.perf_counter()
        self.set_deep_supervision_enabled(False)
        module.eval()
        try:
            with averaged, torch.no_grad():
                for key in cases:
                    data, _, _, properties = dataset.load_case(key)
                    logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(np.array(data[:])))
                    segmentation = convert_predicted_logits_to_segmentation_with_correct_shape(
                        logits.cpu(), self.plans_manager, self.configuration_manager, self.label_manager,
                        properties, num_threads_torch=torch.get_num_threads(),
                    )  # fmt: skip
                    del logits
                    gt_file = str(gt_dir / f"{key}{self.dataset_json['file_ending']}")
                    score_round.futures.append(self._scoring_pool.submit(segmentation, gt_file, reader))
        finally:
            self.set_deep_supervision_enabled(self.enable_deep_supervision)
            module.train()
        score_round.predict_seconds = time.perf_counter() - t0
        self._score_round = score_round
        weights = "EMA weights" if self.weight_ema is not None else "weights"
        self.print_to_log_file(
            f"Scoring round of epoch {epoch}: predicted {len(cases)} validation cases in "
            f"{score_round.predict_seconds:.1f} s in the training process (sliding window, "
            f"mirroring {'on' if self.topo_config['score_mirroring'] else 'off'}, this epoch's {weights}); the "
            "competition metric runs in a background process"
        )

    def _apply_score_record(self, record: dict[str, Any]) -> None:
        """Log a round's scores at the epoch whose weights were scored, keep ``checkpoint_best_score.pth`` when it
        is the best round (rank 0) and, with ``plateau_metric: val_score``, step the plateau (every rank)."""
        epoch = int(record["epoch"])
        store = self.logger.local_logger.my_fantastic_logging
        for key, field_ in SCORE_LOG_KEYS.items():
            values = store.setdefault(key, [])
            values.extend([math.nan] * (epoch + 1 - len(values)))
            values[epoch] = record[field_]
        self.score_records.append(record)
        pending, self._score_round = self._score_round, None
        if record["error"] is not None:
            self.print_to_log_file(
                f"WARNING: the competition scoring of epoch {epoch} failed ({record['error']}); val_score stays NaN "
                "for that epoch and the plateau is not stepped (if the scoring process ran out of memory, lower "
                "score_num_cases)",
                also_print_to_console=True,
            )
            return
        score = float(record["score"])
        message = (
            f"Competition score of epoch {epoch} ({record['num_cases']} validation cases; predicted in "
            f"{record['predict_seconds']:.1f} s in the training process, metric {record['metric_seconds']:.1f} s in "
            f"the background, applied after epoch {record['applied_epoch']}): score {score:.4f}, topo "
            f"{record['topo']:.4f}, surface Dice {record['surface_dice']:.4f}, VOI {record['voi_score']:.4f}"
        )
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_score_epoch = score, epoch
            message += f"; new best -> {BEST_SCORE_CHECKPOINT}"
            if self.local_rank == 0 and pending is not None and not self.disable_checkpointing:
                self._write_checkpoint(pending.checkpoint, join(self.output_folder, BEST_SCORE_CHECKPOINT))
        self.print_to_log_file(message, also_print_to_console=True)
        self.plateau_driver.end_round(epoch, score)

    def _load_score_rounds(self, state: dict[str, Any]) -> None:
        self.score_records = [dict(r) for r in state.get("records", [])]
        self.best_score = state.get("best_score")
        self.best_score_epoch = state.get("best_score_epoch")

    def on_train_end(self) -> None:
        if self.score_every_epochs > 0:
            self._finish_score_rounds()
        super().on_train_end()

    # ------------------------------------------------------------------ checkpoints
    def _topo_state(self) -> dict[str, Any]:
        return {
            "lr_scheduler": self.plateau_driver.state_dict(),
            "config": dict(self.topo_config),
            "config_history": list(self.config_history),
            "weight_ema": self.weight_ema.state_dict() if self.weight_ema is not None else None,
            "consecutive_skips": self.consecutive_skips,
            "total_skipped_steps": self.total_skipped_steps,
            "score_rounds": {
                "records": [dict(r) for r in self.score_records],
                "best_score": self.best_score,
                "best_score_epoch": self.best_score_epoch,
            },
        }

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint plus ``topo_state`` (scheduler and warmup state); written atomically."""
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        self._write_checkpoint(self.checkpoint_payload(), filename)

    @staticmethod
    def _write_checkpoint(checkpoint: dict[str, Any], filename: str) -> None:
        with atomic_path(filename) as tmp:
            torch.save(checkpoint, tmp)

    def checkpoint_payload(self) -> dict[str, Any]:
        """The content of this trainer's checkpoints: nnU-Net's keys (``network_weights`` are the EMA weights when
        ``ema_decay`` is on, the raw ones then under ``raw_network_weights``) and ``topo_state``. The tensors are the
        live ones (copy them to keep a snapshot)."""
        mod = unwrap_network(self.network)
        extra: dict[str, Any] = {}
        weights = mod.state_dict()
        if self.weight_ema is not None:  # nnUNetv2_predict loads network_weights: the averaged weights
            extra["raw_network_weights"], weights = weights, self.weight_ema.weights()
        return {
            "network_weights": weights,
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": self._best_ema,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
            "topo_state": self._topo_state(),
            **extra,
        }

    def _load_weight_ema(self, checkpoint: dict, state: dict) -> None:
        """nnU-Net loaded ``network_weights`` (the averaged ones when EMA was on): put the raw weights back into the
        network and restore the average."""
        raw = checkpoint.get("raw_network_weights")
        if raw is not None:
            unwrap_network(self.network).load_state_dict(raw)
        if self.weight_ema is None:
            return
        if state.get("weight_ema") is not None:
            self.weight_ema.load_state_dict(state["weight_ema"])
        else:
            self.weight_ema = WeightEMA(unwrap_network(self.network), self.weight_ema.decay)
            self.print_to_log_file("ema_decay is on but the checkpoint has no EMA state: the average starts here")

    def load_checkpoint(self, filename_or_checkpoint: str | dict) -> None:
        """nnU-Net's loading, then the scheduler/warmup state (``--c`` continues the same LR trajectory)."""
        if not isinstance(filename_or_checkpoint, (str, os.PathLike)):
            raise TypeError(f"{type(self).__name__}.load_checkpoint expects a checkpoint file name")
        super().load_checkpoint(str(filename_or_checkpoint))
        checkpoint = torch.load(filename_or_checkpoint, map_location="cpu", weights_only=False, mmap=True)
        state = checkpoint.get("topo_state")
        if state is None:
            self.print_to_log_file(
                f"WARNING: {filename_or_checkpoint} has no TopoWarmup scheduler state (written by "
                f"{checkpoint.get('trainer_name')}); warmup/plateau restart from epoch {self.current_epoch}"
            )
        else:
            self.plateau_driver.load_state_dict(state["lr_scheduler"])
            self.consecutive_skips = int(state.get("consecutive_skips", 0))
            self.total_skipped_steps = int(state.get("total_skipped_steps", 0))
            self._load_score_rounds(state.get("score_rounds") or {})
        self._load_weight_ema(checkpoint, state or {})
        self._register_log_keys()
        if "val_loss_ema" not in ((state or {}).get("lr_scheduler") or {}):  # written before the driver kept it
            self.plateau_driver.resume_ema(self.logger.get_value("val_loss_ema", step=None)[: self.current_epoch])
