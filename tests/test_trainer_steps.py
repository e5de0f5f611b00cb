"""The TopoWarmup trainer's own logic, in process on tiny plans: warmup LR per epoch, clipping after unscale,
non-finite step skipping, per-term logging, checkpoint round trip and resume equivalence of the LR trajectory."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from trainer_fixtures import make_trainer, parameters_snapshot, simulate_epoch, synthetic_batch, total_norm

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.trainers import nnUNetTrainerTopoWarmup
from nnunetv2_topo.trainers.muon import MuonHybrid
from nnunetv2_topo.trainers.variants import (
    nnUNetTrainerTopoWarmup_AdamW,
    nnUNetTrainerTopoWarmup_FiveTerm,
    nnUNetTrainerTopoWarmup_SGD,
)

CE_ONLY = {"loss_weights": {"ce": 1.0}, "warmup_epochs": 0, "weight_decay": 0.0, "optimizer": "sgd"}
"""One plain term and SGD: an update that is the clipped gradient times the LR (Muon's is orthogonalised)."""


def _start_epoch(trainer, epoch: int = 0) -> None:
    trainer.current_epoch = epoch
    trainer.on_epoch_start()
    trainer.on_train_epoch_start()


def test_warmup_lr_of_every_epoch_reaches_the_trainer(tmp_path, monkeypatch) -> None:
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, {"warmup_epochs": 4, "initial_lr": 0.02})
    lrs = []
    for epoch in range(12):  # no validation metric fed: after warmup the LR must stay put (no epoch-number trap)
        _start_epoch(trainer, epoch)
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.005, 0.01, 0.015, 0.02] + [0.02] * 8, rel=1e-12)
    assert trainer.logger.get_value("lrs", step=None) == pytest.approx(lrs)


def test_default_optimizer_and_the_sgd_and_adamw_variants(tmp_path, monkeypatch) -> None:
    default = make_trainer(tmp_path / "m", monkeypatch, nnUNetTrainerTopoWarmup)
    assert isinstance(default.optimizer, MuonHybrid) and default.optimizer.other_kind == "adamw"
    muon, other = default.optimizer.param_groups
    assert (muon["name"], muon["lr_ratio"], other["name"]) == ("muon", 1.0, "adamw")
    assert other["lr_ratio"] == pytest.approx(3e-4 / 2e-2)  # AdamW at 3e-4 when Muon is at its peak 0.02
    inner_decay = (
        default.optimizer.muon.param_groups[0]["weight_decay"],
        default.optimizer.other.param_groups[0]["weight_decay"],
    )
    assert inner_decay == (0.1, 3e-5)
    assert default.lr_scheduler.base_lr == 2e-2 and default.lr_scheduler.warmup_epochs == 10
    sgd = make_trainer(tmp_path / "a", monkeypatch, nnUNetTrainerTopoWarmup_SGD)
    assert isinstance(sgd.optimizer, torch.optim.SGD)
    group = sgd.optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.99, True, 3e-5)
    assert sgd.lr_scheduler.base_lr == 1e-2 and sgd.lr_scheduler.warmup_epochs == 10
    adamw = make_trainer(tmp_path / "b", monkeypatch, nnUNetTrainerTopoWarmup_AdamW)
    assert isinstance(adamw.optimizer, torch.optim.AdamW)
    assert adamw.initial_lr == 1e-4 and adamw.optimizer.param_groups[0]["weight_decay"] == 1e-5


def test_update_is_a_clipped_gradient_of_norm_2(tmp_path, monkeypatch) -> None:
    # CE weighted 1000 makes the raw gradient norm far larger than the clip norm 2.0
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, {**CE_ONLY, "loss_weights": {"ce": 1000}})
    _start_epoch(trainer)
    lr = trainer.optimizer.param_groups[0]["lr"]
    before = parameters_snapshot(trainer)
    trainer.train_step(synthetic_batch(0))
    raw_norm = trainer.guarded_step.epoch_grad_norms[-1]
    assert raw_norm > 20.0
    # SGD (momentum 0.99, Nesterov, no weight decay), first step: update = -lr * 1.99 * g_clipped
    delta = [b - a for a, b in zip(before, parameters_snapshot(trainer))]
    applied_grad_norm = total_norm(delta) / (lr * 1.99)
    assert applied_grad_norm == pytest.approx(2.0, rel=1e-4)


def test_clipping_happens_after_amp_unscale(tmp_path, monkeypatch) -> None:
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, {**CE_ONLY, "loss_weights": {"ce": 1000}})
    trainer.grad_scaler = torch.GradScaler("cpu", init_scale=2.0**14)
    seen = []
    trainer.optimizer.register_step_pre_hook(
        lambda opt, *_: seen.append(total_norm(p.grad for g in opt.param_groups for p in g["params"]))
    )
    _start_epoch(trainer)
    trainer.train_step(synthetic_batch(0))
    # clipped after unscaling: the optimizer sees the true gradient clipped to 2 (clipping the scaled gradient
    # would leave 2 / 2**14 after unscaling), and the logged pre-clip norm is the unscaled one
    assert seen == [pytest.approx(2.0, rel=1e-4)]
    assert 20.0 < trainer.guarded_step.epoch_grad_norms[-1] < 1e6


def test_non_finite_loss_skips_the_step(tmp_path, monkeypatch) -> None:
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, {**CE_ONLY, "max_consecutive_skips": 3})
    _start_epoch(trainer)
    before = parameters_snapshot(trainer)
    bad = synthetic_batch(0)
    bad["data"][0, 0, 0, 0, 0] = float("nan")
    out = trainer.train_step(bad)
    assert math.isnan(float(out["loss"]))
    assert all(torch.equal(a, b) for a, b in zip(before, parameters_snapshot(trainer)))
    assert (
        trainer.guarded_step.consecutive_skips,
        trainer.guarded_step.epoch_skipped,
        trainer.guarded_step.total_skipped_steps,
    ) == (1, 1, 1)

    trainer.train_step(synthetic_batch(1))  # a good step updates and resets the run of skips
    assert trainer.guarded_step.consecutive_skips == 0 and trainer.guarded_step.epoch_skipped == 1
    assert not all(torch.equal(a, b) for a, b in zip(before, parameters_snapshot(trainer)))

    trainer.train_step(bad)
    trainer.train_step(bad)
    with pytest.raises(RuntimeError, match=r"Training stopped: 3 consecutive steps had a non-finite loss") as err:
        trainer.train_step(bad)
    assert isinstance(err.value, TopoError)  # one error family
    trainer.on_train_epoch_end([{"loss": np.array(1.0)}, {"loss": np.array(math.nan)}])
    assert trainer.logger.get_value("skipped_steps", 0) == 4
    assert trainer.logger.get_value("train_losses", 0) == pytest.approx(1.0)  # skipped steps are left out


def test_non_finite_gradient_skips_the_step(tmp_path, monkeypatch) -> None:
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, CE_ONLY)
    _start_epoch(trainer)
    first = next(trainer.network.parameters())
    handle = first.register_hook(lambda g: g * float("inf"))
    before = parameters_snapshot(trainer)
    out = trainer.train_step(synthetic_batch(0))
    handle.remove()
    assert math.isnan(float(out["loss"]))
    assert all(torch.equal(a, b) for a, b in zip(before, parameters_snapshot(trainer)))
    assert trainer.guarded_step.consecutive_skips == 1 and trainer.guarded_step.epoch_grad_norms == []


def _with_topo_targets(trainer, batch: dict) -> dict:
    """What nnU-Net's data loader delivers with the trainer's transforms: extra channels at every DS scale."""
    transform = trainer.loss.targets_transform(trainer.label_manager.ignore_label)
    full = torch.stack([transform(segmentation=s)["segmentation"] for s in batch["target"][0]])
    ds = DownsampleSegForDSTransform(ds_scales=trainer._get_deep_supervision_scales())
    target = [torch.stack(t) for t in zip(*[ds(segmentation=s)["segmentation"] for s in full])]
    return {**batch, "target": target}


def test_five_term_trainer_epoch_logs_every_term(tmp_path, monkeypatch) -> None:
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup_FiveTerm, {"warmup_epochs": 1})
    assert trainer.loss.required_targets == ("band",)  # the boundary term needs the precomputed band
    _start_epoch(trainer)
    outputs = [trainer.train_step(_with_topo_targets(trainer, synthetic_batch(s))) for s in range(2)]
    trainer.on_train_epoch_end(outputs)
    trainer.on_validation_epoch_start()
    with torch.no_grad():
        val = [trainer.validation_step(_with_topo_targets(trainer, synthetic_batch(7)))]
    trainer.on_validation_epoch_end(val)
    trainer.on_epoch_end()

    log = trainer.logger.local_logger.my_fantastic_logging
    for term in ("dice", "focal", "boundary", "cldice", "dilated_mse"):
        assert math.isfinite(log[f"train_loss_{term}"][0]) and log[f"train_loss_{term}"][0] >= 0
        assert math.isfinite(log[f"val_loss_{term}"][0])
    assert "train_loss_ce" not in log  # weight 0: not computed, not logged
    norms = trainer.guarded_step.epoch_grad_norms
    assert len(norms) == 2
    assert log["grad_norm_mean"][0] == pytest.approx(np.mean(norms))
    assert log["grad_norm_max"][0] == pytest.approx(max(norms))
    assert log["skipped_steps"][0] == 0
    fold = (
        tmp_path
        / "results"
        / "Dataset999_TrainerUnit"
        / "nnUNetTrainerTopoWarmup_FiveTerm__nnUNetPlans_tiny__3d_fullres"
    )
    fold = fold / "fold_0"
    assert (fold / "progress_topo.png").stat().st_size > 10_000
    assert json.loads((fold / "progress_topo.json").read_text())["train_loss_boundary"][0] > 0
    text = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "train terms: dice" in text and "val terms: dice" in text
    assert "grad norm (pre-clip, clip at 2): mean" in text and "skipped steps 0" in text


VAL_LOSSES = [0.9, 0.8, 0.7, 0.7, 0.71, 0.6, 0.65, 0.66, 0.64, 0.5, 0.55, 0.55, 0.55, 0.56]
RESUME_CONFIG = {
    "warmup_epochs": 3,
    "plateau_patience": 1,
    "plateau_factor": 0.5,
    "initial_lr": 0.01,
    "plateau_metric": "val_loss",
    "plateau_cooldown": 0,
}  # fmt: skip (cuts on the raw loss)


def test_checkpoint_resume_gives_the_same_lr_trajectory(tmp_path, monkeypatch) -> None:
    full = make_trainer(tmp_path / "full", monkeypatch, nnUNetTrainerTopoWarmup, RESUME_CONFIG)
    for epoch, v in enumerate(VAL_LOSSES):
        full.current_epoch = epoch
        simulate_epoch(full, v)
    expected = full.logger.get_value("lrs", step=None)
    assert len(set(expected)) >= 5  # warmup steps and at least two reductions

    for stop in (2, 6):
        first = make_trainer(tmp_path / f"a{stop}", monkeypatch, nnUNetTrainerTopoWarmup, RESUME_CONFIG)
        for epoch in range(stop + 1):
            first.current_epoch = epoch
            simulate_epoch(first, VAL_LOSSES[epoch])
        ckpt = str(tmp_path / f"ckpt{stop}.pth")
        first.save_checkpoint(ckpt)  # as nnU-Net does at the end of epoch `stop`

        resumed = make_trainer(tmp_path / f"b{stop}", monkeypatch, nnUNetTrainerTopoWarmup, RESUME_CONFIG)
        resumed.load_checkpoint(ckpt)
        assert resumed.current_epoch == stop + 1
        assert resumed.lr_scheduler.state_dict() == first.lr_scheduler.state_dict()
        for epoch in range(stop + 1, len(VAL_LOSSES)):
            resumed.current_epoch = epoch
            simulate_epoch(resumed, VAL_LOSSES[epoch])
        assert resumed.logger.get_value("lrs", step=None) == pytest.approx(expected, rel=1e-12), f"stop {stop}"


def test_checkpoint_round_trip_keeps_counters_and_log_keys(tmp_path, monkeypatch) -> None:
    a = make_trainer(tmp_path / "a", monkeypatch, nnUNetTrainerTopoWarmup, RESUME_CONFIG)
    for epoch, v in enumerate(VAL_LOSSES[:8]):
        a.current_epoch = epoch
        simulate_epoch(a, v)
    a.guarded_step.total_skipped_steps, a.guarded_step.consecutive_skips = 5, 2
    path = tmp_path / "ckpt.pth"
    a.save_checkpoint(str(path))
    saved = torch.load(path, map_location="cpu", weights_only=False)
    assert saved["trainer_name"] == "nnUNetTrainerTopoWarmup"
    assert saved["topo_state"]["config"]["plateau_patience"] == 1
    assert not list(tmp_path.glob("*.tmp"))

    b = make_trainer(tmp_path / "b", monkeypatch, nnUNetTrainerTopoWarmup, RESUME_CONFIG)
    b.load_checkpoint(str(path))
    assert (b.guarded_step.total_skipped_steps, b.guarded_step.consecutive_skips) == (5, 2)
    assert b.lr_scheduler.plateau.best == a.lr_scheduler.plateau.best
    assert b.lr_scheduler.plateau.num_bad_epochs == a.lr_scheduler.plateau.num_bad_epochs
    assert b.optimizer.param_groups[0]["lr"] == a.optimizer.param_groups[0]["lr"]
    assert b.logger.get_value("grad_norm_mean", step=None) == pytest.approx(
        a.logger.get_value("grad_norm_mean", step=None), nan_ok=True
    )


def test_binary_dataset_required(tmp_path, monkeypatch) -> None:
    import trainer_fixtures

    monkeypatch.setitem(trainer_fixtures.DATASET_JSON, "labels", {"background": 0, "a": 1, "b": 2})
    with pytest.raises(RuntimeError, match="needs a binary dataset") as err:
        make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup)
    assert isinstance(err.value, TopoError)


def test_amp_overflow_skips_the_step_and_lowers_the_scale(tmp_path, monkeypatch) -> None:
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, CE_ONLY)
    trainer.grad_scaler = torch.GradScaler("cpu", init_scale=2.0**14)
    _start_epoch(trainer)
    handle = next(trainer.network.parameters()).register_hook(lambda g: g * float("inf"))
    before = parameters_snapshot(trainer)
    trainer.train_step(synthetic_batch(0))
    handle.remove()
    assert all(torch.equal(a, b) for a, b in zip(before, parameters_snapshot(trainer)))
    assert trainer.grad_scaler.get_scale() == 2.0**13  # GradScaler.update() still ran
    assert trainer.guarded_step.consecutive_skips == 1
    trainer.train_step(synthetic_batch(1))  # the next finite step goes through
    assert trainer.guarded_step.consecutive_skips == 0
