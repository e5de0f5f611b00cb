"""TopoWarmup configuration: defaults, precedence, YAML parsing and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trainer_fixtures import make_trainer

from nnunetv2_topo.scheduling.replay import replay
from nnunetv2_topo.trainers import config as C
from nnunetv2_topo.trainers import config_file as CF
from nnunetv2_topo.trainers import nnUNetTrainerTopoWarmup
from nnunetv2_topo.trainers.variants import (
    nnUNetTrainerTopoWarmup_5epochs,
    nnUNetTrainerTopoWarmup_250epochs,
    nnUNetTrainerTopoWarmup_AdamW,
    nnUNetTrainerTopoWarmup_DiceFocal,
    nnUNetTrainerTopoWarmup_FiveTerm,
    nnUNetTrainerTopoWarmup_Muon,
    nnUNetTrainerTopoWarmup_SGD,
    nnUNetTrainerTopoWarmup_SkelRecall,
)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def test_defaults_are_the_issue_values() -> None:
    cfg = C.resolve_config()
    # the optimizer chosen by benchmarks/variants.py (Muon ahead of SGD: results/trainers-phased-betti-muon.md)
    optimizer = (cfg["optimizer"], cfg["initial_lr"], cfg["muon_other"], cfg["muon_other_lr"])
    assert optimizer == ("muon", 2e-2, "adamw", None)
    assert cfg["weight_decay"] == 3e-5 and cfg["muon_weight_decay"] == 0.1
    assert cfg["warmup_epochs"] == 10 and cfg["plateau_metric"] == "val_loss_ema"
    # the schedule chosen on simulated logs (benchmarks/schedule_replay.py, docs/explanation/lr-schedule.md)
    assert (cfg["plateau_factor"], cfg["plateau_patience"], cfg["plateau_min_lr"]) == (0.5, 20, pytest.approx(2e-5))
    assert (cfg["plateau_ema_smoothing"], cfg["plateau_threshold"], cfg["plateau_threshold_mode"]) == (
        0.95,
        1e-3,
        "abs",
    )
    assert (cfg["plateau_cooldown"], cfg["plateau_final_anneal"]) == (10, 0.2)
    assert cfg["grad_clip_norm"] == 2.0 and cfg["grad_norm_log_every"] == 50 and cfg["max_consecutive_skips"] == 20
    assert cfg["loss_weights"] == C.DEFAULT_LOSS_WEIGHTS == {"ce": 1.0, "dice": 1.0, "cldice": 0.5}
    five_terms = {"dice": 0.3, "focal": 0.4, "boundary": 0.15, "cldice": 0.10, "dilated_mse": 0.05}
    assert nnUNetTrainerTopoWarmup_FiveTerm.merged_topo_defaults() == {"loss_weights": five_terms}


def test_variant_defaults_merge_along_the_class_hierarchy() -> None:
    assert nnUNetTrainerTopoWarmup.merged_topo_defaults() == {}
    assert nnUNetTrainerTopoWarmup_250epochs.merged_topo_defaults() == {"num_epochs": 250, "warmup_epochs": 10}
    assert nnUNetTrainerTopoWarmup_AdamW.merged_topo_defaults() == {"optimizer": "adamw", "weight_decay": 1e-5}
    cfg = C.resolve_config(None, nnUNetTrainerTopoWarmup_AdamW.merged_topo_defaults())
    assert (cfg["initial_lr"], cfg["plateau_min_lr"]) == (1e-4, pytest.approx(1e-7))
    cfg = C.resolve_config(None, nnUNetTrainerTopoWarmup_SGD.merged_topo_defaults())
    assert (cfg["optimizer"], cfg["initial_lr"], cfg["plateau_min_lr"]) == ("sgd", 1e-2, pytest.approx(1e-5))
    assert C.resolve_config(None, nnUNetTrainerTopoWarmup_Muon.merged_topo_defaults()) == C.resolve_config()
    cfg = C.resolve_config(None, nnUNetTrainerTopoWarmup_SkelRecall.merged_topo_defaults())
    assert cfg["loss_weights"] == {"ce": 1.0, "dice": 1.0, "skeleton_recall": 1.0}
    cfg = C.resolve_config(None, nnUNetTrainerTopoWarmup_DiceFocal.merged_topo_defaults())
    assert cfg["loss_weights"] == {"dice": 0.5, "focal": 0.5}


def test_epoch_variant_uses_its_epoch_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``_5epochs`` trainer as nnUNetv2_train builds it: nnU-Net's loop runs ``num_epochs`` = 5, and its
    schedule (warmup 3, then the plateau's LR, the anneal over the last epoch) is what the replay of its
    configuration gives (the replay equals a real run: test_schedule_e2e.py)."""
    config = {"num_iterations_per_epoch": 1, "num_val_iterations_per_epoch": 1, "warmup_epochs": 3}
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup_5epochs, config)
    assert trainer.num_epochs == 5 and trainer.topo_config["num_epochs"] == 5
    lrs = replay(trainer.topo_config, [1.0] * 5).lr
    assert lrs == pytest.approx([2e-2 / 3, 4e-2 / 3, 2e-2, 2e-2, 2e-2 / 2])


def test_yaml_overrides_variant_and_replaces_loss_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(
        tmp_path,
        "num_epochs: 7\ninitial_lr: 1e-3\nloss_weights: {ce: 1, dice: 1, cldice: 0}\nboundary_band: [2, 4]\n",
    )
    monkeypatch.setenv(C.CONFIG_ENV_VAR, str(path))
    cfg, source = CF.config_from_environment({"num_epochs": 250, "optimizer": "adamw"})
    assert source == str(path)
    assert cfg["num_epochs"] == 7  # YAML beats the variant
    assert cfg["optimizer"] == "adamw"  # the variant beats the default
    assert cfg["initial_lr"] == pytest.approx(1e-3)  # YAML 1.1 reads 1e-3 as a string: accepted as a number
    assert cfg["loss_weights"] == {"ce": 1.0, "dice": 1.0}  # replaced as a whole, zero weights dropped
    assert cfg["boundary_band"] == (2.0, 4.0)


def test_old_term_name_connectivity_still_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A configuration file written before the rename (``connectivity`` -> ``dilated_mse``) gives the same run, with a
    FutureWarning naming the new key; a resumed run whose checkpoint saved the old name continues unchanged."""
    path = _write(
        tmp_path,
        "loss_weights: {dice: 0.3, focal: 0.4, connectivity: 0.05}\nloss_schedule: {connectivity: {start: 3}}\n",
    )
    monkeypatch.setenv(C.CONFIG_ENV_VAR, str(path))
    with pytest.warns(FutureWarning, match="'connectivity' is now called 'dilated_mse'"):
        cfg, _ = CF.config_from_environment()
    assert cfg["loss_weights"] == {"dice": 0.3, "focal": 0.4, "dilated_mse": 0.05}
    assert cfg["loss_schedule"] == {"dilated_mse": {"start": 3, "ramp": 1}}
    with pytest.warns(FutureWarning):
        saved = C.resolve_config({"loss_weights": {"dice": 1, "connectivity": 0.05}})
    assert CF.resume_config(saved, {"loss_weights": {"dice": 1, "dilated_mse": 0.05}}, "f.yaml")[1] == {}
    with pytest.raises(C.TopoConfigError, match="'dilated_mse' twice"):
        C.resolve_config({"loss_weights": {"dilated_mse": 1, "connectivity": 1}})


def test_empty_yaml_and_unset_variable_give_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(C.CONFIG_ENV_VAR, raising=False)
    assert CF.config_from_environment() == (C.resolve_config(), None)
    monkeypatch.setenv(C.CONFIG_ENV_VAR, str(_write(tmp_path, "")))
    assert CF.config_from_environment()[0] == C.resolve_config()


@pytest.mark.parametrize(
    ("yaml_text", "match"),
    [
        ("lr: 0.01\n", r"unknown key 'lr'"),
        ("inital_lr: 0.01\n", r"did you mean 'initial_lr'"),
        ("num_epochs: ten\n", r"'num_epochs' = 'ten' is invalid: must be an integer"),
        ("num_epochs: 2.5\n", r"'num_epochs' = 2.5 is invalid: must be an integer"),
        ("num_epochs: 0\n", r"'num_epochs' = 0 is invalid: must be >= 1"),
        ("initial_lr: true\n", r"'initial_lr' = True is invalid: must be a number, not a boolean"),
        ("initial_lr: -0.1\n", r"'initial_lr' = -0.1 is invalid: must be > 0"),
        ("initial_lr: .nan\n", r"must be finite"),
        ("weight_decay: -1e-5\n", r"'weight_decay' = '-1e-5' is invalid: must be >= 0"),
        ("warmup_epochs: -1\n", r"'warmup_epochs' = -1 is invalid: must be >= 0"),
        ("optimizer: adam\n", r"'optimizer' = 'adam' is invalid: must be one of sgd, adamw"),
        ("plateau_metric: dice\n", r"must be one of val_loss, val_loss_ema, ema_fg_dice"),
        ("plateau_ema_smoothing: 1.0\n", r"'plateau_ema_smoothing' = 1.0 is invalid: must lie in \[0, 1\)"),
        ("plateau_cooldown: -1\n", r"'plateau_cooldown' = -1 is invalid: must be >= 0"),
        ("ema_decay: 1\n", r"'ema_decay' = 1 is invalid: must lie in \[0, 1\)"),
        ("ema_decay: -0.5\n", r"must lie in \[0, 1\)"),
        ("seed: -3\n", r"'seed' = -3 is invalid: must be >= 0"),
        ("seed: 1.5\n", r"'seed' = 1.5 is invalid: must be an integer"),
        ("final_score_workers: 0\n", r"'final_score_workers' = 0 is invalid: must be >= 1"),
        ("allow_config_change: yes please\n", r"'allow_config_change' = 'yes please' is invalid: must be true or"),
        ("num_epochs: 5\nnum_epochs: 7\n", r"key 'num_epochs' is given twice \(lines 1 and 2\); keep one"),
        ("plateau_factor: 0\n", r"'plateau_factor' = 0 is invalid: must lie in \(0, 1\)"),
        ("plateau_factor: 1\n", r"'plateau_factor' = 1 is invalid: must lie in \(0, 1\)"),
        ("plateau_factor: 1.5\n", r"must lie in \(0, 1\)"),
        ("plateau_patience: -2\n", r"'plateau_patience' = -2 is invalid: must be >= 0"),
        ("plateau_min_lr: -1.0\n", r"'plateau_min_lr' = -1.0 is invalid: must be >= 0"),
        ("grad_clip_norm: 0\n", r"'grad_clip_norm' = 0 is invalid: must be > 0"),
        ("grad_norm_log_every: 0\n", r"must be >= 1"),
        ("max_consecutive_skips: 0\n", r"must be >= 1"),
        ("loss_weights: {dice: -0.5, ce: 1}\n", r"weight of loss term 'dice' = -0.5 is invalid: must be >= 0"),
        ("loss_weights: {dice: 0, ce: 0}\n", r"all loss weights are 0"),
        ("loss_weights: {}\n", r"all loss weights are 0"),
        ("loss_weights: {dice: 1, tversky: 1}\n", r"unknown loss term\(s\) \['tversky'\]"),
        ("loss_weights: {dice: lots}\n", r"weight of loss term 'dice' = 'lots' is invalid: must be a number"),
        ("loss_weights: [dice, ce]\n", r"must be a mapping term -> weight"),
        ("focal_alpha: 1.5\n", r"'focal_alpha' = 1.5 is invalid: must lie in \[0, 1\]"),
        ("focal_gamma: -1.0\n", r"must be >= 0"),
        ("cldice_iterations: 0\n", r"must be >= 1"),
        ("skeleton_tube: 1.5\n", r"must be an integer"),
        ("boundary_band: [5, 3]\n", r"must satisfy 0 <= inner < outer"),
        ("boundary_band: 3\n", r"must be a pair"),
    ],
)
def test_bad_values_fail_with_key_value_and_valid_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yaml_text: str, match: str
) -> None:
    path = _write(tmp_path, yaml_text)
    monkeypatch.setenv(C.CONFIG_ENV_VAR, str(path))
    with pytest.raises(C.TopoConfigError, match=match) as info:
        CF.config_from_environment()
    message = str(info.value)
    assert str(path) in message
    assert "Valid keys: initial_lr, weight_decay, num_epochs" in message
    assert all(k in message for k in C.all_keys())


def test_null_turns_optional_keys_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        C.CONFIG_ENV_VAR, str(_write(tmp_path, "seed: null\nfinal_score_workers: 2\nema_decay: 0.999\n"))
    )
    cfg = CF.config_from_environment()[0]
    assert (cfg["seed"], cfg["final_score_workers"], cfg["ema_decay"]) == (None, 2, 0.999)
    monkeypatch.setenv(C.CONFIG_ENV_VAR, str(_write(tmp_path, "ema_decay: null\n")))
    with pytest.raises(C.TopoConfigError, match=r"'ema_decay' = None is invalid"):
        CF.config_from_environment()


@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 1e-2), ("adamw", 1e-4), ("muon", 2e-2)])
def test_null_lrs_follow_the_optimizer(optimizer: str, lr: float) -> None:
    """``initial_lr: null`` (the default) is the optimizer's own LR and ``plateau_min_lr: null`` 0.1 % of it, so a file
    that only switches the optimizer does not run SGD at Muon's LR; a value given wins."""
    for overrides in ({"optimizer": optimizer}, {"optimizer": optimizer, "initial_lr": None, "plateau_min_lr": None}):
        cfg = C.resolve_config(overrides)
        assert (cfg["initial_lr"], cfg["plateau_min_lr"]) == (lr, pytest.approx(lr / 1000))
    cfg = C.resolve_config({"optimizer": optimizer, "initial_lr": 3e-3})
    assert (cfg["initial_lr"], cfg["plateau_min_lr"]) == (3e-3, pytest.approx(3e-6))
    assert C.resolve_config({"optimizer": optimizer, "plateau_min_lr": 0.0})["plateau_min_lr"] == 0.0


def test_empty_variable_is_an_error_not_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("", "  "):
        monkeypatch.setenv(C.CONFIG_ENV_VAR, value)
        with pytest.raises(C.TopoConfigError, match=r"nnUNet_topo_config is set but empty.*unset nnUNet_topo_config"):
            CF.config_from_environment()


def test_epoch_variant_refuses_another_epoch_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cls = nnUNetTrainerTopoWarmup_250epochs
    kwargs = {"variant_name": "nnUNetTrainerTopoWarmup_250epochs.topo_defaults", "fixed_keys": cls.topo_fixed_keys}
    monkeypatch.setenv(C.CONFIG_ENV_VAR, str(_write(tmp_path, "num_epochs: 1000\n")))
    with pytest.raises(C.TopoConfigError) as info:
        CF.config_from_environment(cls.merged_topo_defaults(), **kwargs)
    assert "'num_epochs' = 1000 contradicts the trainer: nnUNetTrainerTopoWarmup_250epochs has num_epochs = 250" in (
        str(info.value)
    )
    assert "train nnUNetTrainerTopoWarmup with num_epochs: 1000" in str(info.value)
    # repeating the promised value is fine, and so is a file without the key
    monkeypatch.setenv(C.CONFIG_ENV_VAR, str(_write(tmp_path, "num_epochs: 250\ninitial_lr: 0.001\n")))
    assert CF.config_from_environment(cls.merged_topo_defaults(), **kwargs)[0]["num_epochs"] == 250


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"plateau_min_lr": 0.02}, r"plateau_min_lr = 0.02 is not below initial_lr = 0.02, so the plateau"),
        ({"plateau_min_lr": 0.1, "initial_lr": 0.05}, r"plateau_min_lr = 0.1 is not below initial_lr = 0.05"),
        ({"warmup_epochs": 12, "num_epochs": 10}, r"warmup_epochs = 12 > num_epochs = 10: the LR would never reach"),
    ],
)
def test_inconsistent_keys_are_errors(overrides: dict, match: str) -> None:
    with pytest.raises(C.TopoConfigError, match=match):
        C.check_consistency(C.resolve_config(overrides), "f.yaml")


def test_settings_without_effect_are_warnings() -> None:
    cfg = C.resolve_config(
        {"warmup_epochs": 5, "num_epochs": 5, "loss_weights": {"ce": 1, "dice": 1}, "focal_alpha": 0.3}
    )
    warnings = C.check_consistency(cfg, "f.yaml")
    assert warnings[0] == (
        "warmup_epochs = num_epochs = 5: training ends with the warmup, the plateau scheduler never acts"
    )
    assert warnings[1].startswith("focal_alpha = 0.3 has no effect: the 'focal' term has weight 0")
    assert len(warnings) == 2
    assert C.check_consistency(C.resolve_config(), "f.yaml") == []


SAVED = C.resolve_config({"loss_weights": {"ce": 1, "cldice": 1}, "num_epochs": 300, "initial_lr": 1e-3,
                          "warmup_epochs": 0})  # fmt: skip


def test_resume_without_a_file_continues_the_saved_configuration() -> None:
    cfg, changes, notes, warnings = CF.resume_config(SAVED, None, None)
    assert cfg == SAVED and changes == {} and notes == [] and warnings == []


def test_resume_compares_only_the_keys_the_file_sets() -> None:
    # a default that differs from the saved value (initial_lr) is no change when the file does not set it
    cfg, changes, notes, _ = CF.resume_config(SAVED, {"num_epochs": 500, "warmup_epochs": 0}, "f.yaml")
    assert changes == {"num_epochs": (300, 500)}
    assert notes == []  # the extension is logged once, by the plateau driver (the LR, the anneal)
    assert cfg["initial_lr"] == 1e-3 and cfg["loss_weights"] == {"ce": 1.0, "cldice": 1.0} and cfg["num_epochs"] == 500


def test_resume_refuses_changes_and_lists_each() -> None:
    file = {"num_epochs": 1000, "initial_lr": 0.01, "warmup_epochs": 10, "loss_weights": {"ce": 1, "cldice": 1}}
    with pytest.raises(C.TopoConfigError) as info:
        CF.resume_config(SAVED, file, "job.yaml")
    message = str(info.value)
    assert message.startswith("job.yaml: --c would change the configuration this run was trained with: ")
    assert "initial_lr: 0.001 -> 0.01; warmup_epochs: 0 -> 10." in message
    assert "loss_weights:" not in message and "num_epochs:" not in message  # unchanged / allowed
    assert "allow_config_change: true" in message
    # lowering num_epochs is a change like any other
    with pytest.raises(C.TopoConfigError, match=r"num_epochs: 300 -> 200"):
        CF.resume_config(SAVED, {"num_epochs": 200}, "job.yaml")


def test_resume_with_permission_warns() -> None:
    cfg, changes, _, warnings = CF.resume_config(SAVED, {"initial_lr": 0.002, "allow_config_change": True}, "job.yaml")
    assert cfg["initial_lr"] == 0.002 and changes == {"initial_lr": (1e-3, 0.002)}
    assert warnings == ["configuration changed on resume (allow_config_change: true): initial_lr: 0.001 -> 0.002"]
    assert "allow_config_change" not in cfg


@pytest.mark.parametrize(
    ("yaml_text", "match"),
    [
        ("- 1\n- 2\n", r"the top level must be a mapping"),
        ("num_epochs: [1\n", r"not valid YAML"),
    ],
)
def test_bad_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yaml_text: str, match: str) -> None:
    monkeypatch.setenv(C.CONFIG_ENV_VAR, str(_write(tmp_path, yaml_text)))
    with pytest.raises(C.TopoConfigError, match=match):
        CF.config_from_environment()


def test_missing_file_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.yaml"
    monkeypatch.setenv(C.CONFIG_ENV_VAR, str(missing))
    with pytest.raises(C.TopoConfigError, match=rf"nnUNet_topo_config={missing}: no such file"):
        CF.config_from_environment()


def test_bad_variant_defaults_name_the_variant() -> None:
    with pytest.raises(C.TopoConfigError, match=r"MyVariant.topo_defaults: unknown key 'epochs'"):
        C.resolve_config(None, {"epochs": 3}, variant_name="MyVariant.topo_defaults")


def test_save_and_format_config(tmp_path: Path) -> None:
    cfg = C.resolve_config({"boundary_band": [1, 2]})
    out = tmp_path / "fold_0" / "topo_config.json"
    CF.save_config(cfg, out, extra={"trainer": "X"})
    saved = json.loads(out.read_text())
    assert saved["trainer"] == "X"
    assert saved["config"]["boundary_band"] == [1.0, 2.0]
    assert saved["config"]["loss_weights"] == C.DEFAULT_LOSS_WEIGHTS
    assert not list(out.parent.glob("*.tmp"))
    text = C.format_config(cfg)
    assert text.count("\n") == len(C.all_keys()) - 1
    assert "plateau_factor" in text and "0.5" in text
