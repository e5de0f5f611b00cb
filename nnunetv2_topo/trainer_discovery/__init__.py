"""Where nnU-Net's ``nnUNet_extTrainer`` search finds the TopoWarmup trainers.

nnU-Net (>= 2.8.0) imports every module of each folder listed in ``nnUNet_extTrainer`` as a top-level module and
looks the trainer name up with ``getattr``. The folder returned by :func:`trainer_folder` holds one thin module that
re-exports the classes of :mod:`nnunetv2_topo.trainers`, so the class nnU-Net finds is the package's own object
(pickling, spawn-based multiprocessing and ``isinstance`` keep working).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["ENV_VAR", "ext_trainer_configured", "ext_trainer_env", "trainer_folder"]

ENV_VAR = "nnUNet_extTrainer"


def trainer_folder() -> Path:
    """The folder to list in ``nnUNet_extTrainer`` (absolute; a dedicated folder without ``__init__.py``)."""
    return (Path(__file__).resolve().parent / "ext").resolve()


def _listed(value: str | None) -> list[str]:
    return [p for p in (value or "").split(os.pathsep) if p.strip()]


def ext_trainer_configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``nnUNet_extTrainer`` (in ``environ``, default ``os.environ``) lists :func:`trainer_folder`."""
    env = os.environ if environ is None else environ
    target = trainer_folder()
    for entry in _listed(env.get(ENV_VAR)):
        try:
            if Path(entry).expanduser().resolve() == target:
                return True
        except OSError:
            continue
    return False


def ext_trainer_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default ``os.environ``) whose ``nnUNet_extTrainer`` lists :func:`trainer_folder`.

    For launching ``nnUNetv2_train`` / ``nnUNetv2_predict`` as subprocesses
    (:func:`nnunetv2_topo.nnunet_env.nnunet_env`).
    """
    env = dict(os.environ if environ is None else environ)
    if not ext_trainer_configured(env):
        env[ENV_VAR] = os.pathsep.join([*_listed(env.get(ENV_VAR)), str(trainer_folder())])
    return env
