"""``loss_schedule``: per-term weight ramps, their validation, the per-epoch log, the printed changes, validation at
full weights, terms at weight 0 not computed, and an exact resume."""

from __future__ import annotations

import pytest
import torch
from trainer_fixtures import fold_dir, log_text, make_trainer, simulate_epoch, synthetic_batch

from nnunetv2_topo.losses import TopologyLoss
from nnunetv2_topo.losses.schedule import schedule_factor
from nnunetv2_topo.trainers import config as C
from nnunetv2_topo.trainers import nnUNetTrainerTopoWarmup
from nnunetv2_topo.trainers.variants import nnUNetTrainerTopoWarmup_Phased

SCHEDULED = {
    "loss_weights": {"ce": 1.0, "dice": 1.0, "cldice": 0.5},
    "loss_schedule": {"cldice": {"start": 2, "ramp": 2}},
    "warmup_epochs": 0,
    "seed": 0,
}


def test_factor_is_zero_before_start_then_ramps_linearly() -> None:
    spec = {"start": 2, "ramp": 2}
    assert [schedule_factor(spec, e) for e in range(6)] == [0.0, 0.0, 0.5, 1.0, 1.0, 1.0]
    assert [schedule_factor({"start": 0, "ramp": 1}, e) for e in range(2)] == [1.0, 1.0]
    assert schedule_factor(None, 0) == 1.0


@pytest.mark.parametrize(
    ("schedule", "fragment"),
    [
        ({"clDice": {"start": 1}}, "loss_schedule.clDice: unknown loss term"),
        ({"cldice": {"start": -1, "ramp": 2}}, "loss_schedule.cldice.start must be >= 0"),
        ({"cldice": {"start": 1, "ramp": 0}}, "loss_schedule.cldice.ramp must be >= 1"),
        ({"cldice": {"start": 1.5}}, "loss_schedule.cldice.start must be an integer"),
        ({"cldice": {"ramp": 2}}, "loss_schedule.cldice needs start"),
        ({"cldice": {"start": 1, "rmap": 2}}, "unknown field(s) ['rmap']"),
        ({"cldice": 3}, "loss_schedule.cldice must be a mapping"),
        ([1, 2], "must be a mapping term"),
    ],
)
def test_bad_schedule_is_one_line_naming_the_key(schedule, fragment) -> None:
    with pytest.raises(C.TopoConfigError) as err:
        C.resolve_config({"loss_schedule": schedule}, source="cfg.yaml")
    message = str(err.value)
    assert fragment in message and "cfg.yaml" in message and "'loss_schedule'" in message
    assert "\n" not in message


def test_scheduled_term_without_weight_is_an_error() -> None:
    cfg = C.resolve_config({"loss_weights": {"ce": 1, "dice": 1}, "loss_schedule": {"cldice": {"start": 1}}})
    with pytest.raises(C.TopoConfigError, match=r"loss_schedule schedules \['cldice'\] but loss_weights"):
        C.check_consistency(cfg, "cfg.yaml")


def test_term_at_factor_zero_is_not_computed_and_none_restores_the_weights() -> None:
    loss = TopologyLoss({"ce": 1.0, "dice": 1.0, "cldice": 0.5})
    logits = torch.randn(2, 2, 8, 8, 8)
    target = torch.randint(0, 2, (2, 1, 8, 8, 8))
    full = loss(logits, target)
    loss.set_schedule({"cldice": 0.0})
    off = loss(logits, target)
    assert "cldice" not in loss.last_terms
    assert float(off) == pytest.approx(loss.last_terms["ce"] + loss.last_terms["dice"], rel=1e-6)
    loss.set_schedule({"cldice": 0.5})
    half = loss(logits, target)
    assert float(half - off) == pytest.approx(0.5 * 0.5 * loss.last_terms["cldice"], rel=1e-5)
    loss.set_schedule(None)
    assert float(loss(logits, target)) == pytest.approx(float(full))
    with pytest.raises(ValueError, match="without a weight"):
        loss.set_schedule({"skeleton_recall": 1.0})


def _with_step(trainer, start_epoch):
    """``on_train_epoch_start`` followed by one training step; records the terms the loss computed."""
    trainer.trained_terms = []

    def start() -> None:
        start_epoch()
        trainer.train_step(synthetic_batch(trainer.current_epoch))
        trainer.trained_terms.append(tuple(k for k in trainer.loss.last_terms if k != "total"))

    return start


def test_weights_logged_printed_full_in_validation_and_resumed_exactly(tmp_path, monkeypatch) -> None:
    a = make_trainer(tmp_path / "a", monkeypatch, nnUNetTrainerTopoWarmup, SCHEDULED)
    a.on_train_start = lambda: None  # (no dataset: the hooks below are driven by hand)
    a.on_train_epoch_start = _with_step(a, a.on_train_epoch_start)
    for epoch in range(3):
        a.current_epoch = epoch
        simulate_epoch(a, 1.0)
        assert a.loss.topology_loss.effective_weights()["cldice"] == 0.5  # validation: the full weights
    assert a.trained_terms[0] == a.trained_terms[1] == ("dice", "ce")  # cldice at 0: not computed
    assert a.trained_terms[2] == ("dice", "ce", "cldice")
    log = a.logger.local_logger.my_fantastic_logging
    assert log["loss_weight_cldice"][:3] == [0.0, 0.0, 0.25]
    assert log["loss_weight_ce"][:3] == [1.0, 1.0, 1.0]
    text = log_text(fold_dir(tmp_path / "a"))
    assert "loss weights (epoch 0): dice 1, ce 1, cldice 0" in text
    assert "loss weights changed (epoch 2): dice 1, ce 1, cldice 0.25" in text
    assert "epoch 1" not in text.split("loss weights (epoch 0)")[1].split("changed (epoch 2)")[0]  # no change: silent
    a.current_epoch = 2
    path = tmp_path / "ckpt.pth"
    a.save_checkpoint(str(path))
    saved = torch.load(path, map_location="cpu", weights_only=False)
    assert saved["logging"]["loss_weight_cldice"][:3] == [0.0, 0.0, 0.25]

    b = make_trainer(tmp_path / "b", monkeypatch, nnUNetTrainerTopoWarmup, SCHEDULED, resume=True)
    b.load_checkpoint(str(path))
    assert b.current_epoch == 3
    for t in (a, b):
        t.current_epoch = 3
        t.on_train_epoch_start()
    assert b.logger.local_logger.my_fantastic_logging["loss_weight_cldice"][:4] == [0.0, 0.0, 0.25, 0.5]
    assert a.loss.topology_loss.effective_weights() == b.loss.topology_loss.effective_weights()
    assert b.loss.step == 3 * b.num_iterations_per_epoch and a.loss.step == b.loss.step + 1  # (a took a step)


def test_phased_variant_turns_the_topology_terms_on_one_at_a_time() -> None:
    cfg = C.resolve_config(variant_defaults=nnUNetTrainerTopoWarmup_Phased.merged_topo_defaults())
    C.check_consistency(cfg, "Phased")
    starts = sorted((s["start"], t) for t, s in cfg["loss_schedule"].items())
    assert [t for _, t in starts] == ["cldice", "skeleton_recall"] and starts[0][0] > 0 and starts[0][0] < starts[1][0]
    assert set(cfg["loss_weights"]) - set(cfg["loss_schedule"]) == {"ce", "dice"}


def test_progress_plot_draws_the_loss_weights(tmp_path, plotted_lines) -> None:
    from nnunetv2_topo.trainers.diagnostics import plot_progress_topo

    log = {"train_losses": [1.0, 0.9, 0.8], "val_losses": [1.0, 0.9, 0.8], "lrs": [0.01] * 3, "mean_fg_dice": [0.5] * 3,
           "ema_fg_dice": [0.5] * 3,
           "loss_weight_ce": [1.0] * 3, "loss_weight_cldice": [0.0, 0.25, 0.5]}  # fmt: skip
    plot_progress_topo(log, tmp_path / "p.png")
    drawn = plotted_lines
    assert drawn[0]["cldice"] == [0.0, 0.25, 0.5] and drawn[0]["ce"] == [1.0] * 3
