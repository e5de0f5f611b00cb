"""The environment for running nnU-Net's console scripts (``nnUNetv2_plan_and_preprocess``, ``nnUNetv2_train``,
``nnUNetv2_predict``) as subprocesses on one work folder: the demo and the benchmarks build it here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from nnunetv2_topo.trainer_discovery import ext_trainer_env

__all__ = ["NNUNET_FOLDERS", "nnunet_env"]

NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
"""nnU-Net's three folder variables; :func:`nnunet_env` points each at ``work / name``."""


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
        env["nnUNet_topo_config"] = str(topo_config)
    env.update(
        nnUNet_compile="false",
        nnUNet_n_proc_DA=str(data_workers),
        nnUNet_def_n_proc=str(processes),
        OMP_WAIT_POLICY="PASSIVE",
        PYTHONUNBUFFERED="1",
    )
    return ext_trainer_env(env)
