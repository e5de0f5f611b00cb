"""nnU-Net's environment variables: the folder its ``nnUNet_extTrainer`` search must list to find the TopoWarmup
trainers (:func:`trainer_folder`, :func:`ext_trainer_env`), and the whole environment for running nnU-Net's console
scripts (``nnUNetv2_plan_and_preprocess``, ``nnUNetv2_train``, ``nnUNetv2_predict``) as subprocesses on one work
folder (:func:`nnunet_env`: the demo and the benchmarks build it here).

nnU-Net (>= 2.8.0) imports every module of each folder listed in ``nnUNet_extTrainer`` as a top-level module and
looks the trainer name up with ``getattr``. :func:`trainer_folder` is ``nnunetv2_topo/trainer_discovery/ext``: one
thin module that re-exports the classes of :mod:`nnunetv2_topo.trainers`, so the class nnU-Net finds is the
package's own object (pickling, spawn-based multiprocessing and ``isinstance`` keep working). Nothing in the package
imports that folder; this module only names it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "CHECKPOINTS",
    "EXT_TRAINER_ENV_VAR",
    "FINAL_CHECKPOINT",
    "NNUNET_FOLDERS",
    "TOPO_CONFIG_ENV_VAR",
    "ext_trainer_configured",
    "ext_trainer_env",
    "nnunet_env",
    "trainer_folder",
]

FINAL_CHECKPOINT = "checkpoint_final.pth"
"""The checkpoint nnU-Net writes when training ends (``nnUNetv2_predict -chk`` default)."""

CHECKPOINTS = (FINAL_CHECKPOINT, "checkpoint_latest.pth", "checkpoint_best.pth")
"""nnU-Net's checkpoint files of a fold folder, in the order to look for the newest complete state: the final one,
the latest (written during training), the best by nnU-Net's pseudo-Dice."""

EXT_TRAINER_ENV_VAR = "nnUNet_extTrainer"
"""nnU-Net's variable listing extra folders of trainer classes (``os.pathsep``-separated)."""

TOPO_CONFIG_ENV_VAR = "nnUNet_topo_config"
"""The variable naming a trainer configuration file (``topo_config.json``) for the TopoWarmup trainers."""

NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
"""nnU-Net's three folder variables; :func:`nnunet_env` points each at ``work / name``."""


def trainer_folder() -> Path:
    """The folder to list in ``nnUNet_extTrainer`` (absolute; a dedicated folder without ``__init__.py`` modules
    of its own besides the re-export)."""
    return (Path(__file__).resolve().parent / "trainer_discovery" / "ext").resolve()


def _listed(value: str | None) -> list[str]:
    return [p for p in (value or "").split(os.pathsep) if p.strip()]


def ext_trainer_configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``nnUNet_extTrainer`` (in ``environ``, default ``os.environ``) lists :func:`trainer_folder`."""
    env = os.environ if environ is None else environ
    target = trainer_folder()
    for entry in _listed(env.get(EXT_TRAINER_ENV_VAR)):
        try:
            if Path(entry).expanduser().resolve() == target:
                return True
        except OSError:
            continue
    return False


def ext_trainer_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default ``os.environ``) whose ``nnUNet_extTrainer`` lists :func:`trainer_folder`."""
    env = dict(os.environ if environ is None else environ)
    if not ext_trainer_configured(env):
        env[EXT_TRAINER_ENV_VAR] = os.pathsep.join([*_listed(env.get(EXT_TRAINER_ENV_VAR)), str(trainer_folder())])
    return env


def nnunet_env(
    work: Path,
    data_workers: int,
    processes: int,
    topo_config: Path | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) without any ``nnUNet_*`` variable of the caller, then:

    - ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` = ``work/<name>`` (not created here);
    - ``nnUNet_extTrainer`` listing the TopoWarmup trainers' folder;
    - ``nnUNet_topo_config`` = ``topo_config`` when given;
    - ``nnUNet_compile=false``, ``nnUNet_n_proc_DA`` = ``data_workers`` (data-augmentation workers),
      ``nnUNet_def_n_proc`` = ``processes`` (pre-processing and export workers);
    - ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP spin-waiting makes CPU training many times slower on a busy machine) and
      ``PYTHONUNBUFFERED=1`` (the scripts' output streams as it is written).
    """
    if data_workers < 0 or processes < 1:
        raise ValueError(f"need data_workers >= 0 and processes >= 1, got {data_workers} and {processes}")
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not k.startswith("nnUNet")}
    env.update({name: str(Path(work) / name) for name in NNUNET_FOLDERS})
    if topo_config is not None:
        env[TOPO_CONFIG_ENV_VAR] = str(topo_config)
    env.update(
        nnUNet_compile="false",
        nnUNet_n_proc_DA=str(data_workers),
        nnUNet_def_n_proc=str(processes),
        OMP_WAIT_POLICY="PASSIVE",
        PYTHONUNBUFFERED="1",
    )
    return ext_trainer_env(env)
