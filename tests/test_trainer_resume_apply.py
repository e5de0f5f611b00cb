"""What a loaded checkpoint means: ``--c`` with ``allow_config_change`` puts the new ``initial_lr``/``weight_decay``
into the optimizer nnU-Net restored, an ``optimizer`` switch starts a fresh state and trains, the best competition
score comes back from the checkpoint and from ``checkpoint_best_score.pth``; ``--val`` validates the weights predict
loads whatever the configuration says; ``nnUNetTrainer_TopoBudget --c`` keeps its budget."""

from __future__ import annotations

import math

import pytest
import torch
from trainer_fixtures import fold_dir, log_text, make_trainer, simulate_epoch, synthetic_batch

from nnunetv2_topo.trainers import nnUNetTrainer_TopoBudget, nnUNetTrainerTopoWarmup
from nnunetv2_topo.trainers.checkpoint import load_checkpoint_file, write_checkpoint
from nnunetv2_topo.trainers.config import TopoConfigError
from nnunetv2_topo.trainers.score_rounds import BEST_SCORE_CHECKPOINT
from nnunetv2_topo.trainers.weight_ema import unwrap_network

ORIGINAL = {
    "optimizer": "sgd",
    "loss_weights": {"ce": 1.0, "dice": 1.0},
    "num_epochs": 50,
    "initial_lr": 1e-2,
    "weight_decay": 3e-5,
    "warmup_epochs": 0,
    "plateau_patience": 0,
    "plateau_metric": "val_loss",  # every worse epoch counts (the default follows an EMA, with a cooldown)
    "plateau_cooldown": 0,
    "seed": 0,
}


def _trained(tmp_path, monkeypatch, config=ORIGINAL, losses=(0.9, 0.95, 0.97), name="checkpoint_latest.pth"):
    """A run of a few scripted epochs (patience 0: every worse loss halves the LR) and one real step (optimizer
    state), saved as nnU-Net saves it."""
    first = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, config)
    first.on_train_epoch_start()
    first.train_step(synthetic_batch(0))
    for v in losses:
        simulate_epoch(first, v)
        first.epoch_log.pad(first.current_epoch)
        first.current_epoch += 1
    first.current_epoch -= 1
    first.save_checkpoint(str(fold_dir(tmp_path) / name))
    return first


def _resume(tmp_path, monkeypatch, config):
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, config, resume=True)
    trainer.load_checkpoint(str(fold_dir(tmp_path) / "checkpoint_latest.pth"))
    return trainer


def test_unchanged_resume_keeps_the_optimizer_groups(tmp_path, monkeypatch) -> None:
    first = _trained(tmp_path, monkeypatch)
    lr = first.optimizer.param_groups[0]["lr"]
    assert lr == pytest.approx(1e-2 / 4)  # two cuts
    resumed = _resume(tmp_path, monkeypatch, None)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(lr)
    assert resumed.optimizer.param_groups[0]["weight_decay"] == 3e-5
    assert "changed on resume" not in log_text(fold_dir(tmp_path))


def test_allowed_initial_lr_and_weight_decay_reach_the_optimizer(tmp_path, monkeypatch) -> None:
    _trained(tmp_path, monkeypatch)
    changed = {**ORIGINAL, "initial_lr": 2e-2, "weight_decay": 1e-4, "allow_config_change": True}
    resumed = _resume(tmp_path, monkeypatch, changed)
    groups = resumed.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [1e-4] * len(groups)
    assert groups[0]["lr"] == pytest.approx(2e-2 / 4)  # the new base LR with the two cuts kept
    assert resumed.plateau_driver.start_epoch(resumed.current_epoch) == pytest.approx(2e-2 / 4)
    text = log_text(fold_dir(tmp_path))
    assert "initial_lr changed on resume (0.01 -> 0.02): optimizer lr 0.0025 -> 0.005" in text
    assert "weight_decay changed on resume (3e-05 -> 0.0001): applied to every optimizer group" in text
    # the plateau goes on cutting from the new LR
    simulate_epoch(resumed, 5.0)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(2e-2 / 8)


def test_optimizer_switch_starts_a_fresh_state_and_trains(tmp_path, monkeypatch) -> None:
    _trained(tmp_path, monkeypatch)
    switched = {**ORIGINAL, "optimizer": "adamw", "allow_config_change": True}
    resumed = _resume(tmp_path, monkeypatch, switched)
    assert type(resumed.optimizer) is torch.optim.AdamW and resumed.lr_scheduler.optimizer is resumed.optimizer
    assert resumed.optimizer.state_dict()["state"] == {}
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 / 4)  # the schedule continues
    before = [p.detach().clone() for p in resumed.network.parameters()]
    resumed.on_train_epoch_start()
    out = resumed.train_step(synthetic_batch(1))  # the old KeyError: 'step'
    assert math.isfinite(float(out["loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, resumed.network.parameters()))
    assert "optimizer changed on resume (sgd -> adamw): adamw starts from a fresh state" in log_text(fold_dir(tmp_path))
    # without permission the switch is refused, naming the key
    with pytest.raises(TopoConfigError, match=r"optimizer: \"sgd\" -> \"adamw\""):
        make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, {**ORIGINAL, "optimizer": "adamw"}, resume=True)


def test_optimizer_switch_to_muon_builds_it_from_the_network_and_its_keys(tmp_path, monkeypatch) -> None:
    """Muon splits the network's parameters by role and reads muon_* from the configuration: the switch on resume
    builds it as a fresh run does (it raised TypeError, given the bare parameter list)."""
    from nnunetv2_topo.trainers.muon import MuonHybrid

    _trained(tmp_path, monkeypatch)
    switched = {**ORIGINAL, "optimizer": "muon", "muon_other": "sgd", "allow_config_change": True}
    resumed = _resume(tmp_path, monkeypatch, switched)
    assert isinstance(resumed.optimizer, MuonHybrid) and resumed.optimizer.other_kind == "sgd"
    assert resumed.lr_scheduler.optimizer is resumed.optimizer
    assert "optimizer changed on resume (sgd -> muon)" in log_text(fold_dir(tmp_path))


def test_best_score_comes_back_and_a_better_file_is_kept(tmp_path, monkeypatch) -> None:
    config = {**ORIGINAL, "score_every_epochs": 1}
    first = _trained(tmp_path, monkeypatch, config)
    first.score_rounds.best_score, first.score_rounds.best_score_epoch = 0.5, 1
    first.save_checkpoint(str(fold_dir(tmp_path) / "checkpoint_latest.pth"))
    # a later, better round wrote checkpoint_best_score.pth after checkpoint_latest.pth
    best_file = fold_dir(tmp_path) / BEST_SCORE_CHECKPOINT
    later = first.checkpoint_payload()
    later["current_epoch"] = 5
    later["topo_state"]["score_rounds"] = {"records": [], "best_score": 0.7, "best_score_epoch": 4}
    write_checkpoint(later, best_file)
    resumed = _resume(tmp_path, monkeypatch, None)
    assert (resumed.score_rounds.best_score, resumed.score_rounds.best_score_epoch) == (0.7, 4)
    assert f"Best competition score so far: 0.7000 of epoch 4 (from {best_file})" in log_text(fold_dir(tmp_path))
    # a worse round does not replace the file; a better one does
    record = {"epoch": 6, "applied_epoch": 6, "error": None, "score": 0.6, "num_cases": 1}
    assert not resumed.score_rounds.accept(record, lambda c: pytest.fail("a worse round wrote the file"))
    written = []
    assert resumed.score_rounds.accept({**record, "epoch": 7, "score": 0.8}, written.append) is True
    # without a later file the checkpoint's own best comes back
    best_file.unlink()
    again = _resume(tmp_path, monkeypatch, None)
    assert (again.score_rounds.best_score, again.score_rounds.best_score_epoch) == (0.5, 1)


def test_validation_takes_the_ema_of_the_checkpoint_whatever_the_config(tmp_path, monkeypatch) -> None:
    config = {**ORIGINAL, "ema_decay": 0.9}
    first = _trained(tmp_path, monkeypatch, config, name="checkpoint_final.pth")
    for seed in range(2):  # the average and the raw weights differ
        first.train_step(synthetic_batch(seed + 5))
    final = fold_dir(tmp_path) / "checkpoint_final.pth"
    first.save_checkpoint(str(final))
    saved = load_checkpoint_file(final)
    assert any(
        not torch.equal(saved["network_weights"][k], saved["raw_network_weights"][k]) for k in saved["network_weights"]
    )
    other = tmp_path / "other.yaml"
    other.write_text("ema_decay: 0.5\n")
    for setting in (None, other):  # the variable unset, and another file set
        val = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, setting)
        val.load_checkpoint(str(final))  # what --val / --val_best do before perform_actual_validation
        assert val.weight_ema is not None and val.weight_ema.decay == 0.9 and val.topo_config["ema_decay"] == 0.9
        with val.weight_ema.applied_to(unwrap_network(val.network)):  # what perform_actual_validation runs on
            validated = unwrap_network(val.network).state_dict()
            assert all(torch.equal(validated[k], saved["network_weights"][k]) for k in validated)
    assert "was trained with ema_decay = 0.9; using it instead of 0.0" in log_text(fold_dir(tmp_path))


def test_topobudget_resume_keeps_its_budget(tmp_path, monkeypatch) -> None:
    budget = {"num_epochs": 7, "num_iterations_per_epoch": 3, "num_val_iterations_per_epoch": 2, "seed": 4}
    first = make_trainer(tmp_path, monkeypatch, nnUNetTrainer_TopoBudget, budget)
    folder = fold_dir(tmp_path, "nnUNetTrainer_TopoBudget")
    first.save_checkpoint(str(folder / "checkpoint_latest.pth"))
    assert load_checkpoint_file(folder / "checkpoint_latest.pth")["topo_state"]["config"]["num_epochs"] == 7
    resumed = make_trainer(tmp_path, monkeypatch, nnUNetTrainer_TopoBudget, None, resume=True)  # config unset
    assert (resumed.num_epochs, resumed.num_iterations_per_epoch, resumed.num_val_iterations_per_epoch) == (7, 3, 2)
    assert resumed.seed == 4
    resumed.load_checkpoint(str(folder / "checkpoint_latest.pth"))  # nnU-Net's own loading still works
    with pytest.raises(TopoConfigError, match=r"num_iterations_per_epoch: 3 -> 250"):
        make_trainer(tmp_path, monkeypatch, nnUNetTrainer_TopoBudget, {"num_iterations_per_epoch": 250}, resume=True)
