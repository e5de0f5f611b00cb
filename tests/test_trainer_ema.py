"""Weight EMA (``ema_decay``): the average itself, validation with it, checkpoints that predict with it and resume
exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from trainer_fixtures import (
    fold_dir,
    make_trainer,
    parameters_snapshot,
    prepare_loop,
    synthetic_batch,
    with_synthetic_data,
)

from nnunetv2_topo.trainers import nnUNetTrainerTopoWarmup
from nnunetv2_topo.trainers.weight_ema import unwrap_network

EMA = {"loss_weights": {"ce": 1.0, "dice": 1.0}, "warmup_epochs": 0, "ema_decay": 0.9, "seed": 0}


def _start(trainer, epoch: int = 0) -> None:
    trainer.current_epoch = epoch
    trainer.on_epoch_start()
    trainer.on_train_epoch_start()


def _ema_params(trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.weight_ema.module.parameters()]


def test_average_of_the_weights_after_each_step(tmp_path, monkeypatch) -> None:
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, EMA)
    _start(trainer)
    expected = None
    for seed in range(3):
        trainer.train_step(synthetic_batch(seed))
        weights = parameters_snapshot(trainer)
        expected = weights if expected is None else [0.9 * e + 0.1 * w for e, w in zip(expected, weights)]
        for got, want in zip(_ema_params(trainer), expected):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert trainer.weight_ema.num_updates == 3


def test_off_by_default_and_skipped_steps_do_not_update(tmp_path, monkeypatch) -> None:
    assert make_trainer(tmp_path / "a", monkeypatch, nnUNetTrainerTopoWarmup).weight_ema is None
    trainer = make_trainer(tmp_path / "b", monkeypatch, nnUNetTrainerTopoWarmup, EMA)
    _start(trainer)
    bad = synthetic_batch(0)
    bad["data"][0, 0, 0, 0, 0] = float("nan")
    trainer.train_step(bad)
    assert trainer.weight_ema.num_updates == 0


def test_validation_uses_the_average_and_restores_the_weights(tmp_path, monkeypatch) -> None:
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, EMA)
    _start(trainer)
    for seed in range(3):
        trainer.train_step(synthetic_batch(seed))
    trainer.on_train_epoch_end([{"loss": np.array(1.0)}])
    raw = parameters_snapshot(trainer)
    ema = _ema_params(trainer)
    assert any(not torch.equal(a, b) for a, b in zip(raw, ema))
    trainer.on_validation_epoch_start()
    assert all(torch.equal(a, b) for a, b in zip(parameters_snapshot(trainer), ema))
    with torch.no_grad():
        out = trainer.validation_step(synthetic_batch(7))
    trainer.on_validation_epoch_end([out])
    assert all(torch.equal(a, b) for a, b in zip(parameters_snapshot(trainer), raw))
    # the logged validation loss is the averaged network's
    with torch.no_grad(), trainer.weight_ema.applied_to(unwrap_network(trainer.network)):
        expected = float(trainer.validation_step(synthetic_batch(7))["loss"])
    assert trainer.logger.get_value("val_losses", 0) == pytest.approx(expected, rel=1e-6)


def test_checkpoint_holds_the_average_for_prediction_and_resumes_exactly(tmp_path, monkeypatch) -> None:
    a = make_trainer(tmp_path / "a", monkeypatch, nnUNetTrainerTopoWarmup, EMA)
    _start(a)
    for seed in range(3):
        a.train_step(synthetic_batch(seed))
    path = tmp_path / "ckpt.pth"
    a.save_checkpoint(str(path))
    saved = torch.load(path, map_location="cpu", weights_only=False)
    ema_weights = a.weight_ema.weights()
    raw_weights = unwrap_network(a.network).state_dict()
    assert all(torch.equal(saved["network_weights"][k], ema_weights[k]) for k in ema_weights)
    assert all(torch.equal(saved["raw_network_weights"][k], raw_weights[k]) for k in raw_weights)
    # the average is stored once, as network_weights: the EMA state holds only its decay and update count
    assert saved["topo_state"]["weight_ema"] == {"decay": EMA["ema_decay"], "num_updates": 3}

    b = make_trainer(tmp_path / "b", monkeypatch, nnUNetTrainerTopoWarmup, EMA)
    b.load_checkpoint(str(path))
    assert all(torch.equal(x, y) for x, y in zip(parameters_snapshot(b), parameters_snapshot(a)))
    assert all(torch.equal(x, y) for x, y in zip(_ema_params(b), _ema_params(a)))
    for t in (a, b):  # one more identical step on both: still identical
        _start(t, 1)
        t.train_step(synthetic_batch(9))
    assert all(torch.equal(x, y) for x, y in zip(parameters_snapshot(b), parameters_snapshot(a)))
    assert all(torch.equal(x, y) for x, y in zip(_ema_params(b), _ema_params(a)))
    assert b.weight_ema.num_updates == 4


@pytest.mark.e2e
def test_nnunet_loop_writes_final_and_best_with_the_average(tmp_path, monkeypatch) -> None:
    prepare_loop(tmp_path)
    config = {**EMA, "num_epochs": 3, "num_iterations_per_epoch": 2, "num_val_iterations_per_epoch": 1}
    trainer = make_trainer(tmp_path, monkeypatch, with_synthetic_data(nnUNetTrainerTopoWarmup), config)
    monkeypatch.setattr(trainer.logger, "plot_progress_png", lambda folder: None)
    monkeypatch.setattr(trainer, "write_diagnostics", lambda: None)
    trainer.run_training()
    final = torch.load(fold_dir(tmp_path) / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    ema = trainer.weight_ema.weights()
    assert all(torch.equal(final["network_weights"][k], ema[k]) for k in ema)
    assert trainer.weight_ema.num_updates == 6
    best = torch.load(fold_dir(tmp_path) / "checkpoint_best.pth", map_location="cpu", weights_only=False)
    assert "raw_network_weights" in best and best["topo_state"]["weight_ema"] is not None
