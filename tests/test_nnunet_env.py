"""The subprocess environment of the nnUNetv2_* console scripts (shared by the demo and the benchmarks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnunetv2_topo.nnunet_env import TOPO_CONFIG_ENV_VAR, nnunet_env, trainer_folder


def test_folders_trainers_and_workers(tmp_path: Path) -> None:
    base = {"PATH": "/bin", "nnUNet_results": "/elsewhere", "nnUNet_topo_config": "/a/user.yaml"}
    env = nnunet_env(tmp_path, data_workers=3, processes=4, base=base)
    assert env == {
        "PATH": "/bin",  # everything else of the caller's environment is kept
        "nnUNet_raw": str(tmp_path / "nnUNet_raw"),
        "nnUNet_preprocessed": str(tmp_path / "nnUNet_preprocessed"),
        "nnUNet_results": str(tmp_path / "nnUNet_results"),
        "nnUNet_extTrainer": str(trainer_folder()),
        "nnUNet_compile": "false",
        "nnUNet_n_proc_DA": "3",
        "nnUNet_def_n_proc": "4",
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONUNBUFFERED": "1",
    }  # the caller's own nnUNet_* variables (a config file, another results folder) never leak in
    assert not any(p.exists() for p in tmp_path.iterdir())  # nothing created
    with_config = nnunet_env(tmp_path, 0, 1, topo_config=tmp_path / "c.yaml", base={})
    assert with_config["nnUNet_topo_config"] == str(tmp_path / "c.yaml")


@pytest.mark.parametrize(("workers", "processes"), [(-1, 1), (0, 0)])
def test_bad_worker_counts(tmp_path: Path, workers: int, processes: int) -> None:
    with pytest.raises(ValueError, match="need data_workers >= 0 and processes >= 1"):
        nnunet_env(tmp_path, workers, processes, base={})


def test_cli_error_lives_below_every_layer() -> None:
    import subprocess
    import sys

    import nnunetv2_topo.cli.main as cli_main

    assert not hasattr(cli_main, "CLIError")  # one home, nnunetv2_topo.errors (no second import path)
    # the discovery layer (and the environment builder above it) load without the CLI package
    code = "import sys, nnunetv2_topo.nnunet_env; print(any(m.startswith('nnunetv2_topo.cli') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_one_name_for_the_trainer_configuration_variable() -> None:
    """The trainers read the variable that :func:`nnunet_env` sets (trainers/config.py should import the constant;
    until it does, the two spellings are held equal here)."""
    from nnunetv2_topo.trainers.config import CONFIG_ENV_VAR

    assert CONFIG_ENV_VAR == TOPO_CONFIG_ENV_VAR == "nnUNet_topo_config"


def test_trainer_discovery_reexports_the_folder() -> None:
    import nnunetv2_topo.trainer_discovery as shim

    assert shim.trainer_folder() == trainer_folder() and shim.trainer_folder().name == "ext"
    assert (trainer_folder() / "nnunetv2_topo_trainers.py").is_file()


def test_one_list_of_checkpoint_names() -> None:
    """The trainers' resume order is nnU-Net's checkpoint list (trainers/run_config.py should import CHECKPOINTS;
    until it does, the two are held equal here)."""
    from nnunetv2_topo.nnunet_env import CHECKPOINTS, FINAL_CHECKPOINT
    from nnunetv2_topo.trainers.run_config import RESUME_CHECKPOINTS

    assert RESUME_CHECKPOINTS == CHECKPOINTS and CHECKPOINTS[0] == FINAL_CHECKPOINT == "checkpoint_final.pth"
