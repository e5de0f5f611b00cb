"""Helpers for end-to-end tests with the real nnU-Net commands (not a test module): an nnU-Net environment with the
tiny synthetic dataset converted, planned and preprocessed, and a command runner that fails with the output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from nnunetv2_topo.trainer_discovery import trainer_folder

BIN = Path(sys.executable).parent
DATASET = "Dataset001_Vesuvius"


def run(cmd: list, env: dict[str, str], timeout: int = 600, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=timeout)
    if ok and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc


def prepare(root: Path, kaggle_dir: Path, planners: tuple[str, ...] = ()) -> SimpleNamespace:
    """Convert ``kaggle_dir`` into ``root``'s nnU-Net folders, plan and preprocess ``3d_fullres``, plan with each
    of ``planners`` too (``nnUNetPlannerResEncM``: the ResEnc presets reuse the default preprocessed data); fold 0
    validates on the first case. ``env`` runs CPU-only, single-process augmentation, compile off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet")}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (root / name).mkdir()
        env[name] = str(root / name)
    env.update(
        nnUNet_extTrainer=str(trainer_folder()), nnUNet_compile="false", nnUNet_n_proc_DA="0", nnUNet_def_n_proc="1",
        OMP_WAIT_POLICY="PASSIVE",
    )  # fmt: skip
    run([BIN / "nnUNetv2_convert_vesuvius", "--input", kaggle_dir, "--dataset-id", "1", "--quiet"], env)
    # nnUNet_n_proc_DA=0 (single-threaded augmentation for training) breaks the planner's set_num_threads
    plan_env = {k: v for k, v in env.items() if k != "nnUNet_n_proc_DA"}
    run([BIN / "nnUNetv2_plan_and_preprocess", "-d", "1", "-c", "3d_fullres", "-np", "1"], plan_env)
    for planner in planners:
        run([BIN / "nnUNetv2_plan_experiment", "-d", "1", "-pl", planner], plan_env)
    pre = root / "nnUNet_preprocessed" / DATASET
    cases = sorted(p.name[: -len(".tif")] for p in (pre / "gt_segmentations").glob("*.tif"))
    (pre / "splits_final.json").write_text(json.dumps([{"train": cases[1:], "val": cases[:1]}]))
    return SimpleNamespace(
        root=root, env=env, pre=pre, results=root / "nnUNet_results" / DATASET, cases=cases,
        raw=root / "nnUNet_raw" / DATASET,
    )  # fmt: skip
