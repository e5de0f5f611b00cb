"""``nnunetv2_topo predict`` against the real ``nnUNetv2_predict``: for one model and the same folds with nnU-Net's
default mirroring, the segmentations are equal voxel for voxel (CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from predict_fixtures import nnunet_layout, with_zero_border

from nnunetv2_topo.cli.main import main
from nnunetv2_topo.inference.untrained import write_untrained_model_folder as write_model_folder
from nnunetv2_topo.io import read_volume
from nnunetv2_topo.trainer_discovery import trainer_folder

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _no_ext_trainer(monkeypatch: pytest.MonkeyPatch) -> None:
    """predict must find the TopoWarmup trainer with nnUNet_extTrainer unset (restored after the test)."""
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)


def test_single_model_equals_nnunetv2_predict(kaggle_dir: Path, tmp_path: Path) -> None:
    results = tmp_path / "nnUNet_results"
    trainer = "nnUNetTrainerTopoWarmup"
    model = write_model_folder(results / "Dataset999_Predict", trainer=trainer, folds=(0, 1), patch=(32, 32, 32))
    kaggle = with_zero_border(kaggle_dir / "test_images", tmp_path / "test_images")
    images_ts = nnunet_layout(kaggle, tmp_path / "imagesTs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet")}
    env.update(nnUNet_results=str(results), nnUNet_raw=str(tmp_path), nnUNet_preprocessed=str(tmp_path),
               nnUNet_extTrainer=str(trainer_folder()), nnUNet_compile="false", OMP_WAIT_POLICY="PASSIVE")  # fmt: skip
    cmd = [BIN / "nnUNetv2_predict", "-i", images_ts, "-o", tmp_path / "reference", "-d", "999", "-c",
           "3d_fullres", "-p", "nnUNetPlans_tiny", "-tr", trainer, "-f", "0", "1", "-device", "cpu",
           "-npp", "1", "-nps", "1"]  # fmt: skip
    proc = subprocess.run(list(map(str, cmd)), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

    for name, folder in (("kaggle", kaggle), ("nnunet", images_ts)):
        out = tmp_path / name
        assert main(["predict", "--input", str(folder), "--output", str(out), "--model", str(model),
                     "--folds", "0", "1", "--device", "cpu", "--quiet"]) == 0  # fmt: skip
        for image in sorted(kaggle.glob("*.tif")):
            reference = read_volume(tmp_path / "reference" / image.name)
            ours = read_volume(out / image.name)
            assert ours.shape == reference.shape == read_volume(image).shape
            assert 0.05 < reference.mean() < 0.95
            np.testing.assert_array_equal(ours, reference)
