"""nnU-Net finds every TopoWarmup trainer by name through nnUNet_extTrainer, and gets the package's own class."""

from __future__ import annotations

import configparser
import fnmatch
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

import nnunetv2_topo
import nnunetv2_topo.trainers as trainers
from nnunetv2_topo.trainer_discovery import (
    ExtTrainerNotConfiguredError,
    ext_trainer_configured,
    ext_trainer_env,
    require_ext_trainer,
    trainer_folder,
)

REPO = Path(__file__).resolve().parents[1]
EXPECTED_NAMES = {
    "nnUNetTrainerTopoWarmup",
    "nnUNetTrainer_TopoBudget",
    "nnUNetTrainerTopoWarmup_DiceFocal",
    "nnUNetTrainerTopoWarmup_SkelRecall",
    "nnUNetTrainerTopoWarmup_clDice",
    "nnUNetTrainerTopoWarmup_AdamW",
} | {f"nnUNetTrainerTopoWarmup_{n}epochs" for n in (5, 50, 100, 250, 500, 2000, 4000)}


def test_folder_is_dedicated_and_thin() -> None:
    folder = trainer_folder()
    assert folder.is_absolute() and folder.is_dir()
    assert not (folder / "__init__.py").exists()
    assert sorted(p.name for p in folder.glob("*.py")) == ["nnunetv2_topo_trainers.py"]
    assert "class " not in (folder / "nnunetv2_topo_trainers.py").read_text()


def test_all_variants_exported() -> None:
    assert set(trainers.__all__) == EXPECTED_NAMES
    for n in (5, 50, 100, 250, 500, 2000, 4000):
        cls = getattr(trainers, f"nnUNetTrainerTopoWarmup_{n}epochs")
        assert cls.merged_topo_defaults() == {"num_epochs": n}
        assert cls.__qualname__ == cls.__name__ == f"nnUNetTrainerTopoWarmup_{n}epochs"
        assert issubclass(cls, trainers.nnUNetTrainerTopoWarmup)


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_nnunet_resolves_the_package_class(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("nnUNet_extTrainer", str(trainer_folder()))
    cls = recursive_find_trainer_class_by_name(name)
    assert cls is getattr(trainers, name)
    assert cls.__module__.startswith("nnunetv2_topo.trainers")
    assert issubclass(cls, nnUNetTrainer)
    assert pickle.loads(pickle.dumps(cls)) is cls
    assert "nnunetv2_topo_trainers" not in sys.modules  # nnU-Net cleaned up its top-level import


def test_nnunet_without_the_variable_cannot_find_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    with pytest.raises(RuntimeError, match="Could not find requested nnunet trainer nnUNetTrainerTopoWarmup"):
        recursive_find_trainer_class_by_name("nnUNetTrainerTopoWarmup")


def test_configured_detection(tmp_path: Path) -> None:
    folder = str(trainer_folder())
    assert not ext_trainer_configured({})
    assert not ext_trainer_configured({"nnUNet_extTrainer": str(tmp_path)})
    assert ext_trainer_configured({"nnUNet_extTrainer": folder})
    assert ext_trainer_configured({"nnUNet_extTrainer": folder + os.sep})
    assert ext_trainer_configured({"nnUNet_extTrainer": os.pathsep.join([str(tmp_path), folder])})
    link = tmp_path / "link"
    link.symlink_to(folder)
    assert ext_trainer_configured({"nnUNet_extTrainer": str(link)})


def test_require_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ExtTrainerNotConfiguredError) as info:
        require_ext_trainer({})
    assert "nnUNet_extTrainer is not set" in str(info.value)
    assert "export nnUNet_extTrainer=$(nnunetv2_topo trainer-path)" in str(info.value)
    with pytest.raises(ExtTrainerNotConfiguredError, match=f"is '{tmp_path}', which does not list it"):
        require_ext_trainer({"nnUNet_extTrainer": str(tmp_path)})
    require_ext_trainer({"nnUNet_extTrainer": str(trainer_folder())})


def test_env_for_subprocesses_keeps_other_folders(tmp_path: Path) -> None:
    env = ext_trainer_env({"nnUNet_extTrainer": str(tmp_path), "X": "1"})
    assert env["X"] == "1"
    assert env["nnUNet_extTrainer"].split(os.pathsep) == [str(tmp_path), str(trainer_folder())]
    assert ext_trainer_env(env) == env  # already listed: unchanged


def test_trainer_path_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    exe = REPO / ".venv" / "bin" / "nnunetv2_topo"
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    out = subprocess.run([exe, "trainer-path"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(trainer_folder())
    check = subprocess.run([exe, "trainer-path", "--check"], env=env, capture_output=True, text=True)
    assert check.returncode == 1
    env["nnUNet_extTrainer"] = out.stdout.strip()
    assert subprocess.run([exe, "trainer-path", "--check"], env=env, capture_output=True).returncode == 0


def test_thin_module_is_shipped_as_package_data() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    globs = [g.strip() for g in cfg["options.package_data"]["nnunetv2_topo"].split(",")]
    package = Path(nnunetv2_topo.__file__).parent
    for module in trainer_folder().glob("*.py"):
        rel = module.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not matched by package_data {globs}"
