"""``--c`` continues the configuration the run started with; ``--val`` needs no config file.

Trainers are built as ``nnUNetv2_train`` builds them (``plans["continue_training"]`` set for ``--c``) on a fold
folder that holds a checkpoint of an earlier run.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from trainer_fixtures import fold_dir, log_text, make_trainer, simulate_epoch

from nnunetv2_topo.trainers import nnUNetTrainerTopoWarmup
from nnunetv2_topo.trainers.config import TopoConfigError

ORIGINAL = {
    "loss_weights": {"ce": 1.0, "cldice": 1.0},
    "num_epochs": 300,
    "initial_lr": 1e-3,
    "warmup_epochs": 0,
    "plateau_patience": 1,
    "plateau_metric": "val_loss",  # the raw loss: the assertions read its best value
}


def _epoch(trainer, val_loss: float) -> None:
    """One scripted epoch (see :func:`trainer_fixtures.simulate_epoch`), its log lists padded like nnU-Net's loop."""
    simulate_epoch(trainer, val_loss)
    trainer.epoch_log.pad(trainer.current_epoch)
    trainer.current_epoch += 1


@pytest.fixture
def trained(tmp_path, monkeypatch):
    """A run of 3 epochs with ORIGINAL, its checkpoint_latest.pth and topo_config.json in the fold folder."""
    first = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, ORIGINAL)
    for v in (0.9, 0.8, 0.85):
        _epoch(first, v)
    first.current_epoch -= 1  # as nnU-Net saves at the end of the last epoch
    first.save_checkpoint(str(fold_dir(tmp_path) / "checkpoint_latest.pth"))
    first.save_topo_config()
    return first


def _resume(tmp_path, monkeypatch, config):
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, config, resume=True)
    trainer.load_checkpoint(str(fold_dir(tmp_path) / "checkpoint_latest.pth"))  # as maybe_load_checkpoint does
    return trainer


def test_unset_variable_continues_the_saved_configuration(tmp_path, monkeypatch, trained) -> None:
    resumed = _resume(tmp_path, monkeypatch, None)
    assert resumed.topo_config == trained.topo_config
    assert resumed.initial_lr == 1e-3 and resumed.num_epochs == 300 and resumed.active_terms == ("ce", "cldice")
    _epoch(resumed, 0.7)
    assert resumed.logger.get_value("lrs", 3) == pytest.approx(trained.optimizer.param_groups[0]["lr"])
    assert resumed.lr_scheduler.plateau.num_bad_epochs == 0  # 0.7 beat the saved best 0.8
    assert resumed.lr_scheduler.plateau.best == pytest.approx(0.7)
    text = log_text(fold_dir(tmp_path))
    assert "nnUNet_topo_config is unset: continuing with the configuration saved in" in text
    assert "checkpoint_latest.pth" in text


def test_changed_file_stops_with_every_change(tmp_path, monkeypatch, trained) -> None:
    before = (fold_dir(tmp_path) / "topo_config.json").read_text()
    changed = {**ORIGINAL, "num_epochs": 1000, "initial_lr": 0.01, "warmup_epochs": 10}
    with pytest.raises(TopoConfigError) as info:
        make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, changed, resume=True)
    message = str(info.value)
    assert "--c would change the configuration this run was trained with: initial_lr: 0.001 -> 0.01; " in message
    assert "warmup_epochs: 0 -> 10." in message
    assert (fold_dir(tmp_path) / "topo_config.json").read_text() == before  # the record is kept


def test_default_file_without_the_run_keys_changes_nothing(tmp_path, monkeypatch, trained) -> None:
    # a job script's generic file that sets only the budget: the saved terms, LR and warmup stay
    resumed = _resume(tmp_path, monkeypatch, {"num_iterations_per_epoch": 250})
    assert resumed.topo_config == trained.topo_config


def test_identical_file_and_raised_epochs(tmp_path, monkeypatch, trained) -> None:
    same = _resume(tmp_path, monkeypatch, ORIGINAL)
    assert same.topo_config == trained.topo_config and len(same.config_history) == 1

    longer = _resume(tmp_path, monkeypatch, {**ORIGINAL, "num_epochs": 400})
    assert longer.num_epochs == 400 and longer.initial_lr == 1e-3
    assert "Extending the run: num_epochs 300 -> 400 at epoch 3; the LR continues at 0.001" in (
        log_text(fold_dir(tmp_path))
    )
    longer.save_topo_config()
    saved = json.loads((fold_dir(tmp_path) / "topo_config.json").read_text())
    assert [h["epoch"] for h in saved["history"]] == [0, 3]
    assert saved["history"][1]["changes"] == {"num_epochs": [300, 400]}
    assert saved["history"][0]["config"]["num_epochs"] == 300 and saved["config"]["num_epochs"] == 400
    # the history travels in the checkpoint too
    longer.save_checkpoint(str(tmp_path / "c.pth"))
    state = torch.load(tmp_path / "c.pth", map_location="cpu", weights_only=False)["topo_state"]
    assert [h["epoch"] for h in state["config_history"]] == [0, 3]


def test_allowed_change_and_a_dropped_term_keep_one_value_per_epoch(tmp_path, monkeypatch, trained) -> None:
    changed = {**ORIGINAL, "loss_weights": {"ce": 1.0}, "allow_config_change": True}
    resumed = _resume(tmp_path, monkeypatch, changed)
    assert resumed.active_terms == ("ce",)
    assert "WARNING (configuration): configuration changed on resume (allow_config_change: true): loss_weights:" in (
        log_text(fold_dir(tmp_path))
    )
    _epoch(resumed, 0.7)
    store = resumed.logger.local_logger.my_fantastic_logging
    assert len(store["train_loss_cldice"]) == 4 and math.isnan(store["train_loss_cldice"][3])
    # nnU-Net's progress.png plots up to the shortest list: it must reach the new epoch
    assert min(len(v) for k, v in store.items() if k != "epoch_end_timestamps") == 4


def test_missing_file_at_resume_is_an_error(tmp_path, monkeypatch, trained) -> None:
    with pytest.raises(TopoConfigError, match=r"nope.yaml: no such file"):
        make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, tmp_path / "nope.yaml", resume=True)


def test_validation_only_needs_no_config_file(tmp_path, monkeypatch, trained) -> None:
    final = fold_dir(tmp_path) / "checkpoint_final.pth"
    trained.save_checkpoint(str(final))
    val = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, tmp_path / "gone.yaml")
    val.load_checkpoint(str(final))  # what --val does before perform_actual_validation
    assert val.topo_config == trained.topo_config
    assert "gone.yaml: no such file" in log_text(fold_dir(tmp_path))
    with pytest.raises(TopoConfigError, match="gone.yaml: no such file"):  # training would need the file
        val.on_train_start()
    # without a finished run the missing file fails at once
    with pytest.raises(TopoConfigError, match="gone.yaml: no such file"):
        make_trainer(tmp_path / "other", monkeypatch, nnUNetTrainerTopoWarmup, tmp_path / "gone.yaml")
