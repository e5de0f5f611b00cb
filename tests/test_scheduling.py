"""WarmupPlateauScheduler: warmup LR of every epoch, plateau reductions at the right epoch, state round trip."""

from __future__ import annotations

import pytest
import torch

from nnunetv2_topo.scheduling import WarmupPlateauScheduler, warmup_lr


def _optimizer(lr: float = 1e-2) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=lr, momentum=0.99, nesterov=True)


def _run(sched: WarmupPlateauScheduler, metrics: list[float], start: int = 0) -> list[float]:
    """LR used in each epoch from ``start`` on, feeding ``metrics[i]`` after epoch ``start + i``."""
    lrs = []
    for i, m in enumerate(metrics):
        epoch = start + i
        lrs.append(sched.start_epoch(epoch))
        sched.step_metric(epoch, m)
    return lrs


def test_every_warmup_epoch_has_the_seed_lr() -> None:
    opt = _optimizer(0.5)
    sched = WarmupPlateauScheduler(opt, base_lr=1e-2, warmup_epochs=10)
    for epoch in range(10):
        assert sched.start_epoch(epoch) == pytest.approx(1e-2 * (epoch + 1) / 10, rel=1e-12)
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * (epoch + 1) / 10, rel=1e-12)
    # the seed's numbers: epoch 0 -> 10 % of base, epoch 9 -> base
    assert warmup_lr(1e-4, 0, 10) == pytest.approx(1e-5)
    assert warmup_lr(1e-4, 9, 10) == pytest.approx(1e-4)
    assert sched.start_epoch(10) == pytest.approx(1e-2)


def test_no_plateau_step_during_warmup_even_with_rising_loss() -> None:
    opt = _optimizer()
    sched = WarmupPlateauScheduler(opt, base_lr=1e-2, warmup_epochs=5, patience=0)
    lrs = _run(sched, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert lrs == pytest.approx([2e-3, 4e-3, 6e-3, 8e-3, 1e-2])
    assert sched.num_plateau_steps == 0
    assert sched.plateau.num_bad_epochs == 0
    assert sched.plateau.last_epoch == 0


def test_plateau_reduces_at_exactly_the_expected_epoch() -> None:
    opt = _optimizer()
    sched = WarmupPlateauScheduler(opt, base_lr=1e-2, warmup_epochs=2, factor=0.5, patience=2, min_lr=1e-6)
    # epochs 0-1 warmup; epoch 2 sets best=1.0; 3 improves; 4, 5, 6 do not -> 3 bad epochs > patience 2 after
    # epoch 6, so epoch 7 runs at half the LR; 7 improves (best 0.5); 8, 9, 10 bad -> epoch 11 at a quarter.
    metrics = [9.0, 9.0, 1.0, 0.9, 0.95, 0.9, 0.91, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6]
    lrs = _run(sched, metrics)
    expected = [5e-3, 1e-2, 1e-2, 1e-2, 1e-2, 1e-2, 1e-2, 5e-3, 5e-3, 5e-3, 5e-3, 2.5e-3, 2.5e-3]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert sched.num_reductions == 2


def test_improvement_below_threshold_counts_as_no_improvement() -> None:
    sched = WarmupPlateauScheduler(_optimizer(), base_lr=1.0, warmup_epochs=0, patience=1, factor=0.5)
    # relative threshold 1e-4: 1.0 -> 0.99995 is not better
    lrs = _run(sched, [1.0, 0.99995, 0.99995, 0.5])
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 0.5])


def test_min_lr_is_respected() -> None:
    sched = WarmupPlateauScheduler(_optimizer(), base_lr=1e-2, warmup_epochs=0, factor=0.1, patience=0, min_lr=1e-5)
    lrs = _run(sched, [1.0] * 8)
    assert min(lrs) == pytest.approx(1e-5)
    # epoch 0 sets the best value, every later epoch is "bad" with patience 0 -> reduce after each from epoch 1
    assert lrs[:5] == pytest.approx([1e-2, 1e-2, 1e-3, 1e-4, 1e-5])
    assert all(lr >= 1e-5 * (1 - 1e-9) for lr in lrs)


def test_ema_fg_dice_mode_max() -> None:
    sched = WarmupPlateauScheduler(_optimizer(), base_lr=1e-2, warmup_epochs=1, mode="max", patience=1, factor=0.5)
    # rising Dice keeps the LR; two epochs without a new maximum reduce it
    lrs = _run(sched, [0.0, 0.1, 0.2, 0.3, 0.3, 0.29, 0.35])
    assert lrs == pytest.approx([1e-2, 1e-2, 1e-2, 1e-2, 1e-2, 1e-2, 5e-3])
    # in min mode the same rising sequence would have been "bad" every epoch
    sched_min = WarmupPlateauScheduler(_optimizer(), base_lr=1e-2, warmup_epochs=1, mode="min", patience=1)
    assert _run(sched_min, [0.0, 0.1, 0.2, 0.3, 0.4]) == pytest.approx([1e-2, 1e-2, 1e-2, 1e-2, 5e-3])


def test_step_with_epoch_number_is_refused() -> None:
    sched = WarmupPlateauScheduler(_optimizer(), base_lr=1e-2)
    with pytest.raises(TypeError, match="step_metric"):
        sched.step(5)


def test_resume_from_state_dict_follows_the_same_trajectory() -> None:
    metrics = [5.0, 4.0, 3.0, 3.0, 3.1, 3.0, 2.0, 2.5, 2.5, 2.5, 2.5, 2.5, 1.0, 1.2, 1.2, 1.2, 1.3, 1.2, 1.2, 1.2]
    kwargs = dict(base_lr=1e-2, warmup_epochs=3, factor=0.5, patience=2, min_lr=1e-4)

    full_opt = _optimizer()
    full = _run(WarmupPlateauScheduler(full_opt, **kwargs), metrics)

    for stop in (2, 3, 9, 11):
        opt_a = _optimizer()
        sched_a = WarmupPlateauScheduler(opt_a, **kwargs)
        first = _run(sched_a, metrics[:stop])
        saved_sched, saved_opt = sched_a.state_dict(), opt_a.state_dict()

        opt_b = _optimizer()  # a fresh process: new optimizer at base LR, then the checkpoint is loaded
        sched_b = WarmupPlateauScheduler(opt_b, **kwargs)
        opt_b.load_state_dict(saved_opt)
        sched_b.load_state_dict(saved_sched)
        second = _run(sched_b, metrics[stop:], start=stop)
        assert first + second == pytest.approx(full, rel=1e-12), f"interrupted after epoch {stop - 1}"
    assert sum(a > b for a, b in zip(full, full[1:])) >= 2  # the trajectory really has reductions


def test_metric_switch_on_resume_resets_the_best_value() -> None:
    opt = _optimizer()
    a = WarmupPlateauScheduler(opt, base_lr=1e-2, warmup_epochs=0, mode="min")
    _run(a, [0.2, 0.1])
    b = WarmupPlateauScheduler(opt, base_lr=1e-2, warmup_epochs=0, mode="max")
    b.load_state_dict(a.state_dict())
    assert b.plateau.best == float("-inf")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_lr": 0.0}, "base_lr"),
        ({"warmup_epochs": -1}, "warmup_epochs"),
        ({"factor": 1.0}, "factor"),
        ({"factor": 0.0}, "factor"),
        ({"mode": "up"}, "mode"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    args = {"base_lr": 1e-2, **kwargs}
    with pytest.raises(ValueError, match=match):
        WarmupPlateauScheduler(_optimizer(), **args)
