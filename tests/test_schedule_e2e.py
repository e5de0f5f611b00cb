"""``nnunetv2_topo schedule`` against a real ``nnUNetv2_train`` run: the replayed LR of every epoch is the LR the
trainer used, and the early stop ends the run as a finished one (``checkpoint_final.pth``, final validation)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from test_trainer_e2e import SHORT, _final, _fold, _train, nnunet_data  # noqa: F401 (the session fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BIN = Path(sys.executable).parent

EARLY = {
    **SHORT,
    "optimizer": "sgd",  # the validation losses the cuts below follow are SGD's on this data
    "num_epochs": 8,
    "warmup_epochs": 1,
    "seed": 0,
    "plateau_metric": "val_loss",
    "plateau_patience": 0,
    "plateau_cooldown": 0,
    "plateau_threshold": 1.0,  # only the first plateau epoch counts as an improvement
    "plateau_threshold_mode": "abs",
    "plateau_min_lr": 0.0025,
    "plateau_final_anneal": 0.25,
    "plateau_early_stop": True,
}


def test_replay_matches_the_trainer_and_early_stop_finishes_the_run(nnunet_data: SimpleNamespace) -> None:  # noqa: F811
    trainer = "nnUNetTrainerTopoWarmup"
    _train(nnunet_data, trainer, EARLY)
    fold = _fold(nnunet_data, trainer)
    ckpt = _final(fold)
    # epoch 1 sets the best, cuts after epochs 2 and 3 (0.0025 = min_lr), epoch 4 at the floor without improvement
    assert ckpt["current_epoch"] == 5
    used = [float(v) for v in ckpt["logging"]["lrs"]]
    assert used == pytest.approx([0.01, 0.01, 0.01, 0.005, 0.0025])
    logs = sorted(fold.glob("training_log_*.txt"))
    text = "".join(p.read_text() for p in logs)
    assert "Early stop after epoch 4: the LR has sat at plateau_min_lr 0.0025" in text
    assert (fold / "validation" / "summary.json").is_file()  # the final validation ran

    cfg = nnunet_data.root / "early.yaml"
    cfg.write_text(yaml.safe_dump(EARLY))
    out = nnunet_data.root / "replay.json"
    cmd = [
        BIN / "nnunetv2_topo",
        "schedule",
        *(a for p in logs for a in ("--log", p)),
        "--topo-config",
        cfg,
        "--json",
        out,
    ]
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=nnunet_data.env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    replayed = json.loads(out.read_text())
    assert len(replayed["lr"]) == 8 and replayed["lr"][:5] == pytest.approx(used, rel=1e-12)
    assert replayed["cuts"] == [2, 3] and replayed["min_lr_epoch"] == 4
    assert replayed["stop_epoch"] == 4 and "the trainer stops after epoch 4" in proc.stdout
    # without --config: the configuration the run's log printed
    cmd = [BIN / "nnunetv2_topo", "schedule", *(a for p in logs for a in ("--log", p)), "--json", out, "--overwrite"]
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=nnunet_data.env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(out.read_text())["lr"] == replayed["lr"]
    assert "nnUNetTrainerTopoWarmup (the configuration its log printed)" in proc.stdout
