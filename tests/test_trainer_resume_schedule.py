"""The schedule across a resume: extending a run (``--c`` with a larger ``num_epochs``) is one logged step that
re-plans the final anneal and also extends an early-stopped run; ``nnunetv2_topo schedule --log`` replays the
extended run from its own logs, LR for LR; switching ``plateau_metric`` keeps the LR and its cuts and resets the
signal's best value.

The epochs run through the trainer's hooks with scripted validation losses (nnU-Net's ``on_epoch_end`` writes the
log lines the replay reads); ``checkpoint_final.pth`` is written as nnU-Net's ``on_train_end`` writes it.
"""

from __future__ import annotations

import argparse
import json
import math

import pytest
from batchgenerators.utilities.file_and_folder_operations import join
from trainer_fixtures import fold_dir, log_text, make_trainer, simulate_epoch

from nnunetv2_topo.cli import schedule
from nnunetv2_topo.trainers import nnUNetTrainerTopoWarmup

BASE = {
    "loss_weights": {"ce": 1.0, "dice": 1.0},
    "initial_lr": 0.01,
    "warmup_epochs": 0,
    "plateau_metric": "val_loss",
    "plateau_patience": 0,
    "plateau_cooldown": 0,
    "plateau_threshold": 1e-3,
    "plateau_threshold_mode": "abs",
    "plateau_factor": 0.5,
    "plateau_min_lr": 1e-4,
    "plateau_early_stop": False,
    "seed": 0,
}


def _trainer(tmp_path, monkeypatch, config, resume=False):
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, config, resume=resume)
    monkeypatch.setattr(trainer.logger, "plot_progress_png", lambda folder: None)  # seconds per epoch
    monkeypatch.setattr(trainer, "write_diagnostics", lambda: None)
    if resume:
        trainer.load_checkpoint(str(fold_dir(tmp_path) / "checkpoint_final.pth"))  # nnU-Net's --c order
    return trainer


def _epoch(trainer, loss: float) -> None:
    """One epoch with this validation loss through nnU-Net's hooks (``on_epoch_end`` logs val_loss)."""
    simulate_epoch(trainer, loss)
    trainer.on_epoch_end()  # writes checkpoints as due, current_epoch += 1


def _finish(trainer) -> None:
    """``checkpoint_final.pth``, as nnU-Net's ``on_train_end`` saves it."""
    trainer.current_epoch -= 1
    trainer.save_checkpoint(join(trainer.output_folder, "checkpoint_final.pth"))
    trainer.current_epoch += 1


def _train(trainer, losses) -> None:
    for loss in losses:
        _epoch(trainer, loss)
    _finish(trainer)


def _replay(tmp_path, capsys) -> tuple[list[float], str]:
    """``nnunetv2_topo schedule --log fold_0/training_log_*.txt --json`` (no --topo-config): LRs and stdout."""
    logs = [str(p) for p in sorted(fold_dir(tmp_path).glob("training_log_*.txt"))]
    out = tmp_path / "replay.json"
    args = argparse.Namespace(log=logs, topo_config=None, trainer=None, num_epochs=None, json=str(out), plot=None,
                              overwrite=False)  # fmt: skip
    capsys.readouterr()
    assert schedule.run(args) == 0
    return json.loads(out.read_text())["lr"], capsys.readouterr().out


def test_extension_inside_the_anneal_is_logged_replanned_and_replayed(tmp_path, monkeypatch, capsys) -> None:
    # 6 epochs, final anneal over the last 2: a cut after epoch 1 (0.01 -> 0.005), then the anneal to 0.005/3
    config = {**BASE, "num_epochs": 6, "plateau_final_anneal": 0.25}
    first = _trainer(tmp_path, monkeypatch, config)
    _train(first, [0.9, 0.95, 0.8, 0.7, 0.6, 0.5])
    used = first.logger.local_logger.my_fantastic_logging["lrs"]
    assert used == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.005 * 2 / 3, 0.005 / 3])
    longer = _trainer(tmp_path, monkeypatch, {**config, "num_epochs": 12}, resume=True)
    line = (
        "Extending the run: num_epochs 6 -> 12 at epoch 6; the LR continues at 0.005 (the plateau's LR before the "
        "final anneal of the 6-epoch run (which had brought it to 0.001667): the anneal is re-planned at the new "
        "end); the final anneal now begins at epoch 9"
    )
    assert log_text(fold_dir(tmp_path)).count("Extending the run") == 1 and line in log_text(fold_dir(tmp_path))
    _train(longer, [0.45, 0.5, 0.4, 0.3, 0.2, 0.1])  # a cut after epoch 7 (0.005 -> 0.0025), anneal from epoch 9
    lrs = longer.logger.local_logger.my_fantastic_logging["lrs"]
    assert lrs[6:] == pytest.approx([0.005, 0.005, 0.0025, 0.0025 * 3 / 4, 0.0025 * 2 / 4, 0.0025 / 4])
    # the run's own logs replay it, LR for LR, without --config
    replayed, out = _replay(tmp_path, capsys)
    assert replayed == pytest.approx(lrs, rel=1e-12)
    assert f"restart at epoch 6: {line}" in out and "final anneal: epochs 9-11" in out


def test_an_early_stopped_run_can_be_extended(tmp_path, monkeypatch, capsys) -> None:
    # cuts after epochs 1 and 2 reach plateau_min_lr; epoch 3 at the floor without improvement: the run stops
    config = {**BASE, "num_epochs": 8, "plateau_min_lr": 0.0025, "plateau_threshold": 1.0, "plateau_early_stop": True,
              "plateau_final_anneal": 0.0}  # fmt: skip
    first = _trainer(tmp_path, monkeypatch, config)
    _train(first, [0.9, 0.8, 0.7, 0.6])
    assert first.plateau_driver.should_stop()
    longer = _trainer(tmp_path, monkeypatch, {**config, "num_epochs": 10}, resume=True)
    _epoch(longer, 0.5)  # main: _EarlyStop in on_epoch_start, the extension trained nothing
    assert "the early stop's count starts afresh" in log_text(fold_dir(tmp_path))
    assert longer.logger.get_value("lrs", step=4) == pytest.approx(0.0025)
    replayed, out = _replay(tmp_path, capsys)
    assert replayed[:5] == pytest.approx(longer.logger.local_logger.my_fantastic_logging["lrs"], rel=1e-12)
    assert "restart at epoch 4: Extending the run: num_epochs 8 -> 10 at epoch 4" in out


@pytest.mark.parametrize(("new_metric", "best"), [("ema_fg_dice", -math.inf), ("val_loss_ema", math.inf)])
def test_switching_plateau_metric_keeps_the_lr_and_resets_the_signal(tmp_path, monkeypatch, new_metric, best) -> None:
    config = {**BASE, "num_epochs": 20, "plateau_final_anneal": 0.0}
    first = _trainer(tmp_path, monkeypatch, config)
    _train(first, [0.9, 0.95, 0.97])  # two cuts: 0.01 -> 0.0025
    assert first.plateau_driver.current_lr() == pytest.approx(0.0025)
    assert first.lr_scheduler.plateau.best == pytest.approx(0.9)
    switched = {**config, "plateau_metric": new_metric, "allow_config_change": True}
    resumed = _trainer(tmp_path, monkeypatch, switched, resume=True)
    plateau = resumed.lr_scheduler.plateau
    # main: across modes every cut was lost (0.01); within a mode val_loss's best 0.9 became val_loss_ema's bar
    assert resumed.plateau_driver.start_epoch(resumed.current_epoch) == pytest.approx(0.0025)
    assert (plateau.best, plateau.num_bad_epochs, plateau.cooldown_counter) == (best, 0, 0)
    assert resumed.lr_scheduler.num_reductions == 2
    assert (
        f"plateau_metric changed on resume (val_loss -> {new_metric}): the LR 0.0025 and its 2 cuts are kept; the "
        "best value, the epochs without improvement, the cooldown and the early stop's count start afresh on "
        f"{new_metric}"
    ) in log_text(fold_dir(tmp_path))
