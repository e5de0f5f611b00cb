"""The plateau scheduler inside nnU-Net's own ``run_training`` loop (tiny network, synthetic batches, seeded).

The LR of every epoch must equal ``ReduceLROnPlateau`` replayed on the *logged validation signal*. Feeding the
training loss, the epoch number or nothing would give another LR sequence, and each test checks that its data tell
these apart (otherwise it would pass by luck).
"""

from __future__ import annotations

import math

import pytest
import torch
from trainer_fixtures import make_trainer, noisy_validation_trainer, prepare_loop

from nnunetv2_topo.scheduling import warmup_lr

pytestmark = pytest.mark.e2e  # every test trains through nnU-Net's run_training loop

LoopTrainer = noisy_validation_trainer()

LOOP = {
    "loss_weights": {"ce": 1.0, "dice": 1.0},
    "num_epochs": 12,
    "num_iterations_per_epoch": 2,
    "num_val_iterations_per_epoch": 1,
    "warmup_epochs": 2,
    "initial_lr": 0.05,
    "plateau_patience": 0,
    "plateau_factor": 0.5,
    "plateau_min_lr": 1e-5,
    # torch's own plateau settings (the replay below is bare ReduceLROnPlateau), no anneal or early stop
    "plateau_cooldown": 0,
    "plateau_threshold": 1e-4,
    "plateau_threshold_mode": "rel",
    "plateau_final_anneal": 0.0,
    "plateau_early_stop": False,
    "seed": 0,
}


def replay(signal: list[float], config: dict, mode: str) -> list[float]:
    """The LR of every epoch when torch's ReduceLROnPlateau is stepped with ``signal[e]`` after each post-warmup
    epoch ``e`` (what the trainer must do)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config["initial_lr"])
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt,
        mode=mode,
        factor=config["plateau_factor"],
        patience=config["plateau_patience"],
        min_lr=config["plateau_min_lr"],
        cooldown=config.get("plateau_cooldown", 0),
    )
    lrs = []
    for epoch, value in enumerate(signal):
        if epoch < config["warmup_epochs"]:
            lrs.append(warmup_lr(config["initial_lr"], epoch, config["warmup_epochs"]))
            continue
        lrs.append(opt.param_groups[0]["lr"])
        plateau.step(value)
    return lrs


def _train(tmp_path, monkeypatch, config: dict) -> dict:
    prepare_loop(tmp_path)
    trainer = make_trainer(tmp_path, monkeypatch, LoopTrainer, config)
    # the plots take seconds per epoch (nnU-Net's progress.png is 30x54 inches) and are tested elsewhere
    monkeypatch.setattr(trainer.logger, "plot_progress_png", lambda folder: None)
    monkeypatch.setattr(trainer, "write_diagnostics", lambda: None)
    trainer.run_training()  # nnU-Net's loop: on_train_start, epochs, on_train_end
    return trainer.logger.local_logger.my_fantastic_logging


def _reductions(lrs: list[float]) -> int:
    return sum(b < a for a, b in zip(lrs, lrs[1:]))


@pytest.mark.parametrize(
    ("metric", "key", "mode"),
    [("val_loss", "val_losses", "min"), ("ema_fg_dice", "ema_fg_dice", "max"), ("val_loss_ema", "val_loss_ema", "min")],
)
def test_lr_of_every_epoch_is_the_plateau_replayed_on_the_logged_signal(
    tmp_path, monkeypatch, metric: str, key: str, mode: str
) -> None:
    config = {**LOOP, "plateau_metric": metric}
    if metric == "val_loss_ema":
        config["plateau_ema_smoothing"] = 0.5
    log = _train(tmp_path, monkeypatch, config)
    lrs = log["lrs"]
    assert len(lrs) == config["num_epochs"]
    assert lrs == pytest.approx(replay(log[key], config, mode), rel=1e-12)
    assert _reductions(lrs) >= 1, f"the plateau never acted ({lrs}): the test would not catch the trap"
    # the data distinguish the right signal from the wrong ones
    epochs = [float(e) for e in range(len(lrs))]
    assert replay(log["train_losses"], config, mode) != pytest.approx(lrs, rel=1e-12)
    assert replay(epochs, config, mode) != pytest.approx(lrs, rel=1e-12)
    assert replay([1.0] * len(lrs), config, mode) != pytest.approx(lrs, rel=1e-12)


def test_val_loss_ema_is_logged_and_smooths(tmp_path, monkeypatch) -> None:
    config = {**LOOP, "plateau_metric": "val_loss_ema", "plateau_ema_smoothing": 0.8, "num_epochs": 5}
    log = _train(tmp_path, monkeypatch, config)
    val, ema = [float(v) for v in log["val_losses"]], log["val_loss_ema"]
    expected = [val[0]]
    for v in val[1:]:
        expected.append(0.8 * expected[-1] + 0.2 * v)
    assert ema == pytest.approx(expected, rel=1e-12)
    assert all(math.isfinite(v) for v in ema)


def test_seeded_runs_are_identical(tmp_path, monkeypatch) -> None:
    config = {**LOOP, "num_epochs": 3}
    a = _train(tmp_path / "a", monkeypatch, config)
    b = _train(tmp_path / "b", monkeypatch, config)
    assert a["train_losses"] == b["train_losses"] and a["val_losses"] == b["val_losses"]
    c = _train(tmp_path / "c", monkeypatch, {**config, "seed": 1})
    assert c["train_losses"] != a["train_losses"]
