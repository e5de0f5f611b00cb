"""``nnunetv2_topo schedule`` and the schedule it replays: nnU-Net log parsing (lines written by nnU-Net's own
``print_to_log_file``), the JSON contract, bad inputs, the final anneal / early stop, the defaults against the
targets on held-out simulated logs, and every registered variant starting from its own defaults."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

import nnunetv2_topo.trainers as trainers
from nnunetv2_topo.cli.main import main
from nnunetv2_topo.scheduling import WarmupPlateauScheduler
from nnunetv2_topo.scheduling.replay import replay
from nnunetv2_topo.scheduling.training_log import TrainingLogError, read_training_logs
from nnunetv2_topo.scheduling.warmup_plateau import anneal_factor
from nnunetv2_topo.testing.simulated_logs import HELD_OUT_FAMILIES, Family, simulate
from nnunetv2_topo.trainers.config import check_consistency, format_config, resolve_config
from nnunetv2_topo.trainers.variants import scaled_warmup


def write_nnunet_log(path: Path, val_losses: list[float], first_epoch: int = 0, extra: dict | None = None) -> Path:
    """A training log written by nnU-Net's own ``print_to_log_file`` with the values it logs per epoch."""
    fake = SimpleNamespace(local_rank=0, log_file=str(path))
    log = nnUNetTrainer.print_to_log_file
    for i, loss in enumerate(val_losses):
        epoch = first_epoch + i
        log(fake, "", also_print_to_console=False)
        log(fake, f"Epoch {epoch}", also_print_to_console=False)
        log(fake, f"Current learning rate: {np.round(0.01, decimals=5)}", also_print_to_console=False)
        log(fake, "train_loss", np.round(np.float64(-0.5), decimals=4), also_print_to_console=False)
        log(fake, "val_loss", np.round(np.float64(loss), decimals=4), also_print_to_console=False)
        dice = [np.round(np.float32(0.8), decimals=4), np.round(np.float32(0.6), decimals=4)]
        log(fake, "Pseudo dice", dice, also_print_to_console=False)
        for line in (extra or {}).get(epoch, []):
            log(fake, line, also_print_to_console=False)
        log(fake, "Epoch time: 12.34 s", also_print_to_console=False)
    return path


# ---------------------------------------------------------------------------------------------------- parsing
def test_reads_the_lines_nnunet_writes(tmp_path: Path) -> None:
    path = write_nnunet_log(tmp_path / "training_log_2026_1_1_00_00_00.txt", [0.5, -0.25, -0.123456])
    text = path.read_text()
    assert "val_loss -0.1235 \n" in text and "Pseudo dice [np.float32(0.8), np.float32(0.6)]" in text
    log = read_training_logs([path])
    assert log.val_loss == [0.5, -0.25, -0.1235]  # nnU-Net rounds to 4 decimals
    assert log.mean_fg_dice == pytest.approx([0.7, 0.7, 0.7])
    assert log.ema_fg_dice() == pytest.approx([0.7, 0.7, 0.7])


def test_a_resumed_run_reads_all_its_logs(tmp_path: Path) -> None:
    a = write_nnunet_log(tmp_path / "a.txt", [0.3, 0.2, 0.1])
    b = write_nnunet_log(tmp_path / "b.txt", [0.15, 0.05], first_epoch=2)  # --c restarted epoch 2
    assert read_training_logs([a, b]).val_loss == [0.3, 0.2, 0.15, 0.05]
    with pytest.raises(TrainingLogError, match=r"b.txt: the val_loss lines start at epoch 2, not 0 .*pass the earlier"):
        read_training_logs([b])


def test_scoring_rounds_of_a_topowarmup_log(tmp_path: Path) -> None:
    line = (
        "Competition score of epoch 1 (1 validation cases; predicted in 1.0 s in the training process, metric 2.0 s "
        "in the background, applied after epoch 2): score 0.4321, topo 0.1000, surface Dice 0.2, VOI 0.3"
    )
    path = write_nnunet_log(tmp_path / "t.txt", [0.3, 0.2, 0.1], extra={2: [line]})
    assert read_training_logs([path]).score_rounds == [(1, 2, 0.4321)]


def _write_config_block(path: Path, config: dict, name: str = "nnUNetTrainerTopoWarmup") -> None:
    """The block ``log_run_config`` prints at every start (no timestamp)."""
    fake = SimpleNamespace(local_rank=0, log_file=str(path))
    block = f"{name} configuration (set nnUNet_topo_config to override):\n" + format_config(config)
    nnUNetTrainer.print_to_log_file(fake, block, also_print_to_console=False, add_timestamp=False)


def test_each_start_prints_its_configuration_and_a_restart_replaces_what_it_repeats(tmp_path: Path) -> None:
    path = tmp_path / "training_log.txt"
    first, second, third = (resolve_config({"num_epochs": n}) for n in (10, 20, 30))
    _write_config_block(path, first)
    write_nnunet_log(path, [0.3, 0.2, 0.1, 0.05])
    _write_config_block(path, second)
    write_nnunet_log(path, [0.04, 0.03], first_epoch=4)
    _write_config_block(path, resolve_config({"num_epochs": 99}))  # a --val start: no epoch follows
    other = tmp_path / "later.txt"
    _write_config_block(other, third)  # a later start from an older checkpoint (epoch 2)
    write_nnunet_log(other, [0.2], first_epoch=2)
    log = read_training_logs([path, other])
    assert [(epoch, name, values["num_epochs"]) for epoch, name, values in log.configs] == [
        (0, "nnUNetTrainerTopoWarmup", 10),
        (2, "nnUNetTrainerTopoWarmup", 30),
    ]
    assert log.configs[0][2]["loss_weights"] == first["loss_weights"]  # JSON values read back
    assert log.val_loss == [0.3, 0.2, 0.2, 0.05, 0.04, 0.03]


def test_a_bad_configuration_in_the_log_names_the_file_and_key(tmp_path: Path, capsys) -> None:
    path = tmp_path / "training_log.txt"
    _write_config_block(path, {**resolve_config({}), "plateau_factor": 1.5})
    write_nnunet_log(path, [0.3, 0.2])
    assert _cli("--log", path) == 2
    err = capsys.readouterr().err
    assert "training_log.txt (start at epoch 0)" in err and "plateau_factor" in err


def test_a_logged_nnunet_trainer_is_refused_like_trainer(tmp_path: Path, capsys) -> None:
    path = tmp_path / "training_log.txt"
    _write_config_block(path, resolve_config({}), name="nnUNetTrainer_TopoBudget")
    write_nnunet_log(path, [0.3, 0.2])
    assert _cli("--log", path) == 2
    assert "nnUNetTrainer_TopoBudget: uses nnU-Net's poly schedule" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- the CLI
def _cli(*args: str) -> int:
    return main(["schedule", *map(str, args)])


def test_json_has_one_lr_per_epoch_and_the_cuts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    losses = [1.0 - 0.1 * e for e in range(6)] + [0.45] * 4  # improves, then flat from epoch 6
    path = write_nnunet_log(tmp_path / "log.txt", losses)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("num_epochs: 20\ninitial_lr: 0.01\nwarmup_epochs: 2\nplateau_patience: 1\nplateau_cooldown: 0\n"
                   "plateau_metric: val_loss\nplateau_final_anneal: 0.25\nplateau_early_stop: false\n")  # fmt: skip
    out = tmp_path / "lr.json"
    assert _cli("--log", path, "--topo-config", cfg, "--json", out, "--plot", tmp_path / "lr.png") == 0
    data = json.loads(out.read_text())
    assert len(data["lr"]) == 20
    # warmup 0.005, 0.01; improves up to epoch 6, then flat (held after the log ends): bad epochs 7, 8 -> cut after
    # 8, then every second epoch; the anneal (epochs 15-19) starts from the plateau's LR
    assert data["cuts"] == [8, 10, 12, 14]
    lr = [0.005, 0.01] + [0.01] * 7 + [0.005] * 2 + [0.0025] * 2 + [0.00125] * 2
    lr += [0.000625 * k / 6 for k in (5, 4, 3, 2, 1)]
    assert data["lr"] == pytest.approx(lr)
    printed = capsys.readouterr().out
    assert "epoch     8: 0.01 -> 0.005" in printed and "final anneal: epochs 15-19" in printed
    assert (tmp_path / "lr.png").stat().st_size > 5000


def test_num_epochs_and_trainer_defaults(tmp_path: Path) -> None:
    path = write_nnunet_log(tmp_path / "log.txt", [0.1] * 3)
    out = tmp_path / "lr.json"
    assert _cli("--log", path, "--trainer", "nnUNetTrainerTopoWarmup_5epochs", "--json", out) == 0
    # the 5-epoch variant's own warmup (1 epoch) and its anneal (1 epoch), at the default optimizer's LR (Muon 0.02)
    assert json.loads(out.read_text())["lr"] == pytest.approx([0.02, 0.02, 0.02, 0.02, 0.01])
    assert _cli("--log", path, "--num-epochs", 40, "--json", out, "--overwrite") == 0
    lr = json.loads(out.read_text())["lr"]
    assert len(lr) == 40 and lr[:10] == pytest.approx([0.002 * (e + 1) for e in range(10)])
    assert _cli("--log", path, "--trainer", "nnUNetTrainerTopoWarmup_SGD", "--num-epochs", 40, "--json", out,
                "--overwrite") == 0  # fmt: skip
    assert json.loads(out.read_text())["lr"][:10] == pytest.approx([0.001 * (e + 1) for e in range(10)])


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p.write_text("2026-01-01 00:00:00.0: Epoch 0 \nnothing else\n"), r"log.txt: no 'val_loss' lines"),
        (lambda p: None, r"log.txt: no such file"),
        (lambda p: p.mkdir(), r"log.txt: is a folder"),
        (lambda p: p.write_text("2026-01-01: val_loss 0.3\n"), r"log.txt, line 1: a val_loss line before any 'Epoch"),
        (lambda p: p.write_text("x: Epoch 0\nx: val_loss abc\n"), r"log.txt, line 2: val_loss 'abc' is not a number"),
        (
            lambda p: p.write_text("x: Epoch 0\nx: val_loss 0.3\nx: Epoch 2\nx: val_loss 0.2\n"),
            r"log.txt: no val_loss for epochs 1 \(pass every",
        ),  # fmt: skip
    ],
)
def test_bad_logs_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture, setup, message: str) -> None:
    path = tmp_path / "log.txt"
    setup(path)
    assert _cli("--log", path) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnunetv2_topo schedule: error: ") and "Traceback" not in err
    assert __import__("re").search(message, err), err


def test_bad_options_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    log = write_nnunet_log(tmp_path / "log.txt", [0.3, 0.2])
    bad_key, score_cfg = tmp_path / "bad.yaml", tmp_path / "score.yaml"
    bad_key.write_text("plateau_treshold: 0.01\n")
    score_cfg.write_text("plateau_metric: val_score\nscore_every_epochs: 2\n")
    cases = [
        (("--num-epochs", 0), "--num-epochs 0: must be >= 1"),
        (("--topo-config", tmp_path / "none.yaml"), "none.yaml: no such file"),
        (("--topo-config", bad_key), "unknown key 'plateau_treshold' (did you mean 'plateau_threshold'?)"),
        (("--topo-config", score_cfg), "plateau_metric is val_score but the log has no 'Competition score of epoch'"),
        (("--trainer", "nnUNetTrainerTopoWarmup_5epoch"), "did you mean nnUNetTrainerTopoWarmup_5epochs?"),
        (("--trainer", "nnUNetTrainer_TopoBudget"), "uses nnU-Net's poly schedule"),
        (("--json", log), f"--json {log} exists; add --overwrite to replace it"),
        (("--plot", tmp_path), f"--plot {tmp_path} is a folder; give a file name"),
    ]
    for extra, message in cases:
        assert _cli("--log", log, *extra) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
    assert log.read_text().count("val_loss") == 2  # the log refused as --json output is untouched


# ------------------------------------------------------------------------------------------------ the schedule
def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_anneal_factor_is_linear_and_never_zero() -> None:
    assert [anneal_factor(e, 10, 4) for e in range(10)] == pytest.approx([1] * 6 + [0.8, 0.6, 0.4, 0.2])
    assert anneal_factor(9, 10, 0) == 1.0


def test_resume_in_the_plateau_phase_restores_the_plateau_lr_not_the_annealed_one() -> None:
    kwargs = {"base_lr": 1.0, "warmup_epochs": 0, "patience": 0, "num_epochs": 4, "anneal_epochs": 1}
    first = WarmupPlateauScheduler(_optimizer(), **kwargs)
    for epoch, loss in enumerate([1.0, 2.0, 3.0, 4.0]):
        first.start_epoch(epoch)
        first.step_metric(epoch, loss)
    assert first.get_last_lr() == [0.125]  # cut after epochs 1 and 2, annealed in epoch 3 (0.25 * 1/2)
    # resumed with num_epochs 6: the optimizer comes back with the annealed LR of epoch 3
    second = WarmupPlateauScheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.125),
                                    **{**kwargs, "num_epochs": 6})  # fmt: skip
    second.load_state_dict(first.state_dict())
    assert second.start_epoch(4) == 0.25 and second.start_epoch(5) == 0.125


def test_should_stop_after_patience_epochs_at_min_lr_without_improvement() -> None:
    s = WarmupPlateauScheduler(_optimizer(), base_lr=1.0, warmup_epochs=0, patience=1, min_lr=0.5, factor=0.5)
    stops = []
    for epoch, loss in enumerate([1.0, 1.0, 1.0, 1.0, 1.0, 0.1, 1.0, 1.0, 1.0]):
        s.start_epoch(epoch)
        s.step_metric(epoch, loss)
        stops.append(s.should_stop())
    # cut to min_lr after epoch 2; at the floor without improvement: epochs 3, 4 -> stop; improvement at 5 resets
    assert stops == [False, False, False, False, True, False, False, True, True]
    restored = WarmupPlateauScheduler(_optimizer(), base_lr=1.0, warmup_epochs=0, patience=1, min_lr=0.5)
    restored.load_state_dict(s.state_dict())
    assert restored.should_stop() and restored.floor_bad_epochs == s.floor_bad_epochs


# ---------------------------------------------------------------------------------- defaults against targets
SEEDS = (200, 201, 202)  # seeds no benchmark used


def _targets(config: dict, families: tuple[Family, ...]) -> tuple[list[float], list[int]]:
    high, cuts = [], []
    for family in families:
        for seed in SEEDS:
            f = family.with_seed(seed)
            r = replay(config, simulate(f).tolist(), num_epochs=f.num_epochs)
            if f.kind == "improving":
                high.append(float(np.mean(np.asarray(r.lr) >= 0.1 * config["initial_lr"])))
                assert r.stop_epoch is None, (f, r.stop_epoch)  # never an early stop while it still improves
            else:
                cuts.append(sum(f.plateau_start <= c < f.plateau_start + 200 for c in r.cuts))
    return high, cuts


def test_the_defaults_meet_the_targets_on_held_out_simulated_logs() -> None:
    high, cuts = _targets(resolve_config(), HELD_OUT_FAMILIES)
    assert min(high) >= 0.60, high
    assert min(cuts) >= 2, cuts


def test_the_seed_recipe_misses_them() -> None:
    seed = {"plateau_metric": "val_loss", "plateau_patience": 8, "plateau_threshold": 1e-4,
            "plateau_threshold_mode": "rel", "plateau_cooldown": 0, "plateau_min_lr": 1e-6,
            "plateau_final_anneal": 0.0, "plateau_early_stop": False}  # fmt: skip
    high, _ = _targets(resolve_config(seed), tuple(f for f in HELD_OUT_FAMILIES if f.kind == "improving"))
    assert max(high) < 0.35, high  # the LR collapses on noise


# -------------------------------------------------------------------------------------------------- variants
def test_every_registered_variant_starts_from_its_own_defaults() -> None:
    topo = trainers.nnUNetTrainerTopoWarmup
    names = [n for n in trainers.__all__ if issubclass(getattr(trainers, n), topo)]
    assert len(names) >= 12
    for name in names:
        cls = getattr(trainers, name)
        config = resolve_config(None, cls.merged_topo_defaults(), variant_name=name, fixed_keys=cls.topo_fixed_keys)
        assert isinstance(check_consistency(config, name), list), name  # raises if it could not start
        assert config["plateau_min_lr"] < config["initial_lr"] and config["warmup_epochs"] < config["num_epochs"]
    five = resolve_config(None, trainers.nnUNetTrainerTopoWarmup_5epochs.merged_topo_defaults())
    assert (five["num_epochs"], five["warmup_epochs"]) == (5, 1)


def test_scaled_warmup_rule() -> None:
    assert [scaled_warmup(n) for n in (1, 5, 19, 20, 50, 99, 100, 1000, 4000)] == [1, 1, 1, 2, 5, 9, 10, 10, 10]
    assert math.isclose(0.1, scaled_warmup(50) / 50)


def test_early_stop_mixin_ends_the_loop_as_a_finished_run() -> None:
    from nnunetv2_topo.trainers.early_stop import EarlyStopMixin

    class Loop:  # the shape of nnU-Net's run_training
        def __init__(self) -> None:
            self.current_epoch, self.started, self.ended, self.lines = 0, [], 0, []

        def print_to_log_file(self, line: str, also_print_to_console: bool = False) -> None:
            self.lines.append(line)

        def on_epoch_start(self) -> None:
            self.started.append(self.current_epoch)

        def run_training(self) -> None:
            for _ in range(self.current_epoch, 10):
                self.on_epoch_start()
                self.current_epoch += 1  # (train, validate, on_epoch_end)
            self.on_train_end()

        def on_train_end(self) -> None:
            self.ended += 1

    class Driver:
        def __init__(self, trainer: Loop) -> None:
            self.trainer = trainer

        def should_stop(self) -> bool:
            return self.trainer.current_epoch >= 3  # true after the validation of epoch 2

        def stop_message(self, epoch: int) -> str:
            return f"Early stop after epoch {epoch}"

    class Trainer(EarlyStopMixin, Loop):
        pass

    t = Trainer()
    t.plateau_driver = Driver(t)
    t.run_training()
    assert t.started == [0, 1, 2] and t.ended == 1 and t.lines == ["Early stop after epoch 2"]


def test_log_takes_several_files_as_a_shell_glob_gives_them(tmp_path: Path) -> None:
    a = write_nnunet_log(tmp_path / "training_log_1.txt", [0.3, 0.2, 0.1])
    b = write_nnunet_log(tmp_path / "training_log_2.txt", [0.15, 0.05], first_epoch=2)
    out = tmp_path / "lr.json"
    assert _cli("--log", a, b, "--num-epochs", 12, "--json", out) == 0
    assert len(json.loads(out.read_text())["lr"]) == 12
