"""PlateauDriver without a trainer: the signal it follows, its EMA, the LR-cut log text, state round trip."""

from __future__ import annotations

import math

import pytest
import torch

from nnunetv2_topo.scheduling import PlateauDriver, smoothed
from nnunetv2_topo.trainers.config import resolve_config


def _optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _config(**overrides) -> dict:
    base = {"initial_lr": 1.0, "warmup_epochs": 0, "plateau_patience": 0, "plateau_factor": 0.5,
            "plateau_metric": "val_loss", "plateau_cooldown": 0, "plateau_final_anneal": 0.0}  # fmt: skip
    return resolve_config({**base, **overrides})


def _run(driver: PlateauDriver, losses: list[float], **kw) -> list[float]:
    lrs = []
    for epoch, loss in enumerate(losses):
        lrs.append(driver.start_epoch(epoch))
        driver.end_epoch(epoch, loss, **kw)
    return lrs


def test_from_config_uses_the_trainer_keys() -> None:
    cfg = _config(plateau_metric="val_loss_ema", plateau_cooldown=3, plateau_min_lr=0.01, warmup_epochs=2)
    driver = PlateauDriver.from_config(cfg, _optimizer())
    plateau = driver.scheduler.plateau
    assert (plateau.mode, plateau.cooldown, plateau.min_lrs, plateau.patience) == ("min", 3, [0.01], 0)
    assert driver.scheduler.warmup_epochs == 2 and driver.ema_smoothing == cfg["plateau_ema_smoothing"]
    assert (
        PlateauDriver.from_config(_config(plateau_metric="ema_fg_dice"), _optimizer()).scheduler.plateau.mode == "max"
    )


def test_val_loss_signal_cuts_on_the_first_bad_epoch_with_patience_0() -> None:
    messages: list[str] = []
    driver = PlateauDriver.from_config(_config(), _optimizer(), log=messages.append)
    lrs = _run(driver, [1.0, 0.5, 0.6, 0.4, 0.45])
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.5])
    assert messages == [
        "ReduceLROnPlateau: no improvement of val_loss for more than 0 epochs; lr 1 -> 0.5 from the next epoch",
        "ReduceLROnPlateau: no improvement of val_loss for more than 0 epochs; lr 0.5 -> 0.25 from the next epoch",
    ]
    assert driver.current_lr() == pytest.approx(0.25)


def test_val_loss_ema_is_smoothed_and_followed() -> None:
    driver = PlateauDriver.from_config(_config(plateau_metric="val_loss_ema", plateau_ema_smoothing=0.5), _optimizer())
    # raw loss rises at epoch 2 (0.5 -> 0.6) but its EMA keeps falling: no cut, unlike plain val_loss
    lrs = _run(driver, [1.0, 0.5, 0.6, 0.55])
    assert driver.val_loss_ema == pytest.approx(0.5 * (0.5 * (0.5 * 1.0 + 0.25) + 0.3) + 0.275)
    assert lrs == [1.0, 1.0, 1.0, 1.0]
    assert _run(PlateauDriver.from_config(_config(), _optimizer()), [1.0, 0.5, 0.6, 0.55])[3] == 0.5


def test_smoothed_starts_at_the_first_finite_value_and_holds_over_nan() -> None:
    assert smoothed(math.nan, 2.0, 0.9) == 2.0
    assert smoothed(2.0, math.nan, 0.9) == 2.0
    assert smoothed(2.0, 1.0, 0.9) == pytest.approx(1.9)
    assert math.isnan(smoothed(math.nan, math.nan, 0.9))


def test_val_score_steps_per_round_only() -> None:
    driver = PlateauDriver.from_config(_config(plateau_metric="val_score", score_every_epochs=1), _optimizer())
    assert driver.per_round and driver.unit == "scoring rounds"
    assert not driver.end_epoch(0, 1.0)  # no score: no step, but the EMA moves
    assert driver.scheduler.num_plateau_steps == 0 and driver.val_loss_ema == 1.0
    assert not driver.end_epoch(1, 1.0, val_score=0.5)
    assert driver.end_round(2, 0.4)  # worse score (mode max), patience 0
    assert driver.scheduler.num_plateau_steps == 2 and driver.current_lr() == 0.5
    # rounds do not step an epoch signal
    assert not PlateauDriver.from_config(_config(), _optimizer()).end_round(0, 0.1)


def test_warmup_epochs_are_not_stepped_and_phase_text() -> None:
    messages: list[str] = []
    driver = PlateauDriver.from_config(_config(warmup_epochs=2), _optimizer(), log=messages.append)
    lrs = _run(driver, [5.0, 6.0, 1.0, 2.0])
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 1.0]) and len(messages) == 1  # cut after epoch 3
    assert driver.phase(0) == "warmup 1/2" and driver.phase(2) == "plateau phase"
    assert driver.status(1) is None
    assert driver.status(3) == "plateau (val_loss): best 1, epochs without improvement 0/0"  # reset by the cut


def test_state_round_trip_continues_the_same_trajectory() -> None:
    cfg = _config(plateau_metric="val_loss_ema", plateau_patience=1, plateau_ema_smoothing=0.7)
    losses = [1.0, 0.9, 0.95, 0.97, 0.99, 0.8, 0.85, 0.9, 0.95]
    full = PlateauDriver.from_config(cfg, _optimizer())
    expected = _run(full, losses)
    first = PlateauDriver.from_config(cfg, _optimizer())
    head = _run(first, losses[:4])
    state = first.state_dict()
    opt = _optimizer(first.current_lr())
    second = PlateauDriver.from_config(cfg, opt)
    second.load_state_dict(state)
    tail = []
    for epoch, loss in enumerate(losses[4:], start=4):
        tail.append(second.start_epoch(epoch))
        second.end_epoch(epoch, loss)
    assert head + tail == pytest.approx(expected, rel=1e-12)
    assert second.val_loss_ema == pytest.approx(full.val_loss_ema, rel=1e-12)


def test_old_state_without_ema_resumes_from_the_logged_values() -> None:
    driver = PlateauDriver.from_config(_config(plateau_metric="val_loss_ema"), _optimizer())
    state = driver.scheduler.state_dict()  # an older checkpoint: the bare scheduler state
    driver.load_state_dict(state)
    assert math.isnan(driver.val_loss_ema)
    driver.resume_ema([0.9, 0.8, math.nan])
    assert driver.val_loss_ema == 0.8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"metric": "train_loss"}, "metric must be one of"), ({"ema_smoothing": 1.0}, "ema_smoothing")],
)
def test_bad_settings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PlateauDriver(_optimizer(), base_lr=1.0, warmup_epochs=0, **kwargs)


# ---------------------------------------------------------------------- resume with another configuration
def test_resume_with_a_longer_run_in_each_phase() -> None:
    """The plateau phase keeps its LR (only the anneal moves); a resume that lands inside the re-planned anneal
    continues that anneal; the saved run length comes from the state (or the saved configuration)."""
    cfg = _config(num_epochs=10, plateau_final_anneal=0.2)  # anneal over epochs 8, 9
    driver = PlateauDriver.from_config(cfg, _optimizer())
    _run(driver, [1.0, 2.0, 0.5, 0.4])  # a cut after epoch 1: plateau LR 0.5
    state = driver.state_dict()
    assert (state["num_epochs"], state["anneal_epochs"]) == (10, 2)
    longer = PlateauDriver.from_config({**cfg, "num_epochs": 20}, driver.scheduler.optimizer)
    (line,) = longer.resume(state, cfg, epoch=4)
    assert line == (
        "Extending the run: num_epochs 10 -> 20 at epoch 4; the LR continues at 0.5 (the plateau's LR, its cuts and "
        "counters unchanged); the final anneal now begins at epoch 16"
    )
    assert longer.start_epoch(4) == 0.5 and longer.scheduler.plateau.best == 0.4
    # 10 -> 11 at epoch 10 (after the old anneal): inside the new anneal of 2 epochs (9, 10)
    after_anneal = PlateauDriver.from_config({**cfg, "num_epochs": 11}, _optimizer())
    old = {**state, "last_started_epoch": 9}
    del old["num_epochs"], old["anneal_epochs"]  # a checkpoint written before they were saved
    (line,) = after_anneal.resume(old, cfg, epoch=10)
    assert (
        "num_epochs 10 -> 11 at epoch 10; the LR continues at 0.1667 (the final anneal, re-planned over the last 2"
        in line
    )
    assert after_anneal.start_epoch(10) == pytest.approx(0.5 / 3)


def test_resume_without_the_signals_name_resets_it_only_across_modes() -> None:
    cfg = _config()
    driver = PlateauDriver.from_config(cfg, _optimizer())
    _run(driver, [1.0, 2.0, 3.0])  # two cuts: 0.25
    state = {k: v for k, v in driver.state_dict().items() if k != "metric"}  # an older checkpoint
    same_mode = PlateauDriver.from_config(_config(plateau_metric="val_loss_ema"), _optimizer(0.25))
    assert same_mode.resume(state, {}, epoch=3) == [] and same_mode.scheduler.plateau.best == 1.0
    other_mode = PlateauDriver.from_config(_config(plateau_metric="ema_fg_dice"), _optimizer(0.25))
    assert other_mode.resume(state, {}, epoch=3) == []
    assert other_mode.scheduler.plateau.best == -math.inf and other_mode.start_epoch(3) == 0.25  # cuts kept
