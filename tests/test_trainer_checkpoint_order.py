"""One home for the checkpoint payload: ``topo_state`` holds every component's state under its own key, the load
steps run in the explicit order of ``checkpoint.LOAD_ORDER`` (swapping steps that depend on each other breaks a
resume, and these tests see it), and an optimizer switch keeps the plateau driver."""

from __future__ import annotations

import pytest
import torch
from trainer_fixtures import fold_dir, log_text, make_trainer, simulate_epoch, synthetic_batch

from nnunetv2_topo.trainers import nnUNetTrainerTopoWarmup
from nnunetv2_topo.trainers.checkpoint import (
    COMPONENT_KEYS,
    LOAD_ORDER,
    TOPO_STATE_KEYS,
    load_checkpoint_file,
    write_checkpoint,
)
from nnunetv2_topo.trainers.score_rounds import BEST_SCORE_CHECKPOINT
from nnunetv2_topo.trainers.weight_ema import unwrap_network

CONFIG = {
    "loss_weights": {"ce": 1.0, "dice": 1.0},
    "num_epochs": 50,
    "initial_lr": 1e-2,
    "warmup_epochs": 0,
    "plateau_patience": 0,
    "plateau_metric": "val_loss",
    "plateau_cooldown": 0,
    "ema_decay": 0.5,
    "score_every_epochs": 1,
    "seed": 0,
}


@pytest.fixture
def saved(tmp_path, monkeypatch):
    """A run with two real steps (raw weights != their EMA), two LR cuts and a best score, saved as
    checkpoint_latest.pth; a later, better round in checkpoint_best_score.pth."""
    first = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, CONFIG)
    first.on_train_epoch_start()
    for seed in range(2):
        first.train_step(synthetic_batch(seed))
    for loss in (0.9, 0.95, 0.97):
        simulate_epoch(first, loss)
        first.epoch_log.pad(first.current_epoch)
        first.current_epoch += 1
    first.current_epoch -= 1
    first.score_rounds.best_score, first.score_rounds.best_score_epoch = 0.5, 1
    first.save_checkpoint(str(fold_dir(tmp_path) / "checkpoint_latest.pth"))
    later = first.checkpoint_payload()
    later["current_epoch"] = 5
    later["topo_state"]["score_rounds"] = {"records": [], "best_score": 0.7, "best_score_epoch": 4}
    write_checkpoint(later, fold_dir(tmp_path) / BEST_SCORE_CHECKPOINT)
    return first


def _resume(tmp_path, monkeypatch, order=LOAD_ORDER, config=None):
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, config, resume=True)
    trainer.load_order = order
    trainer.load_checkpoint(str(fold_dir(tmp_path) / "checkpoint_latest.pth"))
    return trainer


def _swapped(a: str, b: str) -> tuple[str, ...]:
    order = list(LOAD_ORDER)
    i, j = order.index(a), order.index(b)
    order[i], order[j] = order[j], order[i]
    return tuple(order)


def _raw_weights_back(trainer, first) -> bool:
    ours, raw = unwrap_network(trainer.network).state_dict(), unwrap_network(first.network).state_dict()
    return all(torch.equal(ours[k], raw[k]) for k in raw)


def test_topo_state_has_every_component_under_its_own_key(tmp_path, monkeypatch, saved) -> None:
    state = load_checkpoint_file(fold_dir(tmp_path) / "checkpoint_latest.pth")["topo_state"]
    assert tuple(state) == TOPO_STATE_KEYS
    assert state["guarded_step"] == {"consecutive_skips": 0, "total_skipped_steps": 0}  # was flat on main
    for key, attribute in COMPONENT_KEYS.items():
        assert state[key] == getattr(saved, attribute).state_dict()
    assert all(callable(getattr(saved, f"restore_{step}")) for step in LOAD_ORDER)


def test_the_load_order_restores_every_component(tmp_path, monkeypatch, saved) -> None:
    resumed = _resume(tmp_path, monkeypatch)
    assert _raw_weights_back(resumed, saved)  # the network trains on from the raw weights, not their average
    assert resumed.weight_ema.num_updates == 2
    assert (resumed.score_rounds.best_score, resumed.score_rounds.best_score_epoch) == (0.7, 4)  # the file's
    assert resumed.plateau_driver.start_epoch(resumed.current_epoch) == pytest.approx(1e-2 / 4)


@pytest.mark.parametrize(("a", "b"), [("nnunet", "weight_ema"), ("score_rounds", "best_score_file")])
def test_swapping_dependent_steps_breaks_the_resume(tmp_path, monkeypatch, saved, a, b) -> None:
    """The order is load-bearing where a step reads what an earlier one restored: these swaps visibly fail."""
    resumed = _resume(tmp_path, monkeypatch, _swapped(a, b))
    if a == "nnunet":  # nnU-Net's load overwrites the raw weights with network_weights (the average)
        assert not _raw_weights_back(resumed, saved)
    else:  # the checkpoint's older best replaces the better one of checkpoint_best_score.pth
        assert resumed.score_rounds.best_score == 0.5


def test_an_optimizer_switch_keeps_the_plateau_driver(tmp_path, monkeypatch, saved) -> None:
    switched = {**CONFIG, "optimizer": "adamw", "allow_config_change": True}
    # the driver's state is kept whatever the order of the optimizer and lr_scheduler steps (main replaced the
    # driver in restore_optimizer: loading the schedule first lost its cuts)
    for order in (LOAD_ORDER, _swapped("optimizer", "lr_scheduler")):
        trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, switched, resume=True)
        driver = trainer.plateau_driver
        trainer.load_order = order
        trainer.load_checkpoint(str(fold_dir(tmp_path) / "checkpoint_latest.pth"))
        assert trainer.plateau_driver is driver and trainer.lr_scheduler is driver.scheduler
        assert type(trainer.optimizer) is torch.optim.AdamW
        assert (
            driver.scheduler.optimizer is trainer.optimizer and driver.scheduler.plateau.optimizer is trainer.optimizer
        )
        assert driver.scheduler.num_reductions == 2
        assert driver.start_epoch(trainer.current_epoch) == pytest.approx(1e-2 / 4)
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 / 4)


def test_validation_logs_no_resume_changes(tmp_path, monkeypatch, saved) -> None:
    """``--val`` with a file that differs from the run's: no 'changed on resume' lines (nothing is resumed)."""
    final = fold_dir(tmp_path) / "checkpoint_final.pth"
    saved.save_checkpoint(str(final))
    other = {**CONFIG, "optimizer": "adamw", "initial_lr": 0.05, "weight_decay": 1e-3}
    val = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, other)
    val.load_checkpoint(str(final))
    assert "changed on resume" not in log_text(fold_dir(tmp_path))


def test_older_checkpoints_with_flat_guarded_step_keys_load(tmp_path, monkeypatch, saved) -> None:
    path = fold_dir(tmp_path) / "checkpoint_latest.pth"
    old = load_checkpoint_file(path)
    state = old["topo_state"]
    del state["guarded_step"]
    state.update(consecutive_skips=2, total_skipped_steps=9)
    write_checkpoint(old, path)
    resumed = _resume(tmp_path, monkeypatch)
    assert (resumed.guarded_step.consecutive_skips, resumed.guarded_step.total_skipped_steps) == (2, 9)
