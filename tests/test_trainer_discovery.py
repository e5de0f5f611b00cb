"""nnU-Net finds every TopoWarmup trainer by name through nnUNet_extTrainer, and gets the package's own class."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

import nnunetv2_topo.trainers as trainers
from nnunetv2_topo.nnunet_env import ext_trainer_configured, ext_trainer_env, trainer_folder

REPO = Path(__file__).resolve().parents[1]
EXPECTED_NAMES = {
    "nnUNetTrainerTopoWarmup",
    "nnUNetTrainer_TopoBudget",
    "nnUNetTrainerTopoWarmup_DiceFocal",
    "nnUNetTrainerTopoWarmup_FiveTerm",
    "nnUNetTrainerTopoWarmup_SkelRecall",
    "nnUNetTrainerTopoWarmup_clDice",
    "nnUNetTrainerTopoWarmup_AdamW",
    "nnUNetTrainerTopoWarmup_BettiMatching",
    "nnUNetTrainerTopoWarmup_Muon",
    "nnUNetTrainerTopoWarmup_Phased",
    "nnUNetTrainerTopoWarmup_SGD",
} | {f"nnUNetTrainerTopoWarmup_{n}epochs" for n in (5, 50, 100, 250, 500, 2000, 4000)}


def test_folder_is_dedicated_and_thin() -> None:
    import pkgutil

    folder = trainer_folder()
    assert folder.is_absolute() and folder.is_dir()
    assert sorted(p.name for p in folder.glob("*.py")) == ["__init__.py", "nnunetv2_topo_trainers.py"]
    assert "class " not in (folder / "nnunetv2_topo_trainers.py").read_text()
    # the __init__ (which makes the folder a declared package) is not one of the modules nnU-Net imports
    assert [m.name for m in pkgutil.iter_modules([str(folder)])] == ["nnunetv2_topo_trainers"]
    init = compile((folder / "__init__.py").read_text(), "__init__.py", "exec")
    assert init.co_names == ("__doc__",)  # a docstring and nothing else


def test_all_variants_exported() -> None:
    assert set(trainers.__all__) == EXPECTED_NAMES
    for n in (5, 50, 100, 250, 500, 2000, 4000):
        cls = getattr(trainers, f"nnUNetTrainerTopoWarmup_{n}epochs")
        assert cls.merged_topo_defaults() == {"num_epochs": n, "warmup_epochs": min(10, max(1, n // 10))}
        assert cls.__qualname__ == cls.__name__ == f"nnUNetTrainerTopoWarmup_{n}epochs"
        assert issubclass(cls, trainers.nnUNetTrainerTopoWarmup)


def test_exports_are_written_out_and_complete() -> None:
    """Every trainer class defined under nnunetv2_topo/trainers is exported by a name written out (grep finds it) in
    the package's ``__init__`` and in the ``nnUNet_extTrainer`` file: a variant added without exporting it fails here,
    and so does a computed list (``globals().update``)."""
    import ast
    import importlib
    import inspect
    import pkgutil

    from nnunetv2_topo.trainers import variants

    defined = set()
    for info in pkgutil.walk_packages(trainers.__path__, "nnunetv2_topo.trainers."):
        module = importlib.import_module(info.name)
        defined |= {
            name
            for name, cls in vars(module).items()
            if inspect.isclass(cls) and issubclass(cls, nnUNetTrainer) and cls.__module__ == info.name
        }
    assert set(trainers.__all__) == defined
    assert {n for n in defined if n.endswith("epochs")} == {
        f"nnUNetTrainerTopoWarmup_{n}epochs" for n in variants.EPOCH_VARIANTS
    }
    for path in (Path(trainers.__file__), trainer_folder() / "nnunetv2_topo_trainers.py"):
        tree = ast.parse(path.read_text())
        imported = {a.asname or a.name for node in tree.body if isinstance(node, ast.ImportFrom) for a in node.names}
        (listed,) = [
            ast.literal_eval(node.value)
            for node in tree.body
            if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["__all__"]
        ]
        assert imported == set(listed) == defined, path
        assert "globals()" not in path.read_text(), path


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


def test_env_for_subprocesses_keeps_other_folders(tmp_path: Path) -> None:
    env = ext_trainer_env({"nnUNet_extTrainer": str(tmp_path), "X": "1"})
    assert env["X"] == "1"
    assert env["nnUNet_extTrainer"].split(os.pathsep) == [str(tmp_path), str(trainer_folder())]
    assert ext_trainer_env(env) == env  # already listed: unchanged


def test_trainer_path_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    exe = Path(sys.executable).parent / "nnunetv2_topo"
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    out = subprocess.run([exe, "trainer-path"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(trainer_folder())
    check = subprocess.run([exe, "trainer-path", "--check"], env=env, capture_output=True, text=True)
    assert check.returncode == 1
    env["nnUNet_extTrainer"] = out.stdout.strip()
    assert subprocess.run([exe, "trainer-path", "--check"], env=env, capture_output=True).returncode == 0


FIND_IN_WHEEL = """
import sys
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
cls = recursive_find_trainer_class_by_name("nnUNetTrainerTopoWarmup_SkelRecall")
print(cls.__module__, sys.modules[cls.__module__].__file__)
"""


@pytest.mark.slow
@pytest.mark.e2e
def test_a_built_wheel_carries_the_trainer_folder_as_a_package(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "nnunetv2_topo", source / "nnunetv2_topo", ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-v", "-w", "dist"],
        cwd=source, capture_output=True, text=True, check=True,
    )  # fmt: skip
    # setuptools warns about importable folders that are not declared packages (and will stop shipping them)
    assert "absent from the `packages` configuration" not in build.stdout + build.stderr
    (wheel,) = (source / "dist").glob("*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert "nnunetv2_topo/trainer_discovery/ext/nnunetv2_topo_trainers.py" in names
        assert "nnunetv2_topo/trainer_discovery/ext/__init__.py" in names
        zf.extractall(site)
    folder = site / "nnunetv2_topo" / "trainer_discovery" / "ext"
    env = {**os.environ, "PYTHONPATH": str(site), "nnUNet_extTrainer": str(folder)}
    out = subprocess.run(
        [sys.executable, "-c", FIND_IN_WHEEL], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    module, path = out.stdout.splitlines()[-1].split()  # nnU-Net prints its search first
    assert module == "nnunetv2_topo.trainers.variants"
    assert Path(path).is_relative_to(site)  # the wheel's own copy, not the source tree
