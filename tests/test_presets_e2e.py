"""End to end on CPU with the real nnU-Net commands: TopoWarmup on nnU-Net's residual-encoder (ResEnc) plans, and
TopoWarmup with ``nnUNet_compile=1`` (torch inductor compiles on the CPU) through EMA, a score round, ``--c`` and
prediction."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from nnunet_e2e import BIN, prepare, run

from nnunetv2_topo.io import read_volume
from nnunetv2_topo.reduced_plans import make_reduced_plans

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RESENC = "nnUNetResEncUNetMPlans"
SHORT = {"num_iterations_per_epoch": 2, "num_val_iterations_per_epoch": 1, "warmup_epochs": 1}

COMPILE_TRAINER = "nnUNetTrainerTopoWarmup_CPUCompile"
COMPILE_MODULE = f'''
import os

from nnunetv2_topo.trainers import nnUNetTrainerTopoWarmup


class {COMPILE_TRAINER}(nnUNetTrainerTopoWarmup):
    """nnU-Net never compiles on the CPU; this test trainer does when nnUNet_compile is true, so the compiled path
    (the default on CUDA) runs here."""

    def _do_i_compile(self):
        return os.environ.get("nnUNet_compile", "").lower() in ("true", "1", "t")
'''


@pytest.fixture(scope="module")
def data(kaggle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    data = prepare(tmp_path_factory.mktemp("presets_e2e"), kaggle_dir, planners=("nnUNetPlannerResEncM",))
    make_reduced_plans(data.pre, features=(4, 8, 16), patch=(32, 32, 32), batch=2)
    make_reduced_plans(data.pre, source=RESENC, features=(4, 8, 16), patch=(32, 32, 32), batch=2)
    return data


def _train(data: SimpleNamespace, plans: str, trainer: str, config: dict, *extra: str, env: dict | None = None):
    cfg_file = data.root / f"{trainer}_{plans}_{len(list(data.root.glob('*.yaml')))}.yaml"
    cfg_file.write_text(yaml.safe_dump(config))
    env = {**(env or data.env), "nnUNet_topo_config": str(cfg_file)}
    cmd = [BIN / "nnUNetv2_train", "1", "3d_fullres", "0", "-p", plans, "-tr", trainer, "-device", "cpu", *extra]
    return run(cmd, env, timeout=900)


def _predict(data: SimpleNamespace, plans: str, trainer: str, checkpoint: str, env: dict) -> Path:
    out = data.root / f"pred_{trainer}_{plans}_{checkpoint}"
    cmd = [BIN / "nnUNetv2_predict", "-i", data.raw / "imagesTs", "-o", out, "-d", "1", "-c", "3d_fullres"]
    cmd += ["-p", plans, "-tr", trainer, "-f", "0", "-chk", checkpoint, "--disable_tta", "-device", "cpu"]
    run(cmd + ["-npp", "1", "-nps", "1"], env, timeout=900)
    images = sorted((data.raw / "imagesTs").glob("*_0000.tif"))
    assert images
    for image in images:
        pred = read_volume(out / image.name.replace("_0000.tif", ".tif"))
        assert pred.shape == read_volume(image).shape and set(np.unique(pred)) <= {0, 1}
    return out


def _fold(data: SimpleNamespace, trainer: str, plans: str) -> Path:
    return data.results / f"{trainer}__{plans}__3d_fullres" / "fold_0"


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_topowarmup_trains_and_predicts_with_resenc_plans(data: SimpleNamespace) -> None:
    plans, trainer = f"{RESENC}_tiny", "nnUNetTrainerTopoWarmup"
    _train(data, plans, trainer, {**SHORT, "num_epochs": 1, "ema_decay": 0.9})
    ckpt = _load(_fold(data, trainer, plans) / "checkpoint_final.pth")
    assert ckpt["init_args"]["plans"]["plans_name"] == plans
    arch = ckpt["init_args"]["plans"]["configurations"]["3d_fullres"]["architecture"]
    assert arch["network_class_name"].endswith(".ResidualEncoderUNet")
    assert any(".blocks." in k for k in ckpt["network_weights"])  # residual blocks, not PlainConvUNet's convs
    assert np.isfinite(ckpt["logging"]["train_losses"][0]) and np.isfinite(ckpt["logging"]["val_losses"][0])
    _predict(data, plans, trainer, "checkpoint_final.pth", data.env)


def _no_compile_prefix(state: dict, where: str) -> None:
    bad = [k for k in state if "_orig_mod." in k]
    assert not bad, f"{where} has torch.compile's prefix: {bad[:3]}"


def test_compiled_training_with_ema_score_round_resume_and_predict(data: SimpleNamespace) -> None:
    ext = data.root / "compile_trainer"
    ext.mkdir(exist_ok=True)
    (ext / "topo_cpu_compile_trainer.py").write_text(COMPILE_MODULE)
    env = {**data.env, "nnUNet_compile": "1", "nnUNet_extTrainer": f"{ext}{os.pathsep}{data.env['nnUNet_extTrainer']}"}
    plans, trainer = "nnUNetPlans_tiny", COMPILE_TRAINER
    config = {**SHORT, "num_epochs": 2, "ema_decay": 0.9, "score_every_epochs": 1, "score_num_cases": 1}
    first = _train(data, plans, trainer, config, env=env)
    assert "Using torch.compile..." in first.stdout  # the trainer compiled (the predictor says it without dots)
    fold = _fold(data, trainer, plans)
    for name in ("checkpoint_final.pth", "checkpoint_best_score.pth"):
        ckpt = _load(fold / name)
        _no_compile_prefix(ckpt["network_weights"], f"{name} network_weights")
        if "raw_network_weights" in ckpt:
            _no_compile_prefix(ckpt["raw_network_weights"], f"{name} raw_network_weights")
        _no_compile_prefix(ckpt["topo_state"]["weight_ema"].get("averaged", {}), f"{name} weight_ema")  # older format
    final = _load(fold / "checkpoint_final.pth")
    assert final["topo_state"]["weight_ema"]["num_updates"] == 4
    assert [r["epoch"] for r in final["topo_state"]["score_rounds"]["records"]] == [0, 1]
    # the EMA differs from the raw weights (it was updated through the compiled module's parameters)
    diff = max((final["network_weights"][k].float() - v.float()).abs().max().item()
               for k, v in final["raw_network_weights"].items() if v.is_floating_point())  # fmt: skip
    assert diff > 0

    _train(data, plans, trainer, {**config, "num_epochs": 3}, "--c", env=env)
    resumed = _load(fold / "checkpoint_final.pth")
    assert resumed["current_epoch"] == 3 and resumed["topo_state"]["weight_ema"]["num_updates"] == 6
    _no_compile_prefix(resumed["network_weights"], "resumed network_weights")

    for checkpoint in ("checkpoint_final.pth", "checkpoint_best_score.pth"):
        _predict(data, plans, trainer, checkpoint, env)
